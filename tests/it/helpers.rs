//! `spawn_app`: a fresh database, the whole application on a free port, a client.

use std::sync::Once;

use arbor::config::Settings;
use arbor::startup::Application;
use infra_db::testing::{Backend, TestDatabase};
use secrecy::SecretString;

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
    pub client: reqwest::Client,
    pub db: TestDatabase,
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
    settings.database.acquire_timeout_secs = 2;
    settings
}

impl TestApp {
    /// `None` when the backend's server is unreachable outside CI (the test is skipped).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        let db = TestDatabase::create(backend).await?;
        let settings = test_settings(db.url());
        Some(Self::spawn_with(settings, db).await)
    }

    pub async fn spawn_with(settings: Settings, db: TestDatabase) -> Self {
        ensure_crypto_provider();
        let app = Application::build(&settings).await.expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let server = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::new(),
            db,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server and drops the database.
    pub async fn finish(self) {
        self.server.stop(true).await;
        self.db.drop_database().await;
    }
}

/// Instantiates `async fn $test(backend: Backend)` once per backend.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(infra_db::testing::Backend::Sqlite).await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(infra_db::testing::Backend::Postgres).await; } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(infra_db::testing::Backend::MySql).await; } )* }
    };
}
pub(crate) use on_every_backend;
