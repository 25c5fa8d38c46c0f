//! `spawn_app`: a fresh database, the whole application on a free port, a client.

use std::sync::Once;

use arbor::config::Settings;
use arbor::startup::Application;
use infra_db::testing::{Backend, TestDatabase};
use secrecy::SecretString;
use serde_json::Value;

/// reqwest is built without a bundled TLS provider (the workspace shares ring with sqlx).
pub fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A running server and its database.
pub struct TestApp {
    pub address: String,
    /// The provider this server talks to.
    pub fake: fake_provider::FakeProvider,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// The server's background work (sweeper, account poll).
    pub background: arbor::startup::Background,
    server: actix_web::dev::ServerHandle,
}

/// Settings for a test server on `url`: port 0, small pools, quiet logs.
pub fn test_settings(url: &str) -> Settings {
    let mut settings = Settings {
        env: "test".into(),
        ..Settings::default()
    };
    settings.server.port = 0;
    settings.server.workers = 2;
    settings.server.shutdown_timeout_secs = 1;
    settings.database.url = SecretString::from(url.to_owned());
    settings.database.max_connections = 8;
    settings.database.connect_timeout_secs = 2;
    settings.database.acquire_timeout_secs = 30;
    // Cheap hashing and generous limits; the tests that measure those set their own.
    settings.auth.argon2_memory_kib = 1_024;
    settings.auth.argon2_iterations = 1;
    settings.auth.hash_concurrency = 4;
    settings.auth.login_per_window = 10_000;
    settings.auth.register_per_window = 10_000;
    let r = &mut settings.rate_limits;
    for limit in [
        &mut r.send_per_minute,
        &mut r.create_chat_per_minute,
        &mut r.history_per_minute,
        &mut r.retry_per_minute,
        &mut r.general_per_minute,
        &mut r.anonymous_per_minute,
    ] {
        *limit = 1_000_000;
    }
    settings.llm.max_retries = 1;
    settings.llm.retry_base_delay_ms = 10;
    settings.llm.retry_max_delay_ms = 100;
    settings.generation.shutdown_grace_secs = 1;
    // Titles come from their own model, so tests can tell title calls from answers.
    settings.generation.title_model = TITLE_MODEL.to_owned();
    settings.generation.linger_secs = 5;
    settings
}

/// The model that writes titles in tests (unless a test sets its own `fake/title…`).
pub const TITLE_MODEL: &str = "fake/title-model";

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    /// `None` when the backend's server is unreachable outside CI (the test is skipped).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_tuned(backend, |_| {}).await
    }

    /// Starts the server on `backend` with the test settings as `tune` leaves them; `None` when
    /// the backend's server is not reachable.
    pub async fn spawn_tuned(backend: Backend, tune: impl FnOnce(&mut Settings)) -> Option<Self> {
        let db = TestDatabase::create(backend).await?;
        let mut settings = test_settings(db.url());
        tune(&mut settings);
        Some(Self::spawn_with(settings, db).await)
    }

    /// Starts the server with `settings`, pointed at a fresh fake provider.
    pub async fn spawn_with(settings: Settings, db: TestDatabase) -> Self {
        Self::spawn_with_faults(settings, db, |_| None).await
    }

    /// [`TestApp::spawn_with`] with a fault hook in the storage adapter, made from the
    /// fake provider (so a fault can wait for what the provider saw).
    pub async fn spawn_with_faults(
        mut settings: Settings,
        db: TestDatabase,
        faults: impl FnOnce(&fake_provider::FakeProvider) -> Option<infra_db::FaultInjector>,
    ) -> Self {
        ensure_crypto_provider();
        let fake = fake_provider::FakeProvider::start()
            .await
            .expect("fake provider starts");
        settings.llm.base_url = fake.base_url();
        let app = Application::build_with_faults(&settings, faults(&fake))
            .await
            .expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let server = app.handle();
        let background = app.background();
        tokio::spawn(app.run_until_stopped());
        Self {
            address,
            fake,
            client: reqwest::Client::new(),
            db,
            background,
            server,
        }
    }

    /// A new chat of `token`'s user; its uuid.
    pub async fn new_chat(&self, token: &str) -> String {
        let r = self
            .post_json_as("/api/v1/chats", token, &serde_json::json!({}))
            .await;
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["uuid"].as_str().unwrap().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Any request: `method` to `path`, as `token` when one is given, with a JSON body when one is
    /// given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method.parse().expect("an HTTP method"), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.call("GET", path, None, None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.call("POST", path, None, Some(body)).await
    }

    pub async fn post_json_as(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn put_json_as(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    pub async fn patch_json_as(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.call("PATCH", path, Some(token), Some(body)).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn delete_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Sends a message (`body`) to `chat` as `token`, without streaming.
    pub async fn send_message(&self, chat: &str, token: &str, body: &Value) -> reqwest::Response {
        let path = format!("/api/v1/chats/{chat}/messages");
        self.post_json_as(&path, token, body).await
    }

    /// Asks `question` in `chat` as `token`; the answered turn (the send must succeed).
    pub async fn ask(&self, chat: &str, token: &str, question: &str) -> Value {
        let sent = self
            .send_message(chat, token, &serde_json::json!({"content": question}))
            .await;
        assert_eq!(sent.status(), 201, "ask {question:?}");
        sent.json().await.expect("a JSON body")
    }

    /// Lists `ids` in the fake provider's catalogue beside the default models (each at
    /// $0.000001/$0.000002 a token, 8,192 tokens of context); a scripted id like
    /// `fake/x?tokens=3` also tells the fake how to answer.
    pub fn script_models(&self, ids: &[&str]) {
        let mut models = fake_provider::default_models();
        for id in ids {
            models.push(fake_provider::model_entry(
                id, id, "0.000001", "0.000002", 8_192,
            ));
        }
        self.fake.set_models(models);
    }

    /// Asks to cancel the generation running in `chat`, as `token`.
    pub async fn cancel_generation(&self, chat: &str, token: &str) -> reqwest::Response {
        let path = format!("/api/v1/chats/{chat}/generation/cancel");
        self.post_json_as(&path, token, &serde_json::json!({}))
            .await
    }

    /// A GET as `token` that must succeed with JSON; the body.
    pub async fn get_json_as(&self, path: &str, token: &str) -> Value {
        let response = self.get_as(path, token).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("a JSON body")
    }

    /// Registers `username` with [`PASSWORD`]; returns the user's uuid.
    pub async fn register(&self, username: &str) -> String {
        let response = self
            .post_json(
                "/api/v1/users",
                &serde_json::json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 201, "register {username}");
        let body: serde_json::Value = response.json().await.unwrap();
        body["uuid"].as_str().unwrap().to_owned()
    }

    /// Logs in with JSON; returns the token response.
    pub async fn login(&self, username: &str) -> serde_json::Value {
        let response = self
            .post_json(
                "/api/v1/auth/login",
                &serde_json::json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 200, "login {username}");
        response.json().await.unwrap()
    }

    /// Registers and logs in; returns an access token.
    pub async fn user_token(&self, username: &str) -> String {
        self.register(username).await;
        self.login(username).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The last request the provider received for an answer (title calls skipped).
    pub fn last_answer_request(&self) -> Value {
        self.fake
            .requests()
            .into_iter()
            .rev()
            .find(|r| !r["model"].as_str().unwrap_or("").starts_with("fake/title"))
            .expect("an answer request")
    }

    /// Stops the server and drops the database.
    pub async fn finish(self) {
        self.server.stop(true).await;
        self.db.drop_database().await;
    }
}

/// Waits (up to `limit`) until `check` holds.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends every request at once, each on a task of its own; their statuses, in order.
pub async fn at_once(requests: impl IntoIterator<Item = reqwest::RequestBuilder>) -> Vec<u16> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let response = request.send().await.expect("request sent");
                response.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(tasks.len());
    for task in tasks {
        statuses.push(task.await.expect("the request's task"));
    }
    statuses
}

/// The JSON body of a response (the request must answer JSON).
pub async fn json_of(response: impl Future<Output = reqwest::Response>) -> Value {
    response.await.json().await.expect("a JSON body")
}

/// Asserts the status and the error envelope's shape; returns the body.
pub async fn assert_envelope(response: reqwest::Response, status: u16, error_type: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("a JSON envelope");
    assert_eq!(body["error_type"], error_type, "{body}");
    assert!(body["user_message"].is_string(), "{body}");
    assert!(body["retry_available"].is_boolean(), "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    body
}

/// Requests for the malformed-input tables: each is JSON unless `typed` says otherwise.
pub mod probe {
    use std::fmt::Display;

    /// One request of a table.
    pub struct Probe {
        pub method: &'static str,
        pub path: String,
        pub content_type: &'static str,
        pub body: String,
    }

    fn probe(method: &'static str, path: impl Into<String>, body: impl Display) -> Probe {
        Probe {
            method,
            path: path.into(),
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    pub fn get(path: impl Into<String>) -> Probe {
        probe("GET", path, "")
    }

    pub fn delete(path: impl Into<String>) -> Probe {
        probe("DELETE", path, "")
    }

    pub fn post(path: impl Into<String>, body: impl Display) -> Probe {
        probe("POST", path, body)
    }

    pub fn put(path: impl Into<String>, body: impl Display) -> Probe {
        probe("PUT", path, body)
    }

    pub fn patch(path: impl Into<String>, body: impl Display) -> Probe {
        probe("PATCH", path, body)
    }

    impl Probe {
        /// The same request with another content type.
        pub fn typed(self, content_type: &'static str) -> Self {
            Self {
                content_type,
                ..self
            }
        }
    }
}

/// Sends each `(request, expected status)`, as `token` if there is one, and asserts the
/// status, that it is never a 5xx, and the envelope with the error type the status implies.
pub async fn assert_malformed_cases(
    app: &TestApp,
    token: Option<&str>,
    cases: impl IntoIterator<Item = (probe::Probe, u16)>,
) {
    for (probe, status) in cases {
        let probe::Probe {
            method,
            path,
            content_type,
            body,
        } = probe;
        let mut request = app
            .client
            .request(method.parse().expect("an HTTP method"), app.url(&path))
            .header("content-type", content_type)
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let got = response.status().as_u16();
        assert!(got < 500, "{method} {path} {body:.80} → {got}");
        assert_eq!(got, status, "{method} {path} {body:.80}");
        let kind = match status {
            400 => "malformed_request",
            401 => "unauthenticated",
            404 => "not_found",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "validation_error",
            other => panic!("no error type is documented for {other}"),
        };
        assert_envelope(response, status, kind).await;
    }
}

/// (prompt tokens, completion tokens, cost in picodollars, finish reason) of an answer.
pub async fn generation_of(app: &TestApp, message: &Value) -> (i64, i64, i64, Option<String>) {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let db = app.db.raw().await;
    let query = Query::select()
        .columns([
            "prompt_tokens",
            "completion_tokens",
            "cost_pico_usd",
            "finish_reason",
        ])
        .from("generations")
        .and_where(Expr::col("message_id").eq(uuid_value(message)))
        .to_owned();
    let row = db
        .query_one(&query)
        .await
        .unwrap()
        .expect("a generation record");
    let out = (
        row.try_get("", "prompt_tokens").unwrap(),
        row.try_get("", "completion_tokens").unwrap(),
        row.try_get("", "cost_pico_usd").unwrap(),
        row.try_get("", "finish_reason").unwrap(),
    );
    let _ = db.close().await;
    out
}

pub fn uuid_value(s: &Value) -> sea_orm::Value {
    sea_orm::prelude::Uuid::parse_str(s.as_str().unwrap())
        .unwrap()
        .into()
}
