//! `arbor`: the server binary.

use clap::Parser;

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
