//! `arbor-bench`: Arbor's load scenarios, against the release binary as a separate process,
//! the fake provider, and a real SQLite file or PostgreSQL database.
//!
//! - P1 overhead: bursts of 1 to 1,000 streams through Arbor vs. the same requests straight to
//!   the fake provider: added time to first and to last token (p50/p99), server CPU per stream.
//! - P2 open streams: ramp to N simultaneously open SSE streams on a slow provider (spoken to
//!   over h2c, or HTTP/1.1 for comparison); errors and the server's peak RSS.
//! - P3 persisted turns per second: blocking sends with an instant provider, many users, next
//!   to the database's own single-row-transaction ceiling at the same concurrency.
//! - P4 reads: current branch of a 200-message chat (req/s), path of a 10,000-message chat
//!   (ms), chat-list pages (by number and by cursor) of a user with 100,000 chats (ms).
//! - P5 search: substring search across 1,000,000 messages of one user (ms).
//! - P3-replicas: P3 on PostgreSQL with one process alone, one replica coordinating and two
//!   replicas coordinating (turns/s, the database's CPU and transactions per turn), and what
//!   coordination costs the database per running generation.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table; that is its output"
)]

mod load;
mod replicas;
mod scenarios;
mod server;

use clap::{Parser, ValueEnum};
use infra_db::testing::Backend;

/// Arbor's load scenarios.
#[derive(Debug, Parser)]
#[command(name = "arbor-bench", about)]
struct Cli {
    /// Which scenario(s).
    #[arg(value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Databases to run the database-bound scenarios on.
    #[arg(long, value_delimiter = ',', default_values = ["sqlite", "postgres"])]
    backends: Vec<Db>,
    /// Smaller sizes, for a quick check (not for the recorded figures).
    #[arg(long)]
    quick: bool,
    /// P1: concurrent streams per round (default 200; 50 with --quick).
    #[arg(long)]
    streams: Option<usize>,
    /// P2: streams to open (default 10,000; 500 with --quick).
    #[arg(long)]
    open_streams: Option<usize>,
    /// P2: talk HTTP/1.1 to the provider (a connection per stream) instead of h2c.
    #[arg(long)]
    provider_http1: bool,
    /// The Arbor binary to run (built with `cargo build --release -p arbor`).
    #[arg(long, env = "ARBOR_BIN", default_value = "target/release/arbor")]
    arbor_bin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    P1,
    P2,
    P3,
    P4,
    P5,
    P3Replicas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Db {
    Sqlite,
    Postgres,
    Mysql,
}

impl Db {
    const fn backend(self) -> Backend {
        match self {
            Self::Sqlite => Backend::Sqlite,
            Self::Postgres => Backend::Postgres,
            Self::Mysql => Backend::MySql,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ctx = scenarios::Context {
        arbor_bin: cli.arbor_bin.clone(),
        quick: cli.quick,
        streams: cli.streams,
        open_streams: cli.open_streams,
        provider_http1: cli.provider_http1,
    };
    let run = |s: Scenario| cli.scenario == Scenario::All || cli.scenario == s;
    println!(
        "arbor-bench: {} cores, {} MiB RAM{}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        server::total_ram_mib(),
        if cli.quick { ", quick sizes" } else { "" }
    );
    for db in &cli.backends {
        if run(Scenario::P1) {
            scenarios::p1(&ctx, db.backend()).await?;
        }
    }
    if run(Scenario::P2) {
        scenarios::p2(&ctx).await?;
    }
    if run(Scenario::P3Replicas) && cli.backends.contains(&Db::Postgres) {
        replicas::p3_replicas(&ctx).await?;
    }
    for db in &cli.backends {
        if run(Scenario::P3) {
            scenarios::p3(&ctx, db.backend()).await?;
        }
        if run(Scenario::P4) {
            scenarios::p4(&ctx, db.backend()).await?;
        }
        if run(Scenario::P5) {
            scenarios::p5(&ctx, db.backend()).await?;
        }
    }
    Ok(())
}
