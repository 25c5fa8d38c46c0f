//! The `arbor` command line, run as a real process.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "arbor-cli-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn arbor(config_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    support::command(config_dir, args, env, "")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let dir = temp_dir("check");
    let out = arbor(
        &dir,
        &["config", "check"],
        &[
            (
                "DATABASE_URL",
                "postgres://arbor:hunter2@db.internal:5432/arbor",
            ),
            ("ARBOR__SERVER__PORT", "9123"),
            ("ARBOR__METRICS__TOKEN", "scrape-token-s3cr3t"),
            (
                "ARBOR__AUTH__JWT_SECRET",
                "jwt-s3cr3t-0123456789abcdef0123456789",
            ),
            ("OPENROUTER_API_KEY", "sk-or-s3cr3t"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("9123"), "{stdout}");
    assert!(
        stdout.contains("postgres://arbor:***@db.internal:5432/arbor"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    for secret in ["scrape-token-s3cr3t", "jwt-s3cr3t", "sk-or-s3cr3t"] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
    }
    assert!(stdout.contains("[redacted]"), "{stdout}");
}

#[test]
fn a_bad_configuration_exits_non_zero_naming_the_key() {
    let dir = temp_dir("bad");
    std::fs::write(
        dir.join("default.toml"),
        "[database]\nmax_connections = 0\n",
    )
    .unwrap();
    let out = arbor(&dir, &["config", "check"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("database.max_connections"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(
        dir.join("default.toml"),
        "[rate_limits]\nsend_per_minute = 0\n",
    )
    .unwrap();
    let out = arbor(&dir, &["config", "check"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rate_limits.send_per_minute"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        dir.join("default.toml"),
        "[server]\ncors_allowed_origins = [\"*\"]\ncors_allow_credentials = true\n",
    )
    .unwrap();
    let out = arbor(&dir, &["config", "check"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("server.cors_allow_credentials"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(dir.join("default.toml")).unwrap();
    let out = arbor(&dir, &["serve"], &[("ARBOR__SERVER__PORT", "not-a-port")]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("port"), "{}", text(&out.stderr));
}

#[test]
fn migrate_up_then_status_on_a_new_sqlite_file() {
    let dir = temp_dir("migrate");
    let url = format!("sqlite://{}?mode=rwc", dir.join("db/arbor.db").display());
    let env = [("DATABASE_URL", url.as_str())];
    let up = arbor(&dir, &["migrate", "up"], &env);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(dir.join("db/arbor.db").exists());
    let status = arbor(&dir, &["migrate", "status"], &env);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let listing = text(&status.stdout);
    assert!(listing.contains("Applied"), "{listing}");
    assert!(
        listing.contains("m20261128_000001_initial_schema"),
        "{listing}"
    );

    let refused = arbor(&dir, &["migrate", "fresh"], &env);
    assert!(!refused.status.success(), "fresh needs --yes");
    let down = arbor(&dir, &["migrate", "down"], &env);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(text(&arbor(&dir, &["migrate", "status"], &env).stdout).contains("Pending"));
}

#[test]
fn migrating_an_unreachable_database_fails_clearly_without_leaking_the_password() {
    let dir = temp_dir("unreachable");
    // Port 9 (discard) has no PostgreSQL behind it.
    let out = arbor(
        &dir,
        &["migrate", "up"],
        &[
            ("DATABASE_URL", "postgres://arbor:hunter2@127.0.0.1:9/arbor"),
            ("ARBOR__DATABASE__CONNECT_TIMEOUT_SECS", "2"),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to the database at postgres://arbor:***@127.0.0.1:9/arbor"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// `arbor user …` with a password on standard input.
fn arbor_with_input(dir: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    support::command(dir, args, env, input)
}

#[test]
fn the_first_admin_comes_from_the_command_line() {
    let dir = temp_dir("admin");
    let url = format!("sqlite://{}?mode=rwc", dir.join("arbor.db").display());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("ARBOR__AUTH__ARGON2_MEMORY_KIB", "1024"),
        ("ARBOR__AUTH__ARGON2_ITERATIONS", "1"),
    ];
    let root = arbor_with_input(
        &dir,
        &["user", "create", "root", "--admin"],
        &env,
        "a long admin password\n",
    );
    assert!(root.status.success(), "{}", text(&root.stderr));
    assert!(
        text(&root.stdout).contains("admin"),
        "{}",
        text(&root.stdout)
    );
    let bob = arbor_with_input(&dir, &["user", "create", "bob"], &env, "bob's password 1\n");
    assert!(bob.status.success(), "{}", text(&bob.stderr));
    let promoted = arbor(&dir, &["user", "promote", "bob"], &env);
    assert!(promoted.status.success(), "{}", text(&promoted.stderr));
    assert!(text(&promoted.stdout).contains("bob is now admin"));
    let demoted = arbor(&dir, &["user", "promote", "bob", "--demote"], &env);
    assert!(text(&demoted.stdout).contains("bob is now user"));
    let list = text(&arbor(&dir, &["user", "list"], &env).stdout);
    let role_of = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
    };
    assert_eq!(role_of("root").as_deref(), Some("admin"), "{list}");
    assert_eq!(role_of("bob").as_deref(), Some("user"), "{list}");
    let nobody = arbor(&dir, &["user", "promote", "nobody"], &env);
    assert!(!nobody.status.success());
}
