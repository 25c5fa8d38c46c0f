//! P3 with replicas on one PostgreSQL: persisted turns per second with one process alone,
//! one process coordinating, and two coordinating replicas behind a round-robin client; the
//! database's CPU and transactions per turn. Then what coordination costs the database per
//! running generation (its lease, slot, heartbeat and saved partial text).

use std::sync::Arc;
use std::time::{Duration, Instant};

use infra_db::testing::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Statement};

use crate::load::Client;
use crate::scenarios::{Context, closed_loop, database, provider, row};
use crate::server::Arbor;

const MODEL: &str = "fake/instant?tokens=5";
const SLOW: &str = "fake/slow?tokens=1000&token_ms=50";

/// CPU seconds used so far by every `postgres` process of the machine (the server, its
/// backends and background workers), from `/proc`.
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|stat| {
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<f64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect();
            (fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0))
                / 100.0
        })
        .sum()
}

/// Transactions committed and rows written in the database so far (PostgreSQL's
/// statistics; they lag by up to a second, so read them after a pause).
async fn counters(db: &TestDatabase) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let conn = db.raw().await;
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT xact_commit::float8 AS n, (tup_inserted + tup_updated + tup_deleted)::float8 AS w \
             FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no statistics"))?;
    let n: f64 = row.try_get("", "n")?;
    let w: f64 = row.try_get("", "w")?;
    let _ = conn.close().await;
    Ok((n, w))
}

async fn start(
    ctx: &Context,
    db: &TestDatabase,
    provider: &str,
    replicas: usize,
    mode: &str,
) -> anyhow::Result<Vec<Arbor>> {
    let env = [("ARBOR__CLUSTER__MODE", mode.to_owned())];
    let mut all = Vec::new();
    for _ in 0..replicas {
        all.push(Arbor::start(&ctx.arbor_bin, db.url(), provider, &env).await?);
    }
    Ok(all)
}

/// P3 with 1 and 2 replicas, then the coordination's cost per running generation.
pub async fn p3_replicas(ctx: &Context) -> anyhow::Result<()> {
    let (users, clients, seconds) = if ctx.quick {
        (10, 16, 3)
    } else {
        (100, 64, 15)
    };
    println!(
        "\nP3 with replicas (Postgres): {users} users, {clients} clients spread round-robin over the replicas, {seconds} s, blocking sends, instant provider"
    );
    for (label, replicas, mode) in [
        ("1 process, coordination off", 1, "off"),
        ("1 replica, coordinating", 1, "auto"),
        ("2 replicas, coordinating", 2, "auto"),
    ] {
        let fake = provider(&[MODEL]).await?;
        let db = database(Backend::Postgres).await?;
        let arbors = start(ctx, &db, &fake.base_url(), replicas, mode).await?;
        let clients_of: Vec<Client> = arbors
            .iter()
            .map(|a| Client::new(&a.base))
            .collect::<anyhow::Result<_>>()?;
        let mut tokens = Vec::new();
        for u in 0..users {
            tokens.push(clients_of[0].user(&format!("p3user{u}")).await?);
        }
        let mut work = Vec::new();
        for c in 0..clients {
            let client = clients_of[c % replicas].clone();
            let token = tokens[c % users].clone();
            let chat = client.chat(&token).await?;
            client.send(&token, &chat, MODEL).await?;
            work.push((client, token, chat));
        }
        let work = Arc::new(work);
        let before = (
            arbors.iter().map(Arbor::cpu_seconds).sum::<f64>(),
            postgres_cpu_seconds(),
            counters(&db).await?.0,
        );
        let started = Instant::now();
        let (turns, all, errors) = closed_loop(clients, seconds, move |i| {
            let work = Arc::clone(&work);
            async move {
                let (client, token, chat) = &work[i];
                client.send(token, chat, MODEL).await
            }
        })
        .await?;
        let wall = started.elapsed().as_secs_f64();
        let arbor_cpu = arbors.iter().map(Arbor::cpu_seconds).sum::<f64>() - before.0;
        let db_cpu = postgres_cpu_seconds() - before.1;
        let transactions = counters(&db).await?.0 - before.2;
        let n = Ord::max(all.len(), 1) as f64;
        println!("  {label}:");
        row("  turns/s", format!("{turns:.0}"));
        row(
            "  latency p50 / p99",
            format!("{:.1} / {:.1} ms", all.ms(0.5), all.ms(0.99)),
        );
        row("  errors", errors.to_string());
        row(
            "  Arbor CPU per turn (all replicas)",
            format!("{:.3} ms", arbor_cpu * 1_000.0 / n),
        );
        row(
            "  PostgreSQL CPU: cores busy / per turn",
            format!("{:.2} / {:.3} ms", db_cpu / wall, db_cpu * 1_000.0 / n),
        );
        row(
            "  database transactions per turn",
            format!("{:.1}", transactions / n),
        );
        drop(arbors);
        db.drop_database().await;
    }
    generation_cost(ctx).await
}

/// The server's `arbor_generations_running` gauge.
async fn running(base: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("{base}/metrics")).await else {
        return 0.0;
    };
    response
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("arbor_generations_running "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Transactions and rows written per second over `seconds`.
async fn rates(db: &TestDatabase, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let before = counters(db).await?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = counters(db).await?;
    // Both reads wait the same 1.5 s, so the window is the time between them.
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        (after.0 - before.0) / elapsed,
        (after.1 - before.1) / elapsed,
    ))
}

/// Transactions and rows written per second by one replica idle and with `streams`
/// generations running, alone and coordinating: what a replica and what each running
/// generation cost the database.
async fn generation_cost(ctx: &Context) -> anyhow::Result<()> {
    let (streams, seconds) = if ctx.quick { (20, 4) } else { (100, 10) };
    println!(
        "\n  Coordination cost: one replica idle, then with {streams} streams running (1,000 tokens at 50 ms), {seconds} s each"
    );
    let mut measured = Vec::new();
    for mode in ["off", "auto"] {
        let fake = provider(&[SLOW]).await?;
        let db = database(Backend::Postgres).await?;
        let arbors = start(ctx, &db, &fake.base_url(), 1, mode).await?;
        let base = arbors[0].base.clone();
        let client = Client::new(&base)?;
        let token = client.user("streamer").await?;
        let mut chats = Vec::new();
        for _ in 0..streams {
            chats.push(client.chat(&token).await?);
        }
        let idle = rates(&db, seconds).await?;
        let mut under_way = tokio::task::JoinSet::new();
        for chat in chats {
            let (client, token) = (client.clone(), token.clone());
            under_way.spawn(async move { client.stream_arbor(&token, &chat, SLOW).await });
        }
        let started = Instant::now();
        while running(&base).await < streams as f64 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the streams did not all start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let busy = rates(&db, seconds).await?;
        under_way.abort_all();
        drop(arbors);
        db.drop_database().await;
        measured.push((idle, busy));
    }
    let [(off_idle, off_busy), (on_idle, on_busy)] = [measured[0], measured[1]];
    row(
        "  transactions/s idle: alone / coordinating",
        format!("{:.1} / {:.1}", off_idle.0, on_idle.0),
    );
    row(
        "  transactions/s with the streams: alone / coordinating",
        format!("{:.1} / {:.1}", off_busy.0, on_busy.0),
    );
    row(
        "  rows written/s with the streams: alone / coordinating",
        format!("{:.1} / {:.1}", off_busy.1, on_busy.1),
    );
    let per = |on: f64, on0: f64, off: f64, off0: f64| ((on - on0) - (off - off0)) / streams as f64;
    row(
        "  per running generation and second: transactions / rows written",
        format!(
            "{:.3} / {:.3}",
            per(on_busy.0, on_idle.0, off_busy.0, off_idle.0),
            per(on_busy.1, on_idle.1, off_busy.1, off_idle.1)
        ),
    );
    Ok(())
}
