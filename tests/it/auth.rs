//! Accounts and authentication over HTTP, on every backend.

use infra_db::{on_every_backend, or_skip};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use infra_db::testing::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::probe::{delete, get, post};
use crate::helpers::{PASSWORD, TestApp, assert_envelope, assert_malformed_cases, json_of};

const SECRET: &str = "arbor-example-secret-change-me-0123456789";

fn forged(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn the_full_account_flow_works(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    // Register, and a duplicate in another case.
    let uuid = app.register("Alice").await;
    let dup = app
        .post_json(
            "/api/v1/users",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_envelope(dup, 409, "conflict").await;

    // Login with JSON and with the OAuth2 password form.
    let tokens = app.login("alice").await;
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 1800);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let form = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=ALICE&password=correct+horse+battery&grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);

    // Wrong password and unknown user: the same 401.
    let wrong = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "alice", "password": "wrong password"}),
        )
        .await;
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let wrong = assert_envelope(wrong, 401, "unauthenticated").await;
    let unknown = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    let unknown = assert_envelope(unknown, 401, "unauthenticated").await;
    assert_eq!(wrong["user_message"], unknown["user_message"]);

    // Me.
    let me = json_of(app.get_as("/api/v1/auth/me", &access)).await;
    assert_eq!(me["uuid"], uuid.as_str());
    assert_eq!(me["username"], "Alice");

    // Refresh rotates; presenting the spent token revokes the whole family.
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as("/api/v1/auth/me", new_access).await.status(),
        200
    );
    let reuse = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": first}))
        .await;
    assert_envelope(reuse, 401, "unauthenticated").await;
    let after_theft = app
        .post_json("/api/v1/auth/refresh", &json!({"refresh_token": second}))
        .await;
    assert_envelope(after_theft, 401, "unauthenticated").await;

    // Logout revokes the presented refresh token.
    let fresh = app.login("alice").await;
    let refresh_token = fresh["refresh_token"].as_str().unwrap();
    let logout = app
        .post_json_as(
            "/api/v1/auth/logout",
            &access,
            &json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_eq!(logout.status(), 204);
    let revoked = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_envelope(revoked, 401, "unauthenticated").await;
    // …or all of them.
    let a = app.login("alice").await;
    let b = app.login("alice").await;
    let all = app
        .post_json_as("/api/v1/auth/logout", &access, &json!({"all": true}))
        .await;
    assert_eq!(all.status(), 204);
    for t in [&a, &b] {
        let r = app
            .post_json(
                "/api/v1/auth/refresh",
                &json!({"refresh_token": t["refresh_token"]}),
            )
            .await;
        assert_eq!(r.status(), 401);
    }

    // API keys: create, use, list, revoke.
    let created = app
        .post_json_as(
            "/api/v1/auth/api-keys",
            &access,
            &json!({"name": "backup script"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("arb_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    let me = json_of(app.get_as("/api/v1/auth/me", &key)).await;
    assert_eq!(me["uuid"], uuid.as_str());
    let listed = json_of(app.get_as("/api/v1/auth/api-keys", &access)).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "backup script");
    assert!(listed[0].get("key").is_none(), "the key is shown once only");
    assert!(listed[0]["last_used_at"].is_string());
    // A key with the right prefix but a wrong secret is refused.
    let mut tampered = key.clone();
    tampered.pop();
    tampered.push(if key.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.get_as("/api/v1/auth/me", &tampered).await.status(), 401);
    // Another user cannot revoke it.
    let bob = app.user_token("bob").await;
    let id = created["id"].as_str().unwrap();
    let foreign = app
        .delete_as(&format!("/api/v1/auth/api-keys/{id}"), &bob)
        .await;
    assert_envelope(foreign, 404, "not_found").await;
    let revoke = app
        .delete_as(&format!("/api/v1/auth/api-keys/{id}"), &access)
        .await;
    assert_eq!(revoke.status(), 204);
    assert_envelope(
        app.get_as("/api/v1/auth/me", &key).await,
        401,
        "unauthenticated",
    )
    .await;

    // Tampered, expired and foreign tokens.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (header, payload, signature) = {
        let mut parts = access.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let mut bad_sig = signature.to_owned();
    bad_sig.replace_range(
        0..2,
        if bad_sig.starts_with("AA") {
            "BB"
        } else {
            "AA"
        },
    );
    let alg_none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let expired = forged(
        &json!({"sub": uuid, "iat": now - 7200, "exp": now - 3600, "jti": "x"}),
        SECRET,
    );
    let wrong_secret = forged(
        &json!({"sub": uuid, "iat": now, "exp": now + 600, "jti": "x"}),
        "some-other-secret-some-other-secret!!",
    );
    let unknown_user = forged(
        &json!({"sub": "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f", "iat": now, "exp": now + 600, "jti": "x"}),
        SECRET,
    );
    for token in [
        format!("{header}.{payload}.{bad_sig}"),
        alg_none,
        expired,
        wrong_secret,
        unknown_user,
        "garbage".to_owned(),
    ] {
        let response = app.get_as("/api/v1/auth/me", &token).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_envelope(response, 401, "unauthenticated").await;
    }
    let no_scheme = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .header("authorization", access.clone())
        .send()
        .await
        .unwrap();
    assert_envelope(no_scheme, 401, "unauthenticated").await;
    app.finish().await;
}

/// `{"username": …, "password": …}`.
fn account(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

const TEXT: &str = "text/plain";
const FORM: &str = "application/x-www-form-urlencoded";
const USERS: &str = "/api/v1/users";
const LOGIN: &str = "/api/v1/auth/login";
const REFRESH: &str = "/api/v1/auth/refresh";
const LOGOUT: &str = "/api/v1/auth/logout";
const KEYS: &str = "/api/v1/auth/api-keys";

async fn malformed_input_gets_the_documented_status_and_never_a_500(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("carol").await;
    let huge = "x".repeat(300 * 1024);
    let long_username = "u".repeat(5_000);
    let client_credentials = format!(
        "username=carol&password={}&grant_type=client_credentials",
        "x".repeat(9)
    );
    let anonymous = [
        (post(USERS, "{bad json"), 400),
        (post(USERS, r#"{"username": 5, "password": "x"}"#), 422),
        (post(USERS, r#"{"username": "dave"}"#), 422),
        (post(USERS, account("ab", "long enough")), 422),
        (post(USERS, account("bad name!", "long enough")), 422),
        (post(USERS, account("dave", "short")), 422),
        (post(USERS, account("dave", &"p".repeat(129))), 422),
        (post(USERS, account(&long_username, "long enough")), 422),
        (post(USERS, "[1, 2, 3]"), 422),
        (post(USERS, account("dave", "long enough")).typed(TEXT), 415),
        (post(USERS, account(&huge, "x")), 413),
        (post(LOGIN, "{bad"), 400),
        (post(LOGIN, r#"{"username": []}"#), 422),
        (post(LOGIN, "username=carol").typed(FORM), 422),
        (post(LOGIN, client_credentials).typed(FORM), 422),
        (post(LOGIN, "hello").typed(TEXT), 415),
        (post(LOGIN, &huge), 413),
        (post(LOGIN, account(&long_username, "x")), 401),
        (post(REFRESH, r#"{"refresh_token": 12}"#), 422),
        (post(REFRESH, r#"{"refresh_token": ""}"#), 401),
        (
            post(REFRESH, json!({"refresh_token": "t".repeat(10_000)})),
            401,
        ),
        (post(REFRESH, "null"), 422),
        (post(LOGOUT, "{}"), 401),
        (get("/api/v1/auth/me"), 401),
        (get(KEYS), 401),
        (get("/api/v1/nothing-here"), 404),
    ];
    assert_malformed_cases(&app, None, anonymous).await;
    let as_carol = [
        (post(LOGOUT, "{}"), 422),
        (post(LOGOUT, r#"{"all": "yes"}"#), 422),
        (post(KEYS, r#"{"name": ""}"#), 422),
        (post(KEYS, json!({"name": "n".repeat(101)})), 422),
        (post(KEYS, r#"{"name": "ok", "extra": 1}"#), 422),
        (post(KEYS, r#"{"nom": "x"}"#), 422),
        (delete(format!("{KEYS}/not-a-uuid")), 422),
        (
            delete(format!("{KEYS}/01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f")),
            404,
        ),
    ];
    assert_malformed_cases(&app, Some(&token), as_carol).await;
    app.finish().await;
}

/// The `Set-Cookie` of `response` for the refresh cookie, and its value.
fn refresh_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("arbor_refresh="))
        .expect("a refresh cookie")
        .to_owned();
    let value = header["arbor_refresh=".len()..]
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    (header, value)
}

/// The browser client's way: the refresh token only ever travels as an HttpOnly cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cookie_mode_the_refresh_token_is_an_http_only_cookie_that_rotates_and_logs_out() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    app.register("carol").await;
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("x-arbor-refresh-cookie", "1")
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.headers()["cache-control"], "no-store");
    let (header, first) = refresh_cookie(&login);
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/v1/auth",
        "Max-Age=",
    ] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    let body: Value = login.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(first.starts_with("art_"));

    // Refresh with the cookie (empty body): a new access token and a rotated cookie.
    let refresh = |cookie: String| {
        app.client
            .post(app.url("/api/v1/auth/refresh"))
            .header("x-arbor-refresh-cookie", "1")
            .header("cookie", format!("arbor_refresh={cookie}"))
            .json(&json!({}))
            .send()
    };
    let rotated = refresh(first.clone()).await.unwrap();
    assert_eq!(rotated.status(), 200);
    let (_, second) = refresh_cookie(&rotated);
    assert_ne!(first, second);
    let access = rotated.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get_as("/api/v1/auth/me", &access).await.status(), 200);

    // Without the header the cookie is not read (a cross-site form cannot use it).
    let plain = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", format!("arbor_refresh={second}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_envelope(plain, 401, "unauthenticated").await;

    // Logout revokes the cookie's token and removes the cookie.
    let logout = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access)
        .header("x-arbor-refresh-cookie", "1")
        .header("cookie", format!("arbor_refresh={second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let (header, value) = refresh_cookie(&logout);
    assert!(value.is_empty() && header.contains("Max-Age=0"), "{header}");
    let after = refresh(second).await.unwrap();
    assert_envelope(after, 401, "unauthenticated").await;
    app.finish().await;
}

on_every_backend!(
    the_full_account_flow_works,
    malformed_input_gets_the_documented_status_and_never_a_500
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_from_the_client_is_echoed_and_a_bad_one_replaced() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let r = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .header("x-request-id", "client-trace-1")
        .header("accept-language", "ja")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-trace-1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "client-trace-1");
    assert_eq!(
        body["user_message"],
        "認証が必要です。再度ログインしてください。"
    );
    let r = app
        .client
        .get(app.url("/api/v1/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_register_limits_answer_429_with_a_truthful_retry_after_and_recover() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.auth.login_per_window = 2;
        settings.auth.register_per_window = 2;
        settings.auth.rate_limit_window_secs = 2;
    }));
    app.register("erin").await;
    app.register("frank").await;
    let third = app
        .post_json(
            "/api/v1/users",
            &json!({"username": "gina", "password": PASSWORD}),
        )
        .await;
    let retry: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_envelope(third, 429, "rate_limited").await;

    for _ in 0..2 {
        let r = app
            .post_json(
                "/api/v1/auth/login",
                &json!({"username": "erin", "password": "wrong password"}),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let limited = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "erin", "password": PASSWORD}),
        )
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Another username from the same address is not affected.
    assert_eq!(app.login("frank").await["token_type"], "bearer");

    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.login("erin").await["token_type"], "bearer");
    app.register("gina").await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_do_not_stall_other_requests() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        // Production hashing costs and the default hashing concurrency.
        settings.auth.argon2_memory_kib = 19_456;
        settings.auth.argon2_iterations = 2;
        settings.auth.hash_concurrency = 0;
    }));
    let app = Arc::new(app);
    app.register("hana").await;

    let logins: Vec<_> = (0..50)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.login("hana").await })
        })
        .collect();
    let mut latencies = Vec::new();
    while latencies.len() < 200 && logins.iter().any(|h| !h.is_finished()) {
        let start = Instant::now();
        assert_eq!(app.get("/api/v1/health").await.status(), 200);
        latencies.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for h in logins {
        assert_eq!(h.await.unwrap()["token_type"], "bearer");
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "health during 50 logins: {} samples, p99 {p99:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 10, "logins finished too fast to measure");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    Arc::try_unwrap(app).ok().unwrap().finish().await;
}

/// Everything logged in this process, at debug level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&sink)))
            .try_init();
        logs
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs() {
    let logs = captured_logs();
    let provider_key = "sk-or-v1-test-provider-key-0123456789";
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.llm.api_key = provider_key.to_owned().into();
    }));
    app.register("ivan").await;
    let tokens = app.login("ivan").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated =
        json_of(app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": refresh}))).await;
    let key =
        json_of(app.post_json_as("/api/v1/auth/api-keys", &access, &json!({"name": "k"}))).await;
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(app.get_as("/api/v1/auth/me", &key).await.status(), 200);
    // A provider call (the catalogue) uses the provider key.
    assert_eq!(app.get_as("/api/v1/models", &access).await.status(), 200);
    let _ = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "ivan", "password": "wrong password 123"}),
        )
        .await;
    let hash: String = {
        let db = app.db.raw().await;
        sea_orm_free::password_hash(&db).await
    };
    app.finish().await;

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("/api/v1/auth/login"),
        "the capture works: {}",
        text.len()
    );
    for secret in [
        PASSWORD,
        "wrong password 123",
        access.as_str(),
        refresh.as_str(),
        rotated["refresh_token"].as_str().unwrap(),
        rotated["access_token"].as_str().unwrap(),
        key.as_str(),
        hash.as_str(),
        provider_key,
    ] {
        assert!(!text.contains(secret), "a secret was logged");
    }
}

/// Reads the stored password hash without naming sea-orm types in the test body.
mod sea_orm_free {
    pub async fn password_hash(db: &sea_orm::DatabaseConnection) -> String {
        use sea_orm::{ConnectionTrait, Statement};
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT password_hash FROM users WHERE username_canonical = 'ivan'",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<String>("", "password_hash").unwrap()
    }
}
