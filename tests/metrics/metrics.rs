//! `GET /metrics`: the listed series exist and move when traffic flows; the optional token.

use infra_db::or_skip;
use infra_db::testing::{Backend, TestDatabase};
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{TestApp, json_of, test_settings};

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_exist_and_move_with_traffic() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let mut settings = test_settings(db.url());
    // One provider slot, so the second of two concurrent answers waits for a permit.
    settings.llm.max_concurrent_requests = 1;
    let app = TestApp::spawn_with(settings, db).await;
    let slow = "fake/slowish?tokens=5&token_ms=60";
    app.script_models(&[slow]);
    let token = app.user_token("alice").await;
    let before = scrape(&app).await;
    let route = "route=\"/api/v1/chats/{id}/messages\"";

    let chat = json_of(app.post_json_as("/api/v1/chats", &token, &json!({}))).await;
    let id = chat["uuid"].as_str().unwrap();
    let other = json_of(app.post_json_as("/api/v1/chats", &token, &json!({}))).await;
    let path = format!("/api/v1/chats/{id}/messages");
    let other_path = format!(
        "/api/v1/chats/{}/messages/stream",
        other["uuid"].as_str().unwrap()
    );
    let body = json!({"content": "hi", "model_id": slow});
    let (blocking, streamed) = tokio::join!(
        app.post_json_as(&path, &token, &body),
        app.post_json_as(&other_path, &token, &body),
    );
    assert_eq!(blocking.status(), 201);
    let body = streamed.text().await.unwrap();
    assert!(body.contains("\"type\":\"final\""), "{body}");
    for _ in 0..3 {
        app.get_as(&format!("/api/v1/chats/{id}/messages"), &token)
            .await;
    }
    let after = scrape(&app).await;

    let moved = |name: &str, labels: &[&str]| {
        let (b, a) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(a > b, "{name} {labels:?} did not move: {b} → {a}\n{after}");
    };
    // Alone in its process, this test's traffic is all the counters saw.
    let moved_by = |name: &str, labels: &[&str], n: f64| {
        let (b, a) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(
            (a - b - n).abs() < f64::EPSILON,
            "{name} {labels:?} moved by {} instead of {n}\n{after}",
            a - b
        );
    };
    moved_by(
        "arbor_generations_total",
        &["outcome=\"complete\"", "mode=\"stream\""],
        1.0,
    );
    moved_by(
        "arbor_generations_total",
        &["outcome=\"complete\"", "mode=\"blocking\""],
        1.0,
    );
    moved_by(
        "arbor_http_requests_total",
        &[route, "method=\"GET\"", "status=\"200\""],
        3.0,
    );
    moved(
        "arbor_http_requests_total",
        &[route, "method=\"POST\"", "status=\"201\""],
    );
    moved(
        "arbor_http_requests_total",
        &[route, "method=\"GET\"", "status=\"200\""],
    );
    moved("arbor_http_request_duration_seconds_count", &[route]);
    moved(
        "arbor_generations_total",
        &["outcome=\"complete\"", "mode=\"stream\""],
    );
    moved(
        "arbor_generations_total",
        &["outcome=\"complete\"", "mode=\"blocking\""],
    );
    moved("arbor_generation_ttft_seconds_count", &[]);
    moved(
        "arbor_provider_request_seconds_count",
        &["kind=\"stream_open\""],
    );
    moved(
        "arbor_provider_request_seconds_count",
        &["kind=\"complete\""],
    );
    moved("arbor_provider_permit_waits_total", &[]);
    // The branch read is served as a stored rendering; the send read the messages.
    moved("arbor_cache_hits_total", &["cache=\"rendered\""]);
    moved("arbor_cache_misses_total", &["cache=\"rendered\""]);
    moved("arbor_cache_misses_total", &["cache=\"messages\""]);
    moved("arbor_cache_hits_total", &["cache=\"accounts\""]);
    for level in [
        "arbor_sse_streams_open",
        "arbor_generations_running",
        "arbor_provider_in_flight",
        "arbor_db_pool_connections",
        "arbor_cache_bytes",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(level)),
            "{level} missing\n{after}"
        );
    }
    assert!(
        !after.contains(id),
        "routes are patterns, never raw paths with ids"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_protects_the_metrics() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let mut settings = test_settings(db.url());
    settings.metrics.token = SecretString::from("scrape-secret-0123456789");
    let app = TestApp::spawn_with(settings, db).await;
    assert_eq!(app.get("/metrics").await.status(), 401);
    assert_eq!(app.get_as("/metrics", "wrong").await.status(), 401);
    let ok = app.get_as("/metrics", "scrape-secret-0123456789").await;
    assert_eq!(ok.status(), 200);
    app.finish().await;

    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let mut settings = test_settings(db.url());
    settings.metrics.enabled = false;
    let app = TestApp::spawn_with(settings, db).await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    app.finish().await;
}
