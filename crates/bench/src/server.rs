//! The system under test: the `arbor` binary as a child process, tuned so that only the
//! scenario's own bound matters (rate limits off, generous caps, cheap password hashing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `arbor serve`.
pub struct Arbor {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _config_dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Arbor {
    /// Starts the binary on `database_url` with the provider at `provider`, plus `extra`
    /// environment, and waits until it is ready.
    pub async fn start(
        bin: &str,
        database_url: &str,
        provider: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = fake_provider::free_port()?;
        let dir = std::env::temp_dir().join(format!("arbor-bench-{port}"));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config-dir")
            .arg(&dir)
            .arg("serve")
            .env("ARBOR_ENV", "test")
            .env("DATABASE_URL", database_url)
            .env("ARBOR__SERVER__PORT", port.to_string())
            .env("ARBOR__SERVER__BODY_LIMIT_BYTES", "1048576")
            .env("ARBOR__DATABASE__MAX_CONNECTIONS", "16")
            .env("ARBOR__LLM__BASE_URL", provider)
            .env("ARBOR__LLM__MAX_CONCURRENT_REQUESTS", "20000")
            .env("ARBOR__LLM__POOL_MAX_IDLE_PER_HOST", "256")
            .env("ARBOR__LLM__QUEUE_TIMEOUT_SECS", "60")
            .env("ARBOR__AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("ARBOR__AUTH__ARGON2_ITERATIONS", "1")
            .env("ARBOR__AUTH__REGISTER_PER_WINDOW", "1000000")
            .env("ARBOR__AUTH__LOGIN_PER_WINDOW", "1000000")
            .env("ARBOR__RATE_LIMITS__ENABLED", "false")
            .env("ARBOR__GENERATION__PER_USER_LIMIT", "100000")
            .env("ARBOR__GENERATION__GLOBAL_LIMIT", "100000")
            .env("ARBOR__GENERATION__TITLES", "false")
            .env("ARBOR__LOG__LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {bin} (run `cargo build --release -p arbor`)"))?;
        let arbor = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _config_dir: TempDir(dir),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client
                .get(format!("{}/api/v1/ready", arbor.base))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(arbor);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("arbor did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU time the server has used so far (user + system), in seconds, from
    /// `/proc/<pid>/stat` (fields 14 and 15, in Linux's fixed 100 Hz user ticks).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The command name (field 2) may hold spaces; count from the closing parenthesis.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After ')': state is index 0, so utime (field 14) is 11 and stime (15) is 12.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Resident set size now and at its peak, in MiB (Linux `/proc`).
    pub fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Arbor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Physical memory of the machine, in MiB.
pub fn total_ram_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
