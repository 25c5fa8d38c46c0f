//! Logging: `tracing-subscriber` in pretty or JSON form.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber once, writing to standard output (the server's log
/// stream); later calls (tests) are no-ops.
pub fn init(settings: &LogSettings) {
    install(settings, false);
}

/// As [`init`], writing to standard error: for commands whose standard output is their
/// result.
pub fn init_for_command(settings: &LogSettings) {
    install(settings, true);
}

fn install(settings: &LogSettings, stderr: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
