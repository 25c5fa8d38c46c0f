//! The `arbor` process killed or stopped mid-stream: crash recovery at the next start-up and
//! graceful shutdown, against the real binary, a real database and the fake provider.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

mod support;

use infra_db::or_skip;
use std::time::{Duration, Instant};

use support::{Arbor, command_on, integrity_violations};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use infra_db::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

const SLOW: &str = "fake/slow?tokens=200&token_ms=50";
const QUICK: &str = "fake/quick?tokens=20&token_ms=50";

async fn provider() -> fake_provider::FakeProvider {
    support::provider(&[SLOW, QUICK]).await
}

/// Opens a stream in a new chat and reads `n` events; returns (chat, answer uuid, the
/// event stream, text seen).
async fn stream_some(
    arbor: &Arbor,
    token: &str,
    model: &str,
    n: usize,
) -> (
    String,
    String,
    impl futures::Stream<
        Item = Result<
            eventsource_stream::Event,
            eventsource_stream::EventStreamError<reqwest::Error>,
        >,
    > + Unpin
    + use<>,
    String,
) {
    let chat = arbor.new_chat(token).await;
    let mut events = Box::pin(
        arbor
            .stream(token, &chat, model)
            .await
            .bytes_stream()
            .eventsource(),
    );
    let mut answer = String::new();
    let mut text = String::new();
    for _ in 0..n {
        let e = events.next().await.unwrap().unwrap();
        let d: Value = serde_json::from_str(&e.data).unwrap();
        if d["type"] == "start" {
            answer = d["message_uuid"].as_str().unwrap().to_owned();
        } else if let Some(delta) = d["delta"].as_str() {
            text.push_str(delta);
        }
    }
    (chat, answer, events, text)
}

/// The remaining events' data (`"[DONE]"` as a string), appending deltas to `text`.
async fn read_rest<S>(mut events: S, text: &mut String) -> Vec<Value>
where
    S: futures::Stream<
            Item = Result<
                eventsource_stream::Event,
                eventsource_stream::EventStreamError<reqwest::Error>,
            >,
        > + Unpin,
{
    let mut out = Vec::new();
    while let Some(Ok(e)) = events.next().await {
        if e.data == "[DONE]" {
            out.push(json!("[DONE]"));
            continue;
        }
        let d: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(delta) = d["delta"].as_str() {
            text.push_str(delta);
        }
        out.push(d);
    }
    out
}

async fn killed_mid_stream_then_restarted(backend: Backend) {
    let db = or_skip!(TestDatabase::create(backend));
    let fake = provider().await;
    // On PostgreSQL the restarted process is another replica: it recovers the answers of
    // the dead one once the lease ran out (short here) and it has been alive a lease itself.
    let env = [
        ("ARBOR__CLUSTER__LEASE_MS", "1500"),
        ("ARBOR__CLUSTER__HEARTBEAT_MS", "300"),
    ];
    let arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    let token = arbor.token("alice", true).await;
    let (chat, answer, events, _) = stream_some(&arbor, &token, SLOW, 5).await;
    arbor.signal("-KILL");
    drop(events);
    assert!(!arbor.exited(Duration::from_secs(5)).await.success());

    let arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    let restarted = Instant::now();
    let token = arbor.token("alice", false).await;
    let message = loop {
        let message = arbor.stored(&token, &chat, &answer).await;
        if message["status"] != "streaming" || restarted.elapsed() > Duration::from_secs(6) {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(message["status"], "interrupted", "{message}");
    let current = arbor
        .get(&format!("/api/v1/chats/{chat}/messages"), &token)
        .await;
    assert_eq!(
        current.as_array().unwrap().last().unwrap()["uuid"],
        answer.as_str(),
        "the interrupted answer is where the user left off"
    );
    assert_eq!(integrity_violations(&db).await, vec![]);
    // The chat is usable: the interrupted answer can be retried, and the chat continued.
    let retried = arbor
        .post(
            &format!("/api/v1/chats/{chat}/messages/{answer}/retry"),
            Some(&token),
            &json!({"model_id": "fake/small"}),
        )
        .await;
    assert_eq!(retried.status(), 201);
    let sent = arbor
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            Some(&token),
            &json!({"content": "and then?", "model_id": "fake/small"}),
        )
        .await;
    assert_eq!(sent.status(), 201);
    assert_eq!(integrity_violations(&db).await, vec![]);
    drop(arbor);
    db.drop_database().await;
}

infra_db::on_every_backend!(killed_mid_stream_then_restarted);

/// SIGTERM: a generation that fits in the grace period completes and reaches its client; one
/// that does not is saved `interrupted` with its partial text; the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_generations_finish_within_the_grace_period() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let fake = provider().await;
    let arbor = Arbor::start(
        &db,
        &fake.base_url(),
        &[("ARBOR__GENERATION__SHUTDOWN_GRACE_SECS", "3")],
    )
    .await;
    let token = arbor.token("alice", true).await;
    let (quick_chat, quick, quick_events, mut quick_text) =
        stream_some(&arbor, &token, QUICK, 3).await;
    let (slow_chat, slow, slow_events, mut slow_text) = stream_some(&arbor, &token, SLOW, 3).await;
    arbor.signal("-TERM");

    let quick_tail = read_rest(quick_events, &mut quick_text).await;
    let slow_tail = read_rest(slow_events, &mut slow_text).await;
    let n = quick_tail.len();
    assert_eq!(
        quick_tail[n - 2]["type"],
        "final",
        "finished within the grace"
    );
    assert_eq!(quick_tail[n - 1], "[DONE]");
    let n = slow_tail.len();
    assert_eq!(slow_tail[n - 2]["error_type"], "service_unavailable");
    assert_eq!(slow_tail[n - 1], "[DONE]");
    let status = arbor.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");

    let arbor = Arbor::start(&db, &fake.base_url(), &[]).await;
    let token = arbor.token("alice", false).await;
    let q = arbor.stored(&token, &quick_chat, &quick).await;
    assert_eq!(q["status"], "complete");
    assert_eq!(q["content"], quick_text);
    let s = arbor.stored(&token, &slow_chat, &slow).await;
    assert_eq!(s["status"], "interrupted");
    assert!(!slow_text.is_empty());
    assert_eq!(
        s["content"], slow_text,
        "saved by the shutdown, not by recovery"
    );
    drop(arbor);
    db.drop_database().await;
}

/// One id from the request header to every log line of the request and of the generation
/// and title it started (their tasks outlive the response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_request_id_is_on_every_log_line_of_its_generation_and_title() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let fake = provider().await;
    const BREAKS: &str = "fake/small?error_after=2";
    const TITLE: &str = "fake/title?status=500";
    let mut models = fake_provider::default_models();
    for id in [BREAKS, TITLE] {
        models.push(fake_provider::model_entry(id, id, "0", "0", 8_192));
    }
    fake.set_models(models);
    let log = std::env::temp_dir().join(format!("arbor-log-{}.jsonl", std::process::id()));
    let env = [
        ("ARBOR__GENERATION__TITLES", "true"),
        ("ARBOR__GENERATION__TITLE_MODEL", TITLE),
    ];
    let arbor = Arbor::start_logging(&db, &fake.base_url(), &env, Some(&log)).await;
    let token = arbor.token("alice", true).await;
    // An answer that breaks after two tokens (logged by the generation task), and in
    // another chat an answer whose title call fails (logged by the title task).
    for (id, model) in [("trace-7f3a", BREAKS), ("trace-91c0", "fake/small")] {
        let chat = arbor.new_chat(&token).await;
        let response = arbor
            .client
            .post(arbor.url(&format!("/api/v1/chats/{chat}/messages/stream")))
            .bearer_auth(&token)
            .header("x-request-id", id)
            .json(&json!({"content": "hello", "model_id": model}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], id);
        let _ = response.text().await.unwrap();
    }

    let wanted = [
        ("generation ended early", "trace-7f3a"),
        ("title generation failed; using the fallback", "trace-91c0"),
    ];
    let started = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let found = wanted
            .iter()
            .all(|(w, _)| lines.iter().any(|l| l["message"] == *w));
        if found || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    arbor.signal("-TERM");
    let _ = std::fs::remove_file(&log);
    for (message, id) in wanted {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no log line {message:?} in {lines:?}"));
        let ids: Vec<&Value> = line["spans"]
            .as_array()
            .map(|spans| spans.iter().filter_map(|s| s.get("request_id")).collect())
            .unwrap_or_default();
        assert_eq!(ids, [&json!(id)], "{message}: {line}");
    }
}

async fn me_status(arbor: &Arbor, token: &str) -> u16 {
    arbor
        .client
        .get(arbor.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Asks with `token` until it is refused; fails if that takes longer than `limit` (the
/// account cache's promise: a change made by another process is seen within a second).
async fn refused_within(arbor: &Arbor, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = me_status(arbor, token).await;
        if status == 401 {
            return started.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() <= limit,
            "the token still works {:?} after the change",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `arbor user create|list|disable|reset-password` against the database a server uses.
/// A disabled account and a password reset stop the tokens the running server has cached
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_operators_manage_accounts_from_the_command_line() {
    operators_manage_accounts(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_operators_manage_accounts_from_the_command_line() {
    operators_manage_accounts(Backend::Postgres).await;
}

async fn operators_manage_accounts(backend: Backend) {
    let db = or_skip!(TestDatabase::create(backend));
    let (ok, out, err) = command_on(&db, &["user", "create", "alice"], "first password\n");
    assert!(ok, "{err}");
    assert!(out.contains("created alice"), "{out}");
    let (ok, _, err) = command_on(&db, &["user", "create", "ALICE"], "other password\n");
    assert!(!ok && err.contains("taken"), "{err}");
    let (ok, _, err) = command_on(&db, &["user", "create", "bob"], "short\n");
    assert!(
        !ok && err.contains("password"),
        "the failing field is named: {err}"
    );
    let (ok, out, _) = command_on(&db, &["user", "list"], "");
    assert!(ok);
    assert!(out.contains("alice") && out.contains("active"), "{out}");
    assert!(out.contains("1 of 1 account(s)"), "{out}");

    let fake = provider().await;
    let arbor = Arbor::start(&db, &fake.base_url(), &[]).await;
    assert_eq!(arbor.login_status("alice", "first password").await, 200);
    let token = arbor.token_with("alice", "first password").await;

    // The server's account cache is warm: the token has been used.
    assert_eq!(me_status(&arbor, &token).await, 200);
    let (ok, out, err) = command_on(&db, &["user", "disable", "alice"], "");
    assert!(ok, "{err}");
    assert!(out.contains("alice is disabled"), "{out}");
    let took = refused_within(&arbor, &token, Duration::from_secs(1)).await;
    eprintln!("disabled account refused after {took:?}");
    assert_eq!(arbor.login_status("alice", "first password").await, 401);

    let (ok, _, _) = command_on(&db, &["user", "disable", "alice", "--enable"], "");
    assert!(ok);
    let token = arbor.token_with("alice", "first password").await;
    assert_eq!(me_status(&arbor, &token).await, 200);
    let (ok, out, err) = command_on(
        &db,
        &["user", "reset-password", "alice"],
        "second password\r\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("every session ended"), "{out}");
    let took = refused_within(&arbor, &token, Duration::from_secs(1)).await;
    eprintln!("token from before the password reset refused after {took:?}");
    assert_eq!(arbor.login_status("alice", "first password").await, 401);
    assert_eq!(arbor.login_status("alice", "second password").await, 200);
    let (ok, _, err) = command_on(&db, &["user", "disable", "nobody"], "");
    assert!(!ok && err.contains("no such user"), "{err}");
    drop(arbor);
    db.drop_database().await;
}
