//! `arbor`: the server binary.

use clap::Parser;

/// jemalloc instead of the system allocator: under a burst of streams glibc's malloc and
/// free took ~15 % of the server's CPU (perf, P1 at 1,000 streams). It also serves the C code
/// (SQLite) and, with its background thread and the decay times set in `.cargo/config.toml`,
/// gives freed memory back to the system within about a second, also when the server is idle
/// after a burst (mimalloc purges only while the process allocates). BENCHMARKS.md compares
/// them (P2, P3).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// mimalloc, for comparison (`--no-default-features --features mimalloc`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = arbor::cli::Cli::parse();
    match arbor::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line; no secret is ever part of it.
            eprintln!("arbor: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
