//! The model catalogue and per-user settings over HTTP, on every backend.

use infra_db::{on_every_backend, or_skip};
use std::time::Duration;

use infra_db::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::{TestApp, at_once, json_of, test_settings};

async fn app_with_ttl(backend: Backend, ttl_secs: u64) -> Option<TestApp> {
    TestApp::spawn_tuned(backend, |settings| settings.models.ttl_secs = ttl_secs).await
}

async fn models(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_as("/api/v1/models?limit=100", token).await
}

async fn the_catalogue_fills_refreshes_by_upsert_and_falls_back_to_stale(backend: Backend) {
    let app = or_skip!(app_with_ttl(backend, 1));
    let token = app.user_token("alice").await;

    let first = models(&app, &token).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-catalog-stale").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["total"], 3);
    assert_eq!(first["stale"], false);
    assert_eq!(app.db.count("models", None).await, 3);
    let one = json_of(app.get_as("/api/v1/models/openai/gpt-4o-mini", &token)).await;
    assert_eq!(one["pricing"]["prompt"], "0.00000015");
    assert_eq!(one["context_length"], 128_000);

    // The provider changes a price and adds a model; after the TTL the list is upserted.
    let mut changed = fake_provider::default_models();
    changed[1]["pricing"]["prompt"] = json!("0.000004");
    changed.push(fake_provider::model_entry(
        "fake/new", "Fake New", "0.000001", "0.000002", 4_096,
    ));
    app.fake.set_models(changed);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let refreshed: Value = models(&app, &token).await.json().await.unwrap();
    assert_eq!(refreshed["total"], 4);
    let large = refreshed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fake/large")
        .unwrap();
    assert_eq!(large["pricing"]["prompt"], "0.000004");
    assert_eq!(app.db.count("models", None).await, 4, "one row per model");

    // The provider fails: the cached list is served, marked stale.
    app.fake.fail_models(true);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let stale = models(&app, &token).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-catalog-stale"], "true");
    let stale: Value = stale.json().await.unwrap();
    assert_eq!(stale["stale"], true);
    assert_eq!(stale["total"], 4);

    let search = json_of(app.get_as("/api/v1/models?q=LARGE", &token)).await;
    assert_eq!(search["total"], 1);
    assert_eq!(
        app.get_as("/api/v1/models/nobody/none", &token)
            .await
            .status(),
        404
    );
    app.finish().await;
}

async fn concurrent_requests_on_an_expired_catalogue_share_one_refresh(backend: Backend) {
    let app = or_skip!(app_with_ttl(backend, 1));
    let token = app.user_token("alice").await;
    assert_eq!(models(&app, &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = app.fake.stats().model_requests;
    let url = app.url("/api/v1/models?limit=100");
    let statuses = at_once((0..100).map(|_| app.client.get(&url).bearer_auth(&token))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.fake.stats().model_requests - before, 1);
    app.finish().await;
}

async fn each_user_has_a_default_model_validated_against_the_catalogue(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let get = |token: String| {
        let app = &app;
        async move {
            app.get_as("/api/v1/users/me/settings", &token)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(alice.clone()).await["default_model_id"], Value::Null);
    let put = |token: &str, body: Value| {
        app.client
            .put(app.url("/api/v1/users/me/settings"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let unknown = put(&alice, json!({"default_model_id": "nobody/none"}))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    let ok = put(&alice, json!({"default_model_id": "fake/large"}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(get(alice.clone()).await["default_model_id"], "fake/large");
    assert_eq!(
        get(bob.clone()).await["default_model_id"],
        Value::Null,
        "never global"
    );
    let cleared = put(&alice, json!({"default_model_id": null}))
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(get(alice).await["default_model_id"], Value::Null);
    assert_eq!(app.get("/api/v1/models").await.status(), 401);
    app.finish().await;
}

/// A model the provider stops listing is no longer listed, found or accepted (a clear 422, not
/// a 502 from the provider) after the next refresh; its row is kept; listed again, it is back.
async fn a_model_the_provider_drops_is_inactive_after_the_next_refresh(backend: Backend) {
    let app = or_skip!(app_with_ttl(backend, 1));
    let token = app.user_token("dora").await;
    let mut with = fake_provider::default_models();
    with.push(fake_provider::model_entry(
        "fake/retired",
        "Retired",
        "0",
        "0",
        4_096,
    ));
    app.fake.set_models(with.clone());
    let listed: Value = models(&app, &token).await.json().await.unwrap();
    assert_eq!(listed["total"], 4);
    let chat = app.new_chat(&token).await;
    let send = |model: &'static str| {
        let path = format!("/api/v1/chats/{chat}/messages");
        let app = &app;
        let token = token.clone();
        async move {
            app.post_json_as(&path, &token, &json!({"content": "hi", "model_id": model}))
                .await
        }
    };
    assert_eq!(send("fake/retired").await.status(), 201);

    app.fake.set_models(fake_provider::default_models());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let listed: Value = models(&app, &token).await.json().await.unwrap();
    assert_eq!(listed["total"], 3);
    assert_eq!(
        app.get_as("/api/v1/models/fake/retired", &token)
            .await
            .status(),
        404
    );
    assert_eq!(send("fake/retired").await.status(), 422);
    assert_eq!(app.db.count("models", None).await, 4, "the row is kept");

    app.fake.set_models(with);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(send("fake/retired").await.status(), 201, "listed again");
    app.finish().await;
}

/// With `[[llm.providers]]`, a primary that refuses connections falls back to the next
/// provider, and the generation record names the one that answered; the catalogue is what
/// the answering provider lists.
async fn a_dead_primary_provider_falls_back_and_the_record_names_the_other(backend: Backend) {
    let db = or_skip!(TestDatabase::create(backend));
    let backup = fake_provider::FakeProvider::start().await.unwrap();
    let dead = fake_provider::unreachable_base_url().unwrap();
    let mut settings = test_settings(db.url());
    let provider = |name: &str, base_url: String, priority| arbor::config::ProviderSettings {
        name: name.to_owned(),
        base_url,
        api_key_env: String::new(),
        models: vec!["*".to_owned()],
        priority,
        max_concurrent_requests: None,
        request_timeout_secs: None,
        http2_prior_knowledge: false,
        headers: std::collections::BTreeMap::new(),
    };
    settings.llm.providers = vec![
        provider("primary", dead, 0),
        provider("backup", backup.base_url(), 1),
    ];
    let app = TestApp::spawn_with(settings, db).await;
    let token = app.user_token("erin").await;
    let listed: Value = models(&app, &token).await.json().await.unwrap();
    assert_eq!(listed["total"], 3, "the backup's list");
    let chat = app.new_chat(&token).await;
    let sent = app
        .send_message(
            &chat,
            &token,
            &json!({"content": "anyone there?", "model_id": "fake/small"}),
        )
        .await;
    assert_eq!(sent.status(), 201);
    let answer: Value = sent.json().await.unwrap();
    let provider: String = {
        use sea_orm::ConnectionTrait;
        let conn = app.db.raw().await;
        let sql = match conn.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                "SELECT provider FROM generations WHERE message_id = $1"
            }
            _ => "SELECT provider FROM generations WHERE message_id = ?",
        };
        let row = conn
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                conn.get_database_backend(),
                sql,
                [crate::helpers::uuid_value(&answer["message_uuid"])],
            ))
            .await
            .unwrap()
            .unwrap();
        let _ = conn.close().await;
        row.try_get("", "provider").unwrap()
    };
    assert_eq!(provider.split('/').next(), Some("backup"), "{provider}");
    assert!(
        backup.stats().chat_requests >= 1,
        "the backup answered (and titled the chat)"
    );
    app.finish().await;
}

on_every_backend!(
    a_dead_primary_provider_falls_back_and_the_record_names_the_other,
    a_model_the_provider_drops_is_inactive_after_the_next_refresh,
    the_catalogue_fills_refreshes_by_upsert_and_falls_back_to_stale,
    concurrent_requests_on_an_expired_catalogue_share_one_refresh,
    each_user_has_a_default_model_validated_against_the_catalogue
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_catalogue_with_the_provider_down_is_503() {
    let app = or_skip!(TestApp::spawn(Backend::Sqlite));
    let token = app.user_token("alice").await;
    app.fake.fail_models(true);
    let response = models(&app, &token).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    app.finish().await;
}
