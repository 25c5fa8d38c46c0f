//! The scenarios. Each prints its figures; sizes shrink with `--quick`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fake_provider::FakeProvider;
use infra_db::testing::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, ExprTrait, Statement};

use crate::load::{Client, Latencies};
use crate::server::Arbor;

/// What every scenario needs.
pub struct Context {
    pub arbor_bin: String,
    pub quick: bool,
    pub streams: Option<usize>,
    pub open_streams: Option<usize>,
    pub provider_http1: bool,
}

pub(crate) async fn provider(models: &[&str]) -> anyhow::Result<FakeProvider> {
    let fake = FakeProvider::start().await?;
    let mut all = fake_provider::default_models();
    for id in models {
        all.push(fake_provider::model_entry(
            id, id, "0.000001", "0.000002", 128_000,
        ));
    }
    fake.set_models(all);
    Ok(fake)
}

pub(crate) async fn database(backend: Backend) -> anyhow::Result<TestDatabase> {
    TestDatabase::create(backend)
        .await
        .with_context(|| format!("{backend:?} is not reachable"))
}

pub(crate) fn row(label: &str, value: String) {
    println!("  {label:<58} {value}");
}

/// P1: the time Arbor adds to the first and the last token of concurrent streams, at each
/// burst size (streams started at the same instant), with the server's CPU per stream.
pub async fn p1(ctx: &Context, backend: Backend) -> anyhow::Result<()> {
    const MODEL: &str = "fake/p1?ttft_ms=50&tokens=20&token_ms=5";
    let levels: Vec<usize> = match ctx.streams {
        Some(n) => vec![n],
        None if ctx.quick => vec![1, 10, 50],
        None => vec![1, 10, 50, 200, 1_000],
    };
    let rounds = if ctx.quick { 2 } else { 5 };
    println!(
        "\nP1 overhead ({backend:?}): bursts of {levels:?} streams started at once x {rounds} rounds each, provider TTFT 50 ms, 20 tokens 5 ms apart"
    );
    let fake = provider(&[MODEL]).await?;
    let db = database(backend).await?;
    let arbor = Arbor::start(&ctx.arbor_bin, db.url(), &fake.base_url(), &[]).await?;
    let client = Client::new(&arbor.base)?;
    let direct = Client::new(&fake.base_url())?;
    let token = client.user("bench_p1").await?;
    let most = levels.iter().copied().max().unwrap_or(1);
    let mut chats = Vec::new();
    for _ in 0..most {
        chats.push(client.chat(&token).await?);
    }
    println!(
        "  {:>7} | {:>21} | {:>21} | {:>21} | {:>14}",
        "streams",
        "added TTFT p50 / p99",
        "added last p50 / p99",
        "provider TTFT p50",
        "CPU per stream"
    );
    let mut curve = Vec::new();
    for &streams in &levels {
        let (mut d_first, mut d_last, mut a_first, mut a_last) = (
            Latencies::new(),
            Latencies::new(),
            Latencies::new(),
            Latencies::new(),
        );
        let mut cpu = 0.0;
        for round in 0..=rounds {
            let via_provider =
                futures::future::join_all((0..streams).map(|_| direct.stream_direct(MODEL)));
            let results = via_provider.await;
            let cpu_before = arbor.cpu_seconds();
            let via_arbor = futures::future::join_all(
                chats[..streams]
                    .iter()
                    .map(|chat| client.stream_arbor(&token, chat, MODEL)),
            );
            let arbor_results = via_arbor.await;
            if round == 0 {
                continue; // warm-up: connections, caches, the catalogue
            }
            cpu += arbor.cpu_seconds() - cpu_before;
            for r in results {
                let t = r?;
                d_first.record(t.first);
                d_last.record(t.last);
            }
            for r in arbor_results {
                let t = r?;
                a_first.record(t.first);
                a_last.record(t.last);
            }
        }
        let added = |a: &Latencies, d: &Latencies, q: f64| a.ms(q) - d.ms(q);
        let cpu_ms = cpu * 1_000.0 / (streams * rounds) as f64;
        println!(
            "  {streams:>7} | {:>+9.2} / {:>+9.2} ms | {:>+9.2} / {:>+9.2} ms | {:>18.2} ms | {cpu_ms:>11.3} ms",
            added(&a_first, &d_first, 0.5),
            added(&a_first, &d_first, 0.99),
            added(&a_last, &d_last, 0.5),
            added(&a_last, &d_last, 0.99),
            d_first.ms(0.5),
        );
        curve.push((
            streams,
            added(&a_first, &d_first, 0.5),
            added(&a_first, &d_first, 0.99),
            cpu_ms,
        ));
    }
    if curve.len() > 1 {
        let path = format!("target/bench/p1-{backend:?}.svg").to_lowercase();
        match write_curve_svg(&path, backend, &curve) {
            Ok(()) => println!("  plot: {path}"),
            Err(e) => println!("  plot not written: {e}"),
        }
    }
    drop(arbor);
    db.drop_database().await;
    Ok(())
}

/// A small SVG of added TTFT (p50, p99) against the burst size (log scale).
fn write_curve_svg(
    path: &str,
    backend: Backend,
    curve: &[(usize, f64, f64, f64)],
) -> std::io::Result<()> {
    let (w, h, pad) = (640.0_f64, 360.0_f64, 50.0_f64);
    let max_x = curve.iter().map(|c| c.0).max().unwrap_or(1).max(2) as f64;
    let max_y = curve.iter().map(|c| c.2.max(c.1)).fold(1.0_f64, f64::max) * 1.1;
    let x = |n: usize| pad + (n as f64).log10() / max_x.log10() * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v.max(0.0) / max_y * (h - 2.0 * pad);
    let line = |pick: fn(&(usize, f64, f64, f64)) -> f64| {
        curve
            .iter()
            .map(|c| format!("{:.1},{:.1}", x(c.0), y(pick(c))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">P1 {backend:?}: added time to first token vs streams started at once</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="4" y="{pad}">{max_y:.0} ms</text><text x="20" y="{b}">0</text>
<polyline fill="none" stroke="steelblue" stroke-width="2" points="{p50}"/>
<polyline fill="none" stroke="firebrick" stroke-width="2" stroke-dasharray="4" points="{p99}"/>
<text x="{r}" y="40" text-anchor="end" fill="steelblue">p50</text><text x="{r}" y="56" text-anchor="end" fill="firebrick">p99</text>
"#,
        b = h - pad,
        r = w - pad,
        p50 = line(|c| c.1),
        p99 = line(|c| c.2),
    );
    for c in curve {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(c.0),
            h - pad + 16.0,
            c.0
        ));
    }
    svg.push_str("</svg>\n");
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)
}

/// P2: many simultaneously open SSE streams on a slow provider.
pub async fn p2(ctx: &Context) -> anyhow::Result<()> {
    const MODEL: &str = "fake/p2?tokens=20&token_ms=1000";
    // Each stream holds a client socket in Arbor and one here; over HTTP/1.1 it also holds a
    // provider socket in Arbor and one here (the in-process fake provider), over h2c all
    // streams share one provider connection. The open-files limit bounds what can be shown.
    let fd_limit = open_files_limit();
    let sockets_per_stream = if ctx.provider_http1 { 2 } else { 1 };
    let possible = fd_limit.saturating_sub(1_000) / sockets_per_stream;
    let wanted = ctx
        .open_streams
        .unwrap_or(if ctx.quick { 500 } else { 10_000 });
    let streams = wanted.min(possible);
    println!(
        "\nP2 open streams: ramp to {streams} SSE streams, 1 token per second (SQLite, {} to the provider){}",
        if ctx.provider_http1 {
            "HTTP/1.1"
        } else {
            "h2c"
        },
        if streams < wanted {
            format!(" — capped by this machine's open-files limit of {fd_limit}")
        } else {
            String::new()
        }
    );
    let fake = provider(&[MODEL]).await?;
    let db = database(Backend::Sqlite).await?;
    let arbor = Arbor::start(
        &ctx.arbor_bin,
        db.url(),
        &fake.base_url(),
        &[
            // Over HTTP/1.1 a connection per stream, none kept after it.
            ("ARBOR__LLM__POOL_MAX_IDLE_PER_HOST", "0".to_owned()),
            (
                "ARBOR__LLM__HTTP2_PRIOR_KNOWLEDGE",
                (!ctx.provider_http1).to_string(),
            ),
        ],
    )
    .await?;
    let client = Client::new(&arbor.base)?;
    let token = client.user("bench_p2").await?;
    let idle = arbor.rss_mib().0;
    let mut chats = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(200) {
        let made = futures::future::join_all(chunk.iter().map(|_| client.chat(&token))).await;
        for c in made {
            chats.push(c?);
        }
    }
    let open = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chat in chats {
        let (client, token, open, errors) = (
            client.clone(),
            token.clone(),
            Arc::clone(&open),
            Arc::clone(&errors),
        );
        tasks.spawn(async move {
            match client.stream_arbor(&token, &chat, MODEL).await {
                Ok(_) => {}
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("p2 stream error: {e:#}");
                    }
                }
            }
            let _ = open;
        });
        // Ramp: about 1,000 new streams per second.
        if tasks.len() % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ramp = started.elapsed();
    let mut peak_open = 0;
    let mut at_peak = (0.0, 0.0);
    let mut peak_connections = 0;
    while !tasks.is_empty() {
        let stats = fake.stats();
        if stats.in_flight >= peak_open {
            peak_open = stats.in_flight;
            peak_connections = stats.open_connections;
            at_peak = arbor.rss_mib();
        }
        tokio::select! {
            done = tasks.join_next() => { if done.is_none() { break; } }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let (_, hwm) = arbor.rss_mib();
    row(
        "streams",
        format!("{streams} (ramp {:.1} s)", ramp.as_secs_f64()),
    );
    row(
        "peak simultaneously open (provider in-flight)",
        format!("{peak_open} on {peak_connections} provider connection(s)"),
    );
    row("errors", errors.load(Ordering::Relaxed).to_string());
    row(
        "server RSS idle / at peak / high-water mark",
        format!("{idle:.0} / {:.0} / {hwm:.0} MiB", at_peak.0),
    );
    drop(arbor);
    db.drop_database().await;
    Ok(())
}

/// The soft limit on open files of this process (the child inherits it).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1_024)
}

/// The database's own ceiling: single-row insert transactions at `clients` concurrency for
/// `seconds`.
async fn ceiling(
    db: &TestDatabase,
    backend: Backend,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let conn = db.raw().await;
    let create = match backend {
        Backend::Sqlite => {
            "CREATE TABLE bench_ceiling (id INTEGER PRIMARY KEY AUTOINCREMENT, x INTEGER)"
        }
        Backend::Postgres => "CREATE TABLE bench_ceiling (id BIGSERIAL PRIMARY KEY, x INTEGER)",
        Backend::MySql => {
            "CREATE TABLE bench_ceiling (id BIGINT AUTO_INCREMENT PRIMARY KEY, x INTEGER)"
        }
    };
    conn.execute_raw(Statement::from_string(conn.get_database_backend(), create))
        .await?;
    if backend == Backend::Postgres {
        let name = db.url().rsplit('/').next().unwrap_or_default().to_owned();
        let script = std::env::temp_dir().join(format!("arbor-ceiling-{name}.sql"));
        std::fs::write(&script, "INSERT INTO bench_ceiling (x) VALUES (1);\n")?;
        let out = tokio::process::Command::new("pgbench")
            .args(["-n", "-h", "127.0.0.1", "-U", "postgres", "-j", "2"])
            .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
            .arg("-f")
            .arg(&script)
            .arg(&name)
            .output()
            .await
            .context("pgbench")?;
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&out.stdout);
        return text
            .lines()
            .find(|l| l.starts_with("tps ="))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .with_context(|| {
                format!(
                    "pgbench said: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
    }
    // SQLite (and MySQL): the same statement through one connection per client, each in its
    // own transaction (SQLite serialises them, as Arbor's single writer does).
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let conn = Arc::new(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (conn, done) = (Arc::clone(&conn), Arc::clone(&done));
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let backend = conn.get_database_backend();
                if conn
                    .execute_raw(Statement::from_string(
                        backend,
                        "INSERT INTO bench_ceiling (x) VALUES (1)",
                    ))
                    .await
                    .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// P3: persisted turns per second with an instant provider.
pub async fn p3(ctx: &Context, backend: Backend) -> anyhow::Result<()> {
    const MODEL: &str = "fake/instant?tokens=5";
    let (users, clients, seconds) = if ctx.quick {
        (10, 16, 3)
    } else {
        (100, 64, 15)
    };
    println!(
        "\nP3 persisted turns ({backend:?}): {users} users, {clients} clients, {seconds} s, blocking sends, instant provider"
    );
    let fake = provider(&[MODEL]).await?;
    let db = database(backend).await?;
    let arbor = Arbor::start(&ctx.arbor_bin, db.url(), &fake.base_url(), &[]).await?;
    let client = Client::new(&arbor.base)?;
    let mut tokens = Vec::new();
    for u in 0..users {
        tokens.push(client.user(&format!("p3user{u}")).await?);
    }
    let mut work = Vec::new();
    for c in 0..clients {
        let token = tokens[c % users].clone();
        let chat = client.chat(&token).await?;
        work.push((token, chat));
    }
    // Warm-up: one turn per client.
    for (token, chat) in &work {
        client.send(token, chat, MODEL).await?;
    }
    let work = Arc::new(work);
    let sender = client.clone();
    let cpu_before = arbor.cpu_seconds();
    let (turns, all, errors) = closed_loop(clients, seconds, move |i| {
        let (client, work) = (sender.clone(), Arc::clone(&work));
        async move {
            let (token, chat) = &work[i];
            client.send(token, chat, MODEL).await
        }
    })
    .await?;
    let cpu = arbor.cpu_seconds() - cpu_before;
    // What the server keeps once the load is over (idle for 2 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, high_water) = arbor.rss_mib();
    drop(arbor);
    let ceiling = ceiling(&db, backend, clients, seconds).await?;
    row(
        "turns/s (each: question + answer + record, 2 transactions)",
        format!("{turns:.0}"),
    );
    row(
        "latency p50 / p99",
        format!("{:.1} / {:.1} ms", all.ms(0.5), all.ms(0.99)),
    );
    row("errors", errors.to_string());
    row(
        "server CPU per turn (user + system, /proc)",
        format!("{:.3} ms", cpu * 1_000.0 / Ord::max(all.len(), 1) as f64),
    );
    row(
        "server RSS idle 2 s after the run / high-water mark",
        format!("{idle_rss:.0} / {high_water:.0} MiB"),
    );
    row(
        "database ceiling: 1-row insert transactions/s",
        format!("{ceiling:.0}"),
    );
    row(
        "turns/s as a share of the ceiling",
        format!("{:.2}", turns / ceiling),
    );
    db.drop_database().await;
    Ok(())
}

/// Inserts `n` messages as one chain under the chat's root, and makes the last the leaf.
async fn bulk_chain(db: &TestDatabase, chat: &str, n: usize) -> anyhow::Result<()> {
    bulk_chain_with(db, chat, n, |i| {
        format!("message {i}: some ordinary text of a typical length for a chat")
    })
    .await
}

/// [`bulk_chain`] with the content of message `i` from `content`.
async fn bulk_chain_with(
    db: &TestDatabase,
    chat: &str,
    n: usize,
    content: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let conn = db.raw().await;
    let backend = conn.get_database_backend();
    let chat_id = uuid::Uuid::parse_str(chat)?;
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => "SELECT root_id, user_id FROM chats WHERE id = $1",
                _ => "SELECT root_id, user_id FROM chats WHERE id = ?",
            },
            [chat_id.into()],
        ))
        .await?
        .context("the chat")?;
    let root: uuid::Uuid = row.try_get("", "root_id")?;
    let owner: uuid::Uuid = row.try_get("", "user_id")?;
    let mut parent = root;
    let base = 1_800_000_000_000_000_i64;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        ids.push((id, parent, i));
        parent = id;
    }
    for chunk in ids.chunks(500) {
        let mut insert = sea_orm::sea_query::Query::insert();
        insert.into_table("messages").columns([
            "id",
            "chat_id",
            "user_id",
            "parent_id",
            "role",
            "content",
            "status",
            "created_at",
        ]);
        for (id, parent, i) in chunk {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            insert.values_panic([
                (*id).into(),
                chat_id.into(),
                owner.into(),
                (*parent).into(),
                role.into(),
                content(*i).into(),
                "complete".into(),
                (base + *i as i64).into(),
            ]);
        }
        conn.execute(&insert).await?;
    }
    let update = sea_orm::sea_query::Query::update()
        .table("chats")
        .values([
            ("current_leaf_id", parent.into()),
            ("message_count", i64::try_from(n + 1)?.into()),
            ("updated_at", (base + n as i64).into()),
        ])
        .and_where(sea_orm::sea_query::Expr::col("id").eq(chat_id))
        .to_owned();
    conn.execute(&update).await?;
    let _ = conn.close().await;
    Ok(())
}

/// Inserts `n` chats (each with its root message) for the user owning `like_chat`.
async fn bulk_chats(db: &TestDatabase, like_chat: &str, n: usize) -> anyhow::Result<()> {
    let conn = db.raw().await;
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => "SELECT user_id FROM chats WHERE id = $1",
                _ => "SELECT user_id FROM chats WHERE id = ?",
            },
            [uuid::Uuid::parse_str(like_chat)?.into()],
        ))
        .await?
        .context("the chat")?;
    let user: uuid::Uuid = row.try_get("", "user_id")?;
    let base = 1_700_000_000_000_000_i64;
    let all: Vec<(uuid::Uuid, uuid::Uuid, i64)> = (0..n)
        .map(|i| {
            (
                uuid::Uuid::now_v7(),
                uuid::Uuid::now_v7(),
                base + i as i64 * 1_000,
            )
        })
        .collect();
    for chunk in all.chunks(400) {
        let mut chats = sea_orm::sea_query::Query::insert();
        chats.into_table("chats").columns([
            "id",
            "user_id",
            "title",
            "title_set_by_user",
            "root_id",
            "current_leaf_id",
            "message_count",
            "created_at",
            "updated_at",
        ]);
        let mut roots = sea_orm::sea_query::Query::insert();
        roots.into_table("messages").columns([
            "id",
            "chat_id",
            "user_id",
            "parent_id",
            "role",
            "content",
            "status",
            "created_at",
        ]);
        for (chat, root, at) in chunk {
            chats.values_panic([
                (*chat).into(),
                user.into(),
                format!("Chat {at}").into(),
                false.into(),
                (*root).into(),
                (*root).into(),
                1_i64.into(),
                (*at).into(),
                (*at).into(),
            ]);
            roots.values_panic([
                (*root).into(),
                (*chat).into(),
                user.into(),
                Option::<uuid::Uuid>::None.into(),
                "system".into(),
                String::new().into(),
                "complete".into(),
                (*at).into(),
            ]);
        }
        conn.execute(&chats).await?;
        conn.execute(&roots).await?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// Closed-loop load: `workers` tasks, each repeating `step(its index)` until `seconds` pass.
/// Returns (operations per second, latencies, errors).
pub(crate) async fn closed_loop<F, Fut>(
    workers: usize,
    seconds: u64,
    step: F,
) -> anyhow::Result<(f64, Latencies, u64)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Duration>> + Send,
{
    let step = Arc::new(step);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let step = Arc::clone(&step);
        tasks.spawn(async move {
            let mut l = Latencies::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                match step(worker).await {
                    Ok(d) => l.record(d),
                    Err(_) => errors += 1,
                }
            }
            (l, errors)
        });
    }
    let mut all = Latencies::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        all.merge(&l);
        errors += e;
    }
    Ok((
        all.len() as f64 / started.elapsed().as_secs_f64(),
        all,
        errors,
    ))
}

/// Requests per second of `path` with `clients` concurrent clients for `seconds`.
async fn throughput(
    client: &Client,
    token: &str,
    path: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Latencies, u64)> {
    let (client, token, path) = (client.clone(), token.to_owned(), path.to_owned());
    closed_loop(clients, seconds, move |_| {
        let (client, token, path) = (client.clone(), token.clone(), path.clone());
        async move { client.get(&path, &token).await }
    })
    .await
}

/// Median of `n` sequential GETs, and the first (cold) one.
async fn sequential(
    client: &Client,
    token: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let first = client.get(path, token).await?;
    let mut l = Latencies::new();
    for _ in 0..n {
        l.record(client.get(path, token).await?);
    }
    Ok((first.as_secs_f64() * 1_000.0, l.ms(0.5)))
}

/// P4: reads.
pub async fn p4(ctx: &Context, backend: Backend) -> anyhow::Result<()> {
    const MODEL: &str = "fake/instant?tokens=5";
    let (long_chain, many_chats, seconds) = if ctx.quick {
        (2_000, 10_000, 3)
    } else {
        (10_000, 100_000, 10)
    };
    println!("\nP4 reads ({backend:?})");
    let fake = provider(&[MODEL]).await?;
    let db = database(backend).await?;
    let arbor = Arbor::start(&ctx.arbor_bin, db.url(), &fake.base_url(), &[]).await?;
    let client = Client::new(&arbor.base)?;
    let token = client.user("bench_p4").await?;

    let chat = client.chat(&token).await?;
    for _ in 0..100 {
        client.send(&token, &chat, MODEL).await?;
    }
    let path = format!("/api/v1/chats/{chat}/messages");
    let (rps, l, errors) = throughput(&client, &token, &path, 32, seconds).await?;
    if errors > 0 {
        bail!("{errors} failed reads");
    }
    row(
        "current branch of a 200-message chat: req/s (p50 / p99)",
        format!("{rps:.0} ({:.2} / {:.2} ms)", l.ms(0.5), l.ms(0.99)),
    );

    let long = client.chat(&token).await?;
    bulk_chain(&db, &long, long_chain).await?;
    let (cold, warm) = sequential(
        &client,
        &token,
        &format!("/api/v1/chats/{long}/messages"),
        20,
    )
    .await?;
    row(
        &format!("path of a {long_chain}-message chat: first / then (p50)"),
        format!("{cold:.1} / {warm:.1} ms"),
    );

    let other = client.user("p4many").await?;
    let seed = client.chat(&other).await?;
    bulk_chats(&db, &seed, many_chats).await?;
    let (cold, warm) = sequential(&client, &other, "/api/v1/chats?page=1&limit=20", 20).await?;
    row(
        &format!("chat list, first page of {many_chats} chats: first / then (p50)"),
        format!("{cold:.1} / {warm:.1} ms"),
    );
    let deep = format!("/api/v1/chats?page={}&limit=20", many_chats / 40);
    let (_, deep_ms) = sequential(&client, &other, &deep, 10).await?;
    row(
        "chat list, a page in the middle by page number (p50)",
        format!("{deep_ms:.1} ms"),
    );
    let (_, first_ms) = sequential(&client, &other, "/api/v1/chats?limit=20&cursor=", 20).await?;
    row(
        "chat list, the first page by cursor (no total) (p50)",
        format!("{first_ms:.1} ms"),
    );
    // Keyset pages: the cursor that continues after the middle, and after the last but one.
    for (label, page) in [
        ("in the middle", many_chats / 40),
        ("the last", many_chats / 20 - 1),
    ] {
        let listed = client
            .get_json(&format!("/api/v1/chats?page={page}&limit=20"), &other)
            .await?;
        let cursor = listed["next_cursor"]
            .as_str()
            .context("a page before the last has a next cursor")?
            .to_owned();
        let (_, ms) = sequential(
            &client,
            &other,
            &format!("/api/v1/chats?limit=20&cursor={cursor}"),
            20,
        )
        .await?;
        row(
            &format!("chat list, {label} page by cursor (p50)"),
            format!("{ms:.1} ms"),
        );
    }
    drop(arbor);
    db.drop_database().await;
    Ok(())
}

/// P5: substring search across all of one user's messages (`GET /search?q=`).
pub async fn p5(ctx: &Context, backend: Backend) -> anyhow::Result<()> {
    const WORDS: [&str; 16] = [
        "river",
        "market",
        "window",
        "garden",
        "planet",
        "silver",
        "orange",
        "coffee",
        "東京",
        "天気",
        "電車",
        "会議",
        "予定",
        "写真",
        "ありがとう",
        "おはよう",
    ];
    let (chats, per_chat) = if ctx.quick {
        (10, 1_000)
    } else {
        (100, 10_000)
    };
    println!(
        "\nP5 search ({backend:?}): {} messages of one user ({chats} chats x {per_chat}), LIKE substring semantics",
        chats * per_chat
    );
    let fake = provider(&[]).await?;
    let db = database(backend).await?;
    let arbor = Arbor::start(&ctx.arbor_bin, db.url(), &fake.base_url(), &[]).await?;
    let client = Client::new(&arbor.base)?;
    let token = client.user("p5user").await?;
    let loading = Instant::now();
    for c in 0..chats {
        let chat = client.chat(&token).await?;
        bulk_chain_with(&db, &chat, per_chat, |i| {
            let n = c * per_chat + i;
            // A deterministic mix of English and Japanese words; a few rare markers.
            let mut text: Vec<&str> = (0..8)
                .map(|k| WORDS[(n.wrapping_mul(2_654_435_761) >> (k * 3)) % WORDS.len()])
                .collect();
            if n % 10_007 == 0 {
                text.push("zephyrine");
            }
            if n % 1_009 == 0 {
                text.push("東京タワー");
            }
            if n % 997 == 0 {
                text.push("猫犬");
            }
            text.join(" ")
        })
        .await?;
    }
    if backend == Backend::Postgres {
        // What autovacuum does after a bulk load: the planner's statistics.
        db.execute("ANALYZE messages").await;
    }
    row(
        "loaded (bulk insert)",
        format!("{:.1} s", loading.elapsed().as_secs_f64()),
    );
    for (label, q) in [
        ("a rare word (~100 hits)", "zephyrine"),
        ("a Japanese word, 5 characters (~1,000 hits)", "東京タワー"),
        ("a Japanese word, 2 characters (~1,000 hits)", "猫犬"),
        ("a common word (most messages)", "coffee"),
    ] {
        let path = format!("/api/v1/search?q={}&limit=20", urlencode(q));
        let answer = client.get_json(&path, &token).await?;
        let hits = format!(
            "{}{}{}",
            answer["total"],
            if answer["total_exact"] == false {
                "+"
            } else {
                ""
            },
            if answer["searched_all"] == false {
                ", newest 10,000 messages searched"
            } else {
                ""
            }
        );
        let (first, p50) = sequential(&client, &token, &path, 5).await?;
        row(
            &format!("{label}: first / then p50 (total hits)"),
            format!("{first:.1} / {p50:.1} ms ({hits})"),
        );
    }
    drop(arbor);
    db.drop_database().await;
    Ok(())
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
