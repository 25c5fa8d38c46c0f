//! The process-level part of the reliability suite (`make test-reliability`): the real
//! binary killed at random moments under load (R2), a thousand mid-stream disconnects per
//! policy (R3), and two processes sharing one PostgreSQL (R13). Sized by
//! `RELIABILITY_SCALE` (`full` locally; anything else is the reduced size CI runs).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: a failed step aborts the test; the figures are its report"
)]

mod support;

use infra_db::or_skip;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use infra_db::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use support::{Arbor, integrity_violations};

const INSTANT: &str = "fake/instant?tokens=4";
const STREAMING: &str = "fake/streaming?tokens=40&token_ms=25";
/// Ten seconds of answer.
const LONG: &str = "fake/long?tokens=400&token_ms=25";

fn full() -> bool {
    std::env::var("RELIABILITY_SCALE").is_ok_and(|s| s == "full")
}

/// Waits, polling every `every`, until the provider has no call in flight and no connection
/// open; returns the time since `since` (failing once that exceeds `limit`).
async fn provider_released(
    fake: &fake_provider::FakeProvider,
    since: Instant,
    limit: Duration,
    every: Duration,
) -> Duration {
    loop {
        let s = fake.stats();
        if s.in_flight == 0 && s.open_connections == 0 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "provider calls or connections still open: {s:?}"
        );
        tokio::time::sleep(every).await;
    }
}

async fn provider() -> fake_provider::FakeProvider {
    support::provider(&[INSTANT, STREAMING]).await
}

const GENEROUS: [(&str, &str); 4] = [
    ("ARBOR__RATE_LIMITS__ENABLED", "false"),
    ("ARBOR__GENERATION__PER_USER_LIMIT", "5000"),
    ("ARBOR__GENERATION__GLOBAL_LIMIT", "5000"),
    ("ARBOR__LLM__MAX_CONCURRENT_REQUESTS", "5000"),
];

/// R2: SIGKILL at random moments during mixed load, restart, ten times: no half-written row,
/// no `streaming` row after start-up.
async fn r2_killed_at_random_moments(backend: Backend) {
    let rounds = if full() { 10 } else { 3 };
    let db = or_skip!(TestDatabase::create(backend));
    let fake = provider().await;
    // On PostgreSQL each restart is a new replica, which recovers the dead one's answers
    // once its lease ran out (short here) and it has itself been alive a lease.
    let mut env = GENEROUS.to_vec();
    env.extend([
        ("ARBOR__CLUSTER__LEASE_MS", "1500"),
        ("ARBOR__CLUSTER__HEARTBEAT_MS", "300"),
    ]);
    let mut arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    let token = arbor.token("chaos", true).await;
    let mut kills = Vec::new();
    for round in 0..rounds {
        let chats: Vec<String> =
            futures::future::join_all((0..8).map(|_| arbor.new_chat(&token))).await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut load = tokio::task::JoinSet::new();
        for (i, chat) in chats.into_iter().enumerate() {
            let (base, token, stop, done) = (
                arbor.base.clone(),
                token.clone(),
                Arc::clone(&stop),
                Arc::clone(&done),
            );
            load.spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let streamed = i % 2 == 0;
                    let url = if streamed {
                        format!("{base}/api/v1/chats/{chat}/messages/stream")
                    } else {
                        format!("{base}/api/v1/chats/{chat}/messages")
                    };
                    let model = if streamed { STREAMING } else { INSTANT };
                    let Ok(r) = client
                        .post(url)
                        .bearer_auth(&token)
                        .json(&json!({"content": "load", "model_id": model}))
                        .send()
                        .await
                    else {
                        break; // the server is gone
                    };
                    if r.bytes().await.is_err() {
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let delay = Duration::from_millis(300 + (rand::random::<u64>() % 1_200));
        tokio::time::sleep(delay).await;
        arbor.signal("-KILL");
        stop.store(true, Ordering::Relaxed);
        let _ = arbor.exited(Duration::from_secs(5)).await;
        while load.join_next().await.is_some() {}
        kills.push((delay.as_millis(), done.load(Ordering::Relaxed)));
        arbor = Arbor::start(&db, &fake.base_url(), &env).await;
        let restarted = Instant::now();
        let violations = loop {
            let violations = integrity_violations(&db).await;
            if violations.is_empty() || restarted.elapsed() > Duration::from_secs(6) {
                break violations;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(violations, vec![], "after kill {round} at {delay:?}");
    }
    // The data is still usable: a turn in a chat that lived through every kill.
    let chat = arbor.new_chat(&token).await;
    let r = arbor
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            Some(&token),
            &json!({"content": "after", "model_id": INSTANT}),
        )
        .await;
    assert_eq!(r.status(), 201);
    println!(
        "R2 {backend:?}: {rounds} SIGKILLs under load (ms into the round, requests done): {kills:?}; 0 integrity violations after each restart"
    );
    drop(arbor);
    db.drop_database().await;
}

/// R3: a thousand streams whose clients leave mid-answer, under each policy: provider
/// connections back to baseline, server memory back near where it was.
async fn r3_disconnects(policy: &str) {
    let (streams, batch) = if full() { (1_000, 200) } else { (200, 100) };
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let fake = provider().await;
    let mut env = GENEROUS.to_vec();
    env.push(("ARBOR__GENERATION__ON_CLIENT_DISCONNECT", policy));
    env.push(("ARBOR__LLM__POOL_MAX_IDLE_PER_HOST", "0"));
    // Finished generations stay re-attachable for the linger time; keep it short so the
    // memory measured afterwards is what remains once nothing is kept on purpose.
    env.push(("ARBOR__GENERATION__LINGER_SECS", "1"));
    let arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    let token = arbor.token("leaver", true).await;
    let leave_early = |chats: Vec<String>| {
        let (base, token) = (arbor.base.clone(), token.clone());
        async move {
            let client = reqwest::Client::new();
            futures::future::join_all(chats.into_iter().map(|chat| {
                let (client, base, token) = (client.clone(), base.clone(), token.clone());
                async move {
                    let r = client
                        .post(format!("{base}/api/v1/chats/{chat}/messages/stream"))
                        .bearer_auth(&token)
                        .json(&json!({"content": "go", "model_id": STREAMING}))
                        .send()
                        .await
                        .unwrap();
                    let mut events = Box::pin(r.bytes_stream().eventsource());
                    for _ in 0..3 {
                        events.next().await.unwrap().unwrap();
                    }
                    // dropped here: the client leaves mid-answer
                }
            }))
            .await;
        }
    };
    let settle = || {
        provider_released(
            &fake,
            Instant::now(),
            Duration::from_secs(30),
            Duration::from_millis(20),
        )
    };
    // Warm-up, so the measured memory is the server's steady state.
    let warm: Vec<String> =
        futures::future::join_all((0..batch).map(|_| arbor.new_chat(&token))).await;
    leave_early(warm).await;
    settle().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = arbor.rss_mib();
    let mut worst_settle = Duration::ZERO;
    for _ in 0..streams / batch {
        let chats: Vec<String> =
            futures::future::join_all((0..batch).map(|_| arbor.new_chat(&token))).await;
        leave_early(chats).await;
        worst_settle = worst_settle.max(settle().await);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = arbor.rss_mib();
    let growth = (after - before) / before;
    println!(
        "R3 {policy}: {streams} mid-stream disconnects in batches of {batch}: provider connections back to 0 within {:.2} s of each batch; server RSS {before:.1} → {after:.1} MiB ({:+.1} %)",
        worst_settle.as_secs_f64(),
        growth * 100.0
    );
    assert!(growth <= 0.10, "server RSS grew {:.1} %", growth * 100.0);
    if policy == "cancel" {
        assert!(worst_settle < Duration::from_secs(2), "{worst_settle:?}");
    }
    drop(arbor);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_disconnects_under_cancel() {
    r3_disconnects("cancel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_disconnects_under_finish() {
    r3_disconnects("finish").await;
}

/// R13: two processes on one PostgreSQL behind a round-robin client: no lost write, no stale
/// read of the current branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_two_replicas_share_one_postgresql() {
    let (clients, turns): (usize, usize) = if full() { (50, 20) } else { (10, 5) };
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let fake = provider().await;
    let mut env = GENEROUS.to_vec();
    env.push(("ARBOR__GENERATION__STARTUP_RECOVERY", "expired"));
    let a = Arbor::start(&db, &fake.base_url(), &env).await;
    let b = Arbor::start(&db, &fake.base_url(), &env).await;
    let replicas = Arc::new([a.base.clone(), b.base.clone()]);
    let token = a.token("roundrobin", true).await;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (replicas, token) = (Arc::clone(&replicas), token.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut next = c;
            let mut pick = || {
                next += 1;
                replicas[next % 2].clone()
            };
            let chat: Value = client
                .post(format!("{}/api/v1/chats", pick()))
                .bearer_auth(&token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let chat = chat["uuid"].as_str().unwrap().to_owned();
            let mut stale = 0;
            for t in 0..turns {
                let sent: Value = client
                    .post(format!("{}/api/v1/chats/{chat}/messages", pick()))
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("turn {t}"), "model_id": INSTANT}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                // Read it back on the other replica at once.
                let branch: Value = client
                    .get(format!("{}/api/v1/chats/{chat}/messages", pick()))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let last = branch
                    .as_array()
                    .and_then(|b| b.last())
                    .cloned()
                    .unwrap_or_default();
                if last["uuid"] != sent["message_uuid"] {
                    stale += 1;
                }
            }
            (chat, stale)
        });
    }
    let mut stale = 0;
    let mut chats = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (chat, s) = done.unwrap();
        stale += s;
        chats.push(chat);
    }
    let mut lost = 0;
    for chat in &chats {
        let branch = a
            .get(&format!("/api/v1/chats/{chat}/messages"), &token)
            .await;
        lost += (1 + 2 * turns).saturating_sub(branch.as_array().unwrap().len());
    }
    println!(
        "R13: 2 replicas, {clients} clients x {turns} turns round-robin: {lost} lost writes, {stale} stale reads of the current branch"
    );
    assert_eq!((lost, stale), (0, 0));
    drop((a, b));
    db.drop_database().await;
}

/// R14: a burst of streams started within two seconds on the default pool: every stream
/// the server accepts ends `complete` and stored with exactly the text its client read;
/// every refused one is a 429/503 before anything was written; no answer is ever lost
/// ("could not be saved").
async fn r14_a_burst_of_streams_loses_no_answer(backend: Backend) {
    const BURST: &str = "fake/burst?ttft_ms=100&tokens=10&token_ms=20";
    let streams: usize = if full() { 2_000 } else { 500 };
    let spread = Duration::from_secs(2);
    let db = or_skip!(TestDatabase::create(backend));
    let fake = support::provider(&[BURST]).await;
    let arbor = Arbor::start(&db, &fake.base_url(), &GENEROUS).await;
    let token = arbor.token("burst", true).await;
    let mut chats = Vec::with_capacity(streams);
    for batch in (0..streams).collect::<Vec<_>>().chunks(100) {
        chats.extend(futures::future::join_all(batch.iter().map(|_| arbor.new_chat(&token))).await);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let runs = futures::future::join_all(chats.iter().enumerate().map(|(i, chat)| {
        let (client, base, token) = (client.clone(), arbor.base.clone(), token.clone());
        let at = spread.mul_f64(i as f64 / streams as f64);
        async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
            let r = client
                .post(format!("{base}/api/v1/chats/{chat}/messages/stream"))
                .bearer_auth(&token)
                .json(&json!({"content": "burst", "model_id": BURST}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if status != 200 {
                return (status, None, String::new(), Vec::new());
            }
            let mut events = Box::pin(r.bytes_stream().eventsource());
            let (mut answer, mut text, mut kinds) = (None, String::new(), Vec::new());
            while let Some(event) = events.next().await {
                let event = event.unwrap();
                if event.data == "[DONE]" {
                    break;
                }
                let data: Value = serde_json::from_str(&event.data).unwrap();
                let kind = data["type"].as_str().unwrap_or_default().to_owned();
                match kind.as_str() {
                    "start" => answer = data["message_uuid"].as_str().map(str::to_owned),
                    "chunk" => text.push_str(data["delta"].as_str().unwrap()),
                    _ => {}
                }
                kinds.push(kind);
            }
            (status, answer, text, kinds)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let (mut accepted, mut refused) = (0, 0);
    for ((status, answer, text, kinds), chat) in runs.iter().zip(&chats) {
        let stored = arbor
            .get(&format!("/api/v1/chats/{chat}/complete"), &token)
            .await;
        let messages = stored["messages"].as_array().unwrap();
        if *status == 200 {
            accepted += 1;
            assert_eq!(
                kinds.last().map(String::as_str),
                Some("final"),
                "an accepted stream ends with its answer: {kinds:?}"
            );
            let answer = answer.as_deref().unwrap();
            let row = messages.iter().find(|m| m["uuid"] == answer).unwrap();
            assert_eq!(row["status"], "complete");
            assert_eq!(row["content"].as_str().unwrap(), text);
        } else {
            refused += 1;
            assert!(matches!(status, 429 | 503), "refused with {status}");
            assert_eq!(messages.len(), 1, "a refused send wrote nothing");
        }
    }
    assert_eq!(integrity_violations(&db).await, vec![]);
    println!(
        "R14 {backend:?}: {streams} streams started within {:.1} s (all ended after {:.1} s): {accepted} accepted and stored complete, {refused} refused with 429/503 before any write, 0 lost",
        spread.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(accepted > 0);
    drop(arbor);
    db.drop_database().await;
}

/// R16 (R3 on a slow model): streams on a model silent for 30 s before its first token, whose
/// clients hang up after 1 s. Under `cancel` the hang-up is noticed from the connection itself
/// (not from a write that would come 30 s later): the provider calls are released and the
/// answers stored `interrupted` within 100 ms of the hang-ups.
async fn r16_a_hang_up_is_noticed_before_the_first_token(backend: Backend) {
    const SILENT: &str = "fake/streaming?ttft_ms=30000&tokens=2";
    let streams = if full() { 100 } else { 20 };
    let db = or_skip!(TestDatabase::create(backend));
    let fake = support::provider(&[SILENT]).await;
    let mut env = GENEROUS.to_vec();
    env.push(("ARBOR__GENERATION__ON_CLIENT_DISCONNECT", "cancel"));
    env.push(("ARBOR__LLM__POOL_MAX_IDLE_PER_HOST", "0"));
    let arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    let token = arbor.token("hangs_up", true).await;
    let chats: Vec<String> =
        futures::future::join_all((0..streams).map(|_| arbor.new_chat(&token))).await;
    // One connection, opened now, so that polling costs a query and not a connection.
    let conn = db.raw().await;
    let count_interrupted = || async {
        let n: i64 = sea_orm::ConnectionTrait::query_one_raw(
            &conn,
            sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT COUNT(*) AS n FROM messages WHERE status = 'interrupted'",
            ),
        )
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
        n
    };
    assert_eq!(count_interrupted().await, 0);
    let client = reqwest::Client::new();
    let opened = Instant::now();
    let hung_up = futures::future::join_all(chats.iter().map(|chat| {
        let (client, url, token) = (
            client.clone(),
            arbor.url(&format!("/api/v1/chats/{chat}/messages/stream")),
            token.clone(),
        );
        async move {
            let r = client
                .post(url)
                .bearer_auth(&token)
                .json(&json!({"content": "think hard", "model_id": SILENT}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut events = Box::pin(r.bytes_stream().eventsource());
            let start = events.next().await.unwrap().unwrap();
            assert!(start.data.contains("\"start\""), "{}", start.data);
            tokio::time::sleep_until((opened + Duration::from_secs(1)).into()).await;
            drop(events); // the client hangs up, long before any token
            Instant::now()
        }
    }))
    .await;
    let last_hang_up = hung_up.into_iter().max().unwrap();
    // The high-water mark: every call was running before the hang-ups.
    assert_eq!(
        fake.stats().max_in_flight,
        streams as i64,
        "every call was running"
    );
    let released = provider_released(
        &fake,
        last_hang_up,
        Duration::from_secs(10),
        Duration::from_millis(2),
    )
    .await;
    let interrupted = loop {
        let n = count_interrupted().await;
        if n == streams as i64 {
            break last_hang_up.elapsed();
        }
        assert!(
            last_hang_up.elapsed() < Duration::from_secs(10),
            "{n} of {streams} answers interrupted"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    println!(
        "R16 {backend:?}: {streams} streams on a model silent for 30 s, clients gone after 1 s: provider calls released {:.0} ms and answers interrupted {:.0} ms after the last hang-up",
        released.as_secs_f64() * 1_000.0,
        interrupted.as_secs_f64() * 1_000.0
    );
    assert!(released <= Duration::from_millis(100), "{released:?}");
    // The save itself: within 100 ms on every backend with the release binary (`cargo test
    // --release`: PostgreSQL 57–69 ms, MariaDB 55–61 ms at 100 streams). A debug binary
    // needs about twice that on the servers (98–124 ms), so it gets a wider bound there
    // rather than a flaky one.
    let save_bound = if backend == Backend::Sqlite || !cfg!(debug_assertions) {
        100
    } else {
        300
    };
    assert!(
        interrupted <= Duration::from_millis(save_bound),
        "{interrupted:?}"
    );
    let _ = conn.close().await;
    drop(arbor);
    db.drop_database().await;
}

infra_db::on_every_backend!(
    r2_killed_at_random_moments,
    r14_a_burst_of_streams_loses_no_answer,
    r16_a_hang_up_is_noticed_before_the_first_token
);

/// Stops or starts the local PostgreSQL cluster.
fn postgres(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .max()
        })
        .expect("a PostgreSQL cluster under /etc/postgresql");
    let mut cmd = std::process::Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", &version, "main", action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    let status = cmd.status().expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action}");
}

/// Starts PostgreSQL again even when the test fails half-way.
struct RestartPostgres;

impl Drop for RestartPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args(["-c", "pg_lsclusters -h | awk '$4 != \"online\" {print $1}' | xargs -r -I{} pg_ctlcluster --skip-systemctl-redirect {} main start"])
            .status();
    }
}

/// R11: PostgreSQL stopped during load and started again: requests fail with 503 (never
/// 500) while it is down, succeed again within 5 s, and no answered turn is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_a_postgresql_outage_is_503_then_recovers_without_loss() {
    r11(1).await;
}

/// R11 with three replicas behind a round-robin client: every replica survives the restart
/// (503 while it is down, successes again within 5 s on each), none loses a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_three_replicas_survive_a_postgresql_restart() {
    r11(3).await;
}

async fn r11(replicas: usize) {
    // Longer than the pool's acquire timeout (5 s), so requests asked during it end in it.
    let outage = if full() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(7)
    };
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let fake = support::provider(&[INSTANT, LONG]).await;
    let mut arbors = Vec::new();
    for _ in 0..replicas {
        arbors.push(Arbor::start(&db, &fake.base_url(), &GENEROUS).await);
    }
    let arbor = &arbors[0];
    let token = arbor.token("outage", true).await;
    let chats: Vec<String> =
        futures::future::join_all((0..8).map(|_| arbor.new_chat(&token))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for (i, chat) in chats.into_iter().enumerate() {
        let bases: Vec<String> = arbors.iter().map(|a| a.base.clone()).collect();
        let (token, stop) = (token.clone(), Arc::clone(&stop));
        load.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut seen = Vec::new();
            let mut turn = i;
            while !stop.load(Ordering::Relaxed) {
                let replica = turn % bases.len();
                let base = &bases[replica];
                turn += 1;
                let asked = Instant::now();
                let r = client
                    .post(format!("{base}/api/v1/chats/{chat}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"content": "during an outage?", "model_id": INSTANT}))
                    .send()
                    .await;
                let at = Instant::now();
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or_default();
                        let answer = body["message_uuid"].as_str().map(str::to_owned);
                        seen.push((asked, at, status, answer, replica));
                        if status != 201 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Err(_) => seen.push((asked, at, 0, None, replica)),
                }
            }
            seen
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _restart = RestartPostgres;
    let stopping = Instant::now();
    postgres("stop");
    let stopped = Instant::now();
    tokio::time::sleep(outage).await;
    // PostgreSQL may accept connections before `start` returns: the outage ends here.
    let restarting = Instant::now();
    postgres("start");
    let started = Instant::now();
    println!(
        "R11 ({replicas} replica(s)): stop took {:.1} s, start took {:.1} s",
        stopped.duration_since(stopping).as_secs_f64(),
        started.duration_since(restarting).as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(done) = load.join_next().await {
        all.extend(done.unwrap());
    }
    // Asked and answered while the database was down.
    let during: Vec<u16> = all
        .iter()
        .filter(|(asked, at, ..)| *asked > stopped && *at < restarting)
        .map(|(_, _, s, ..)| *s)
        .collect();
    let statuses: std::collections::BTreeSet<u16> = all.iter().map(|(_, _, s, ..)| *s).collect();
    // The first success after the restart, on each replica: the slowest of them.
    let recovered = (0..replicas)
        .map(|r| {
            all.iter()
                .filter(|(asked, _, s, _, on)| *asked > restarting && *s == 201 && *on == r)
                .map(|(_, at, ..)| at.duration_since(restarting))
                .min()
        })
        .collect::<Option<Vec<_>>>()
        .and_then(|each| each.into_iter().max());
    let answered: Vec<String> = all.iter().filter_map(|(_, _, _, a, _)| a.clone()).collect();
    // Every answered turn is in the database.
    let stored = support::assistant_ids(&db, false).await;
    let missing = answered.iter().filter(|id| !stored.contains(*id)).count();
    println!(
        "R11 ({replicas} replica(s)): PostgreSQL down {:.0} s under load: statuses seen {statuses:?}; during the outage {} requests, all 503: {}; first success on every replica within {:.2} s of the restart; {} answered turns, {missing} missing",
        outage.as_secs_f64(),
        during.len(),
        during.iter().all(|s| *s == 503),
        recovered.map_or(f64::NAN, |d| d.as_secs_f64()),
        answered.len()
    );
    assert!(!statuses.contains(&500), "never a 500: {statuses:?}");
    assert!(
        !during.is_empty() && during.iter().all(|s| *s == 503),
        "{during:?}"
    );
    assert!(
        recovered.is_some_and(|d| d < Duration::from_secs(5)),
        "{recovered:?}"
    );
    assert_eq!(missing, 0);
    if replicas > 1 {
        // The replicas talk to each other again (their LISTEN connections came back): a
        // generation on one is seen and cancelled from the others.
        let chat = arbors[0].new_chat(&token).await;
        let stream = arbors[0]
            .post(
                &format!("/api/v1/chats/{chat}/messages/stream"),
                Some(&token),
                &json!({"content": "after the outage", "model_id": LONG}),
            )
            .await;
        assert_eq!(stream.status(), 200);
        let seen = arbors[1]
            .get(&format!("/api/v1/chats/{chat}/generation"), &token)
            .await;
        assert_eq!(seen["running"], true, "{seen}");
        let cancelled = arbors[2].cancel(&token, &chat).await;
        assert_eq!(cancelled.status(), 200);
        drop(stream);
    }
    drop(arbors);
    db.drop_database().await;
}

/// R15: a burst of registrations and logins, a quarter of them abandoned by their client
/// mid-request, with production argon2 costs: never more hashes at once than the configured
/// concurrency, and the memory they used is bounded by it (RSS 10 s later within idle +
/// 64 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_a_login_burst_keeps_password_memory_bounded() {
    let (registrations, logins) = if full() { (500, 2_000) } else { (100, 300) };
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let fake = provider().await;
    let mut env = GENEROUS.to_vec();
    env.extend([
        ("ARBOR__AUTH__ARGON2_MEMORY_KIB", "19456"),
        ("ARBOR__AUTH__ARGON2_ITERATIONS", "2"),
        ("ARBOR__AUTH__HASH_CONCURRENCY", "2"),
    ]);
    let arbor = Arbor::start(&db, &fake.base_url(), &env).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = arbor.rss_mib();
    let client = reqwest::Client::new();
    let attempt = |path: &'static str, i: usize| {
        let (client, url) = (client.clone(), arbor.url(path));
        async move {
            let name = format!("burst{}", i % registrations);
            let request = client
                .post(url)
                .json(&json!({"username": name, "password": "correct horse battery"}));
            if i % 4 == 3 {
                // This client gives up before its answer: the request is dropped mid-hash.
                let _ = request.timeout(Duration::from_millis(20)).send().await;
                None
            } else {
                Some(request.send().await.unwrap().status().as_u16())
            }
        }
    };
    let started = Instant::now();
    let registered =
        futures::future::join_all((0..registrations).map(|i| attempt("/api/v1/users", i))).await;
    let logged_in =
        futures::future::join_all((0..logins).map(|i| attempt("/api/v1/auth/login", i))).await;
    let elapsed = started.elapsed();
    for status in registered.iter().flatten() {
        assert_eq!(*status, 201);
    }
    let ok = logged_in.iter().flatten().filter(|s| **s == 200).count();
    let unauthorised = logged_in.iter().flatten().filter(|s| **s == 401).count();
    // A login whose registration was abandoned may find no such user (401); nothing else.
    assert_eq!(ok + unauthorised, logged_in.iter().flatten().count());
    assert!(ok > logins / 2, "{ok} logins succeeded");
    let peak = arbor.rss_mib();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = arbor.rss_mib();
    let metrics = client
        .get(arbor.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let most: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("arbor_password_hashes_most_running "))
        .expect("the hash gauge is exported")
        .trim()
        .parse()
        .unwrap();
    println!(
        "R15: {registrations} registrations + {logins} logins (1 in 4 abandoned) in {:.1} s, at most {most} hashes at once (allowed 2); RSS idle {idle:.1} → peak {peak:.1} → {after:.1} MiB 10 s later",
        elapsed.as_secs_f64()
    );
    assert!((1.0..=2.0).contains(&most), "{most} hashes at once");
    assert!(after <= idle + 64.0, "RSS {idle:.1} → {after:.1} MiB");
    drop(arbor);
    db.drop_database().await;
}
