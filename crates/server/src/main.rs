//! `arbor`: the server binary.

use clap::Parser;

/// mimalloc instead of the system allocator: under a burst of streams glibc's malloc and
/// free took ~15 % of the server's CPU (perf, P1 at 1,000 streams); see BENCHMARKS.md.
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
