//! The real `arbor` binary as a child process, shared by the process-level test suites
//! (`cli`, `lifecycle`, `reliability`, `replicas`): a server (`Arbor`) and one-shot commands
//! (`command`, `command_on`).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra_db::testing::TestDatabase;
use serde_json::{Value, json};

/// Runs `arbor --config-dir <dir> <args>` with `env` on top of a clean environment (no
/// `DATABASE_URL` or `ARBOR_ENV` inherited, no colours) and `stdin` written to it.
pub fn command(
    config_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.arg("--config-dir")
        .arg(config_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("ARBOR_ENV")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("arbor runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`command`] on `db` (cheap password hashing); (success, stdout, stderr).
pub fn command_on(db: &TestDatabase, args: &[&str], stdin: &str) -> (bool, String, String) {
    let config_dir = std::env::temp_dir().join("arbor-test-commands");
    std::fs::create_dir_all(&config_dir).unwrap();
    let out = command(
        &config_dir,
        args,
        &[
            ("DATABASE_URL", db.url()),
            ("ARBOR__AUTH__ARGON2_MEMORY_KIB", "1024"),
            ("ARBOR__AUTH__ARGON2_ITERATIONS", "1"),
        ],
        stdin,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `arbor serve` process.
pub struct Arbor {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

impl Arbor {
    pub async fn start(db: &TestDatabase, provider: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logging(db, provider, env, None).await
    }

    /// As [`Arbor::start`], writing its JSON log (level info) to `log` when given.
    pub async fn start_logging(
        db: &TestDatabase,
        provider: &str,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let port = fake_provider::free_port().unwrap();
        let config_dir = std::env::temp_dir().join(format!("arbor-lifecycle-{port}"));
        std::fs::create_dir_all(&config_dir).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
        cmd.arg("--config-dir")
            .arg(&config_dir)
            .arg("serve")
            .env_remove("ARBOR_ENV")
            .env("DATABASE_URL", db.url())
            .env("ARBOR__SERVER__PORT", port.to_string())
            .env("ARBOR__SERVER__WORKERS", "2")
            .env("ARBOR__LLM__BASE_URL", provider)
            .env("ARBOR__AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("ARBOR__AUTH__ARGON2_ITERATIONS", "1")
            .env("ARBOR__AUTH__REGISTER_PER_WINDOW", "1000")
            .env("ARBOR__AUTH__LOGIN_PER_WINDOW", "1000")
            .env("ARBOR__GENERATION__TITLES", "false")
            .env("ARBOR__LOG__LEVEL", "warn")
            .stderr(Stdio::null());
        // ARBOR_TEST_LOGS=dir keeps each process's log (dir/arbor-<port>.log).
        match (log, std::env::var_os("ARBOR_TEST_LOGS")) {
            (Some(path), _) => {
                cmd.stdout(std::fs::File::create(path).unwrap())
                    .env("ARBOR__LOG__LEVEL", "info")
                    .env("ARBOR__LOG__FORMAT", "json");
            }
            (None, Some(dir)) => {
                let file = std::fs::File::create(
                    std::path::Path::new(&dir).join(format!("arbor-{port}.log")),
                )
                .unwrap();
                cmd.stdout(file).env("ARBOR__LOG__LEVEL", "info");
            }
            (None, None) => {
                cmd.stdout(Stdio::null());
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("arbor starts");
        // The client's TLS needs a provider installed, even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let arbor = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = arbor.client.get(arbor.url("/api/v1/ready")).send().await
                && r.status() == 200
            {
                return arbor;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "arbor never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// A new chat of `token`'s user; its uuid.
    pub async fn new_chat(&self, token: &str) -> String {
        let chat: Value = self
            .post("/api/v1/chats", Some(token), &json!({}))
            .await
            .json()
            .await
            .unwrap();
        chat["uuid"].as_str().unwrap().to_owned()
    }

    /// Starts a streamed answer to a question in `chat` (asserting it started).
    pub async fn stream(&self, token: &str, chat: &str, model: &str) -> reqwest::Response {
        let response = self
            .post(
                &format!("/api/v1/chats/{chat}/messages/stream"),
                Some(token),
                &json!({"content": "tell me everything", "model_id": model}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response
    }

    /// Message `uuid` of `chat`, as the complete tree holds it.
    pub async fn stored(&self, token: &str, chat: &str, uuid: &str) -> Value {
        let all = self
            .get(&format!("/api/v1/chats/{chat}/complete"), token)
            .await;
        all["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["uuid"] == uuid)
            .cloned()
            .unwrap_or_else(|| panic!("no message {uuid} in {all}"))
    }

    /// Cancels `chat`'s generation; the response.
    pub async fn cancel(&self, token: &str, chat: &str) -> reqwest::Response {
        self.post(
            &format!("/api/v1/chats/{chat}/generation/cancel"),
            Some(token),
            &json!({}),
        )
        .await
    }

    /// The status of a login with these credentials.
    pub async fn login_status(&self, name: &str, password: &str) -> u16 {
        self.post(
            "/api/v1/auth/login",
            None,
            &json!({"username": name, "password": password}),
        )
        .await
        .status()
        .as_u16()
    }

    /// A user's access token.
    pub async fn token_with(&self, name: &str, password: &str) -> String {
        let r: Value = self
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": name, "password": password}),
            )
            .await
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_owned()
    }

    /// A user's token, registering them first when `register`.
    pub async fn token(&self, name: &str, register: bool) -> String {
        let credentials = json!({"username": name, "password": "correct horse battery"});
        if register {
            assert_eq!(
                self.post("/api/v1/users", None, &credentials)
                    .await
                    .status(),
                201
            );
        }
        let r: Value = self
            .post("/api/v1/auth/login", None, &credentials)
            .await
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_owned()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < limit, "arbor did not exit in {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Arbor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Arbor {
    /// Resident set size in MiB (Linux `/proc`).
    pub fn rss_mib(&self) -> f64 {
        usecase::testing::resident_mib(Some(self.child.id()))
    }
}

/// Rows that would betray a half-written write.
pub async fn integrity_violations(db: &TestDatabase) -> Vec<(String, i64)> {
    use sea_orm::ConnectionTrait;
    let conn = db.raw().await;
    let checks = [
        (
            "messages still streaming",
            "SELECT COUNT(*) AS n FROM messages WHERE status = 'streaming'",
        ),
        (
            "messages without a parent that are not a root",
            "SELECT COUNT(*) AS n FROM messages m WHERE m.parent_id IS NULL \
             AND m.id NOT IN (SELECT root_id FROM chats)",
        ),
        (
            "chats whose leaf is missing",
            "SELECT COUNT(*) AS n FROM chats c WHERE c.current_leaf_id NOT IN \
             (SELECT id FROM messages)",
        ),
        (
            "chats whose message count is wrong",
            "SELECT COUNT(*) AS n FROM chats c WHERE c.message_count <> \
             (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id)",
        ),
        (
            "generation records of no complete answer",
            "SELECT COUNT(*) AS n FROM generations g WHERE g.message_id NOT IN \
             (SELECT id FROM messages WHERE status = 'complete')",
        ),
    ];
    let mut out = Vec::new();
    for (name, sql) in checks {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                sql,
            ))
            .await
            .unwrap()
            .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        if n != 0 {
            out.push((name.to_owned(), n));
        }
    }
    let _ = conn.close().await;
    out
}

/// The ids of the assistant messages in the database (only complete ones when `complete`).
pub async fn assistant_ids(db: &TestDatabase, complete: bool) -> std::collections::HashSet<String> {
    use sea_orm::ConnectionTrait;
    let conn = db.raw().await;
    let sql = if complete {
        "SELECT id FROM messages WHERE role = 'assistant' AND status = 'complete'"
    } else {
        "SELECT id FROM messages WHERE role = 'assistant'"
    };
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            sql,
        ))
        .await
        .unwrap();
    let _ = conn.close().await;
    rows.iter()
        .map(|r| {
            r.try_get::<sea_orm::prelude::Uuid>("", "id")
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The fake provider, with `models` added to its catalogue.
pub async fn provider(models: &[&str]) -> fake_provider::FakeProvider {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = fake_provider::FakeProvider::start().await.unwrap();
    let mut all = fake_provider::default_models();
    for id in models {
        all.push(fake_provider::model_entry(
            id, id, "0.000001", "0.000002", 8_192,
        ));
    }
    fake.set_models(all);
    fake
}
