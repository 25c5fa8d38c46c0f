//! Liveness, readiness, and the JSON 404.

use infra_db::{on_every_backend, or_skip};
use std::time::Duration;

use infra_db::testing::{Backend, TestDatabase};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{TestApp, test_settings};

async fn health_and_readiness_answer(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let health = app.get("/api/v1/health").await;
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["version"].is_string());

    let ready = app.get("/api/v1/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], "ok");
    app.finish().await;
}

async fn unknown_routes_answer_with_the_json_envelope(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let response = app.get("/api/v1/no-such-route").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], "not_found");
    assert_eq!(body["retry_available"], false);
    assert!(body["user_message"].is_string());
    assert!(body["request_id"].is_string());
    app.finish().await;
}

on_every_backend!(
    health_and_readiness_answer,
    unknown_routes_answer_with_the_json_envelope
);

/// Forwards every connection on `listener` to PostgreSQL: "the database came back".
async fn forward_to_postgres(listener: TcpListener) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_postgres_is_down_starts_then_turns_ready_when_it_returns() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    // A port with nothing behind it yet: PostgreSQL is "down".
    let port = fake_provider::free_port().unwrap();
    let database = db.url().rsplit('/').next().unwrap().to_owned();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    let app = TestApp::spawn_with(test_settings(&url), db).await;

    assert_eq!(app.get("/api/v1/health").await.status(), 200);
    let not_ready = app.get("/api/v1/ready").await;
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.headers().contains_key("retry-after"));
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["error_type"], "service_unavailable");
    assert_eq!(body["retry_available"], true);

    // The database comes back on the same address.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(forward_to_postgres(listener));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if app.get("/api/v1/ready").await.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready 30 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.db.count("seaql_migrations", None).await,
        i64::try_from(<migration::Migrator as migration::MigratorTrait>::migrations().len())
            .unwrap(),
        "every migration ran once the database was back"
    );
    app.finish().await;
}

/// Stopping the server stops its background work (migrations retried while the database is
/// down, the sweep of expired streams, the account poll) before the pool closes: nothing
/// keeps running against a closed pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_stops_its_background_work() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let background = app.background.clone();
    assert_eq!(
        background.running(),
        2,
        "the stream sweep, the account poll"
    );
    app.finish().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while background.running() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} background task(s) outlived the server",
            background.running()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
