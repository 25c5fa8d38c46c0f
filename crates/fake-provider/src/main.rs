//! `fake-provider [ADDRESS] [MODEL_ID…]`: serves the fake OpenAI-compatible provider until
//! Ctrl-C (default address 127.0.0.1:8089), so `make run` can be tried without an API key.
//! Model ids after the address join the catalogue (scripted ones such as
//! `fake/slow?tokens=40&token_ms=40` too), so a client that only offers catalogue models
//! can still pick them.

use std::io::Write;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let extra: Vec<String> = args.collect();
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
    if !extra.is_empty() {
        let mut models = fake_provider::default_models();
        models.extend(
            extra
                .iter()
                .map(|id| fake_provider::model_entry(id, id, "0.0000001", "0.0000002", 8_192)),
        );
        provider.set_models(models);
    }
    let _ = writeln!(
        std::io::stdout(),
        "fake provider on {} (stats: http://{}/_stats)",
        provider.base_url(),
        provider.address()
    );
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
