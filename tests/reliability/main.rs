//! The reliability suite (`make test-reliability`): load, concurrency and fault scenarios on
//! every backend, sized by `RELIABILITY_SCALE` (`full` locally; anything else is the reduced
//! size CI runs). Each test prints its figures.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: a failed step aborts the test; the figures are its report"
)]

#[path = "../it/helpers.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod helpers;

use infra_db::or_skip;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infra_db::testing::{Backend, TestDatabase};
use serde_json::json;

use crate::helpers::{TestApp, json_of, test_settings};

fn full() -> bool {
    std::env::var("RELIABILITY_SCALE").is_ok_and(|s| s == "full")
}

/// R1: many clients x turns: every turn persisted exactly once, no 5xx, no lock error.
async fn r1_every_turn_is_persisted_exactly_once(backend: Backend) {
    let (clients, turns) = if full() { (500, 20) } else { (60, 5) };
    let db = or_skip!(TestDatabase::create(backend));
    let mut settings = test_settings(db.url());
    settings.database.max_connections = 16;
    settings.llm.max_concurrent_requests = 256;
    settings.llm.queue_timeout_secs = 60;
    let app = Arc::new(TestApp::spawn_with(settings, db).await);
    let model = "fake/instant?tokens=3";
    app.script_models(&[model]);
    let mut people = Vec::new();
    for c in 0..clients {
        let token = app.user_token(&format!("client{c}")).await;
        let chat = json_of(app.post_json_as("/api/v1/chats", &token, &json!({}))).await;
        people.push((token, chat["uuid"].as_str().unwrap().to_owned()));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (token, chat) in people.clone() {
        let app = Arc::clone(&app);
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for t in 0..turns {
                let r = app
                    .post_json_as(
                        &format!("/api/v1/chats/{chat}/messages"),
                        &token,
                        &json!({"content": format!("turn {t}"), "model_id": model}),
                    )
                    .await;
                if r.status() != 201 {
                    failures.push((r.status().as_u16(), r.text().await.unwrap_or_default()));
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(failures, vec![], "every turn answered 201");
    for (token, chat) in &people {
        let branch = json_of(app.get_as(&format!("/api/v1/chats/{chat}/messages"), token)).await;
        let branch = branch.as_array().unwrap();
        assert_eq!(
            branch.len(),
            1 + 2 * turns,
            "root + question and answer per turn"
        );
        for (t, pair) in branch[1..].chunks(2).enumerate() {
            assert_eq!(
                pair[0]["content"],
                format!("turn {t}"),
                "in order, once each"
            );
            assert_eq!(pair[1]["role"], "assistant");
        }
    }
    let total = app.db.count("messages", None).await;
    assert_eq!(
        total as usize,
        clients * (1 + 2 * turns),
        "no duplicate, no loss"
    );
    println!(
        "R1 {backend:?}: {clients} clients x {turns} turns = {} turns in {:.1} s ({:.0} turns/s), 0 errors, {total} messages",
        clients * turns,
        elapsed.as_secs_f64(),
        (clients * turns) as f64 / elapsed.as_secs_f64()
    );
    Arc::try_unwrap(app).ok().unwrap().finish().await;
}

/// R6: far more concurrent generations than the provider cap: the provider never sees more
/// than the cap; the excess waits, or gets 503 with Retry-After within the queue timeout.
async fn r6_the_provider_cap_holds_under_a_flood(backend: Backend) {
    let generations = if full() { 1_000 } else { 200 };
    let db = or_skip!(TestDatabase::create(backend));
    let mut settings = test_settings(db.url());
    settings.llm.max_concurrent_requests = 64;
    settings.llm.queue_timeout_secs = 5;
    settings.generation.per_user_limit = generations;
    settings.generation.global_limit = generations;
    settings.database.max_connections = 16;
    let app = Arc::new(TestApp::spawn_with(settings, db).await);
    let model = "fake/slowish?tokens=5&token_ms=20";
    app.script_models(&[model]);
    let token = app.user_token("flood").await;
    let mut chats = Vec::new();
    for _ in 0..generations {
        let chat = json_of(app.post_json_as("/api/v1/chats", &token, &json!({}))).await;
        chats.push(chat["uuid"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chat in chats {
        let (app, token) = (Arc::clone(&app), token.clone());
        tasks.spawn(async move {
            let asked = Instant::now();
            let r = app
                .post_json_as(
                    &format!("/api/v1/chats/{chat}/messages"),
                    &token,
                    &json!({"content": "hi", "model_id": model}),
                )
                .await;
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            (status, retry_after, asked.elapsed())
        });
    }
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (status, retry_after, waited) = done.unwrap();
        match status {
            201 => ok += 1,
            503 => {
                assert!(retry_after, "503 carries Retry-After");
                assert!(
                    waited < Duration::from_secs(8),
                    "refused within the queue timeout: {waited:?}"
                );
                refused += 1;
            }
            s => other.push(s),
        }
    }
    let stats = app.fake.stats();
    assert_eq!(other, Vec::<u16>::new(), "only 201 or 503");
    assert!(
        stats.max_in_flight <= 64,
        "the provider saw {}",
        stats.max_in_flight
    );
    println!(
        "R6 {backend:?}: {generations} concurrent generations, cap 64: provider max in flight {}, {ok} answered, {refused} refused with 503 + Retry-After, {:.1} s",
        stats.max_in_flight,
        started.elapsed().as_secs_f64()
    );
    Arc::try_unwrap(app).ok().unwrap().finish().await;
}

infra_db::on_every_backend!(
    r1_every_turn_is_persisted_exactly_once,
    r6_the_provider_cap_holds_under_a_flood,
);
