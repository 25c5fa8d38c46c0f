//! Security headers on every response and CORS from configuration.

use infra_db::or_skip;
use infra_db::testing::Backend;
use serde_json::json;

use crate::helpers::TestApp;

fn assert_hardened(response: &reqwest::Response, what: &str) {
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let token = app.user_token("alice").await;
    let ok = app.get("/api/v1/health").await;
    assert_hardened(&ok, "200");
    assert!(
        !ok.headers().contains_key("strict-transport-security"),
        "off by default"
    );
    assert_hardened(&app.get("/api/v1/nowhere").await, "404 envelope");
    assert_hardened(&app.get("/api/v1/chats").await, "401");
    let chat: serde_json::Value = app
        .post_json_as("/api/v1/chats", &token, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let stream = app
        .post_json_as(
            &format!(
                "/api/v1/chats/{}/messages/stream",
                chat["uuid"].as_str().unwrap()
            ),
            &token,
            &json!({"content": "hi"}),
        )
        .await;
    assert_hardened(&stream, "SSE");
    let malformed = app
        .client
        .post(app.url("/api/v1/chats"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_hardened(&malformed, "400");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_sent_when_configured() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.server.hsts_max_age_secs = 31_536_000;
    }));
    let r = app.get("/api/v1/health").await;
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    app.finish().await;
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/chats"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_exactly_the_configured_origins() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.server.cors_allowed_origins = vec!["https://app.example.com".into()];
        settings.server.cors_allow_credentials = true;
    }));

    let allowed = preflight(&app, "https://app.example.com").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed_headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let get = app
        .client
        .get(app.url("/api/v1/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");

    let evil = preflight(&app, "https://evil.example.net").await;
    assert!(!evil.headers().contains_key("access-control-allow-origin"));
    let evil_get = app
        .client
        .get(app.url("/api/v1/health"))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .unwrap();
    assert!(
        !evil_get
            .headers()
            .contains_key("access-control-allow-origin")
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_origins_no_cross_origin_access() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let r = preflight(&app, "https://app.example.com").await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    app.finish().await;
}
