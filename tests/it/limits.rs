//! Route rate limits: per user by route family, per client IP for anonymous requests, with a
//! truthful `Retry-After`; `X-Forwarded-For` believed only from a trusted proxy.

use infra_db::or_skip;
use infra_db::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, json_of};

async fn app_with(
    configure: impl FnOnce(&mut arbor::config::RateLimitSettings),
) -> Option<TestApp> {
    TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        configure(&mut settings.rate_limits)
    })
    .await
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_family_has_its_own_budget_per_user() {
    let Some(app) = app_with(|r| {
        r.send_per_minute = 3;
        r.create_chat_per_minute = 2;
    })
    .await
    else {
        return;
    };
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let chat = json_of(app.post_json_as("/api/v1/chats", &alice, &json!({}))).await;
    let path = format!("/api/v1/chats/{}/messages", chat["uuid"].as_str().unwrap());
    for _ in 0..3 {
        let r = app
            .post_json_as(&path, &alice, &json!({"content": "hi"}))
            .await;
        assert_eq!(r.status(), 201);
    }
    let over = app
        .post_json_as(&path, &alice, &json!({"content": "hi"}))
        .await;
    // 3 per minute: the next one is allowed in about 20 s.
    let wait = retry_after(&over);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    assert_envelope(over, 429, "rate_limited").await;
    let streamed = app
        .post_json_as(&format!("{path}/stream"), &alice, &json!({"content": "hi"}))
        .await;
    assert_eq!(streamed.status(), 429, "streamed sends share the budget");
    // Other families and other users are unaffected.
    assert_eq!(app.get_as("/api/v1/chats", &alice).await.status(), 200);
    assert_eq!(
        app.post_json_as("/api/v1/chats", &alice, &json!({}))
            .await
            .status(),
        201
    );
    let third = app.post_json_as("/api/v1/chats", &alice, &json!({})).await;
    assert_eq!(third.status(), 429, "create_chat: 2 per minute");
    assert_eq!(
        app.post_json_as("/api/v1/chats", &bob, &json!({}))
            .await
            .status(),
        201
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_limited_per_client_ip_and_probes_never() {
    let app = or_skip!(app_with(|r| r.anonymous_per_minute = 3));
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/models").await.status(), 401);
    }
    let over = app.get("/api/v1/models").await;
    assert!(retry_after(&over) >= 1);
    assert_envelope(over, 429, "rate_limited").await;
    let bogus = app.get_as("/api/v1/chats", "not-a-token").await;
    assert_eq!(
        bogus.status(),
        429,
        "failed credentials spend the same budget"
    );
    for _ in 0..10 {
        assert_eq!(app.get("/api/v1/health").await.status(), 200);
    }
    app.finish().await;
}

/// Login, registration and refresh never read `Authorization`: sending one anyway must not
/// escape the per-IP budget (a new name per login would otherwise make every guess free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_header_does_not_exempt_the_credential_routes_from_the_ip_limit() {
    let app = or_skip!(app_with(|r| r.anonymous_per_minute = 3));
    let post_with_header = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth("anything")
            .json(&body)
            .send()
    };
    for i in 0..3 {
        let login = json!({"username": format!("guess{i}"), "password": "wrong password"});
        let answer = post_with_header("/api/v1/auth/login", login).await.unwrap();
        assert_eq!(answer.status(), 401);
    }
    let refresh = json!({"refresh_token": "a-stolen-looking-token"});
    for (path, body) in [
        (
            "/api/v1/auth/login",
            json!({"username": "guess9", "password": "x"}),
        ),
        ("/api/v1/auth/refresh", refresh),
        (
            "/api/v1/users",
            json!({"username": "newcomer", "password": "long enough"}),
        ),
    ] {
        let over = post_with_header(path, body).await.unwrap();
        assert_envelope(over, 429, "rate_limited").await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let get_from = |app: &TestApp, client: &str| {
        app.client
            .get(app.url("/api/v1/models"))
            .header("x-forwarded-for", client)
            .send()
    };
    let Some(app) = app_with(|r| {
        r.anonymous_per_minute = 2;
        r.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    for _ in 0..2 {
        assert_eq!(get_from(&app, "203.0.113.1").await.unwrap().status(), 401);
    }
    assert_eq!(get_from(&app, "203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        get_from(&app, "203.0.113.2").await.unwrap().status(),
        401,
        "another client behind the same proxy has its own budget"
    );
    app.finish().await;

    let app = or_skip!(app_with(|r| r.anonymous_per_minute = 2));
    for _ in 0..2 {
        assert_eq!(get_from(&app, "203.0.113.1").await.unwrap().status(), 401);
    }
    assert_eq!(
        get_from(&app, "203.0.113.99").await.unwrap().status(),
        429,
        "without a trusted proxy the header is ignored: same peer, same budget"
    );
    app.finish().await;
}

/// `[limits]`: an operator's lower text limits answer 422 naming the field, as the built-in
/// ones do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_text_limits_are_enforced() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.limits.message_chars = 10;
        settings.limits.title_chars = 5;
    }));
    let token = app.user_token("terse").await;
    let long_title = app
        .post_json_as("/api/v1/chats", &token, &json!({"title": "too long"}))
        .await;
    let body = assert_envelope(long_title, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "title");
    let chat = app.new_chat(&token).await;
    let path = format!("/api/v1/chats/{chat}/messages");
    let refused = app
        .post_json_as(&path, &token, &json!({"content": "eleven char"}))
        .await;
    let body = assert_envelope(refused, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "content");
    let fits = app
        .post_json_as(&path, &token, &json!({"content": "ten chars!"}))
        .await;
    assert_eq!(fits.status(), 201);
    app.finish().await;
}
