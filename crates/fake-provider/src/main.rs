//! `fake-provider [ADDRESS]`: serves the fake OpenAI-compatible provider until Ctrl-C
//! (default address 127.0.0.1:8089), so `make run` can be tried without an API key.

use std::io::Write;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let Ok(address) = address.parse() else {
        eprintln!("fake-provider: not a socket address: {address}");
        return std::process::ExitCode::FAILURE;
    };
    let provider = match fake_provider::FakeProvider::bind(address).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fake-provider: cannot listen on {address}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = writeln!(
        std::io::stdout(),
        "fake provider on {} (stats: http://{}/_stats)",
        provider.base_url(),
        provider.address()
    );
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
