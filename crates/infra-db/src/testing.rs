//! Throw-away databases for tests (feature `testing`): a fresh SQLite file, or a fresh
//! database on the local PostgreSQL or MariaDB/MySQL server, one per test.
//!
//! Servers come from `ARBOR_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `ARBOR_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/mysql`). When a server is unreachable the test is skipped
//! with a loud message, except under `CI`, where that is a failure.

#![expect(
    clippy::expect_used,
    reason = "test support: a setup that fails must abort the test with its reason"
)]

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};

use crate::{DbConfig, SeaOrmStore};

/// The value of a test fixture that may be unavailable (`TestDatabase::create`, or anything
/// built on it that answers `Option`), or a return from the calling test — skipped, as the
/// fixture already said loudly — when it is `None`.
#[macro_export]
macro_rules! or_skip {
    ($fixture:expr) => {
        match $fixture.await {
            Some(value) => value,
            None => return,
        }
    };
}

/// Turns each named `async fn(Backend)` into three tests, one per database server, in modules
/// `sqlite`, `postgres` and `mysql` (so a backend's tests can be picked by a filter). The
/// calling crate needs `tokio` with its test macro.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::testing::Backend::Sqlite).await; } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::testing::Backend::Postgres).await; } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::testing::Backend::MySql).await; } )* }
    };
}

/// A database server kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary folder.
    Sqlite,
    /// The local PostgreSQL server.
    Postgres,
    /// The local MariaDB/MySQL server.
    MySql,
}

impl Backend {
    /// Every backend, in the order suites run.
    pub const ALL: [Self; 3] = [Self::Sqlite, Self::Postgres, Self::MySql];

    /// Lower-case name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    fn admin_url(self) -> Option<String> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(
                std::env::var("ARBOR_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
            ),
            Self::MySql => Some(
                std::env::var("ARBOR_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned()),
            ),
        }
    }
}

/// A database that exists for one test. [`TestDatabase::drop_database`] removes it; a test
/// that panics before (or forgets) is cleaned up when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    url: String,
    admin_url: Option<String>,
    name: String,
    dir: Option<PathBuf>,
    dropped: bool,
}

fn unreachable_server(backend: Backend, why: &dyn std::fmt::Display) -> Option<TestDatabase> {
    let message = format!(
        "{} server unreachable ({why}); start it (see README) or set ARBOR_TEST_{}_URL",
        backend.name(),
        backend.name().to_uppercase()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "CI requires every backend: {message}"
    );
    eprintln!("\n!!!!! SKIPPED on {}: {message} !!!!!\n", backend.name());
    None
}

/// The admin URL with its database name replaced (admin URLs always name one).
fn with_database(admin_url: &str, name: &str) -> String {
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{name}")
}

impl TestDatabase {
    /// Creates an empty database; `None` when the server is unreachable outside CI.
    ///
    /// # Panics
    /// Under `CI`, when the server is unreachable; and when the server refuses to create a
    /// database.
    pub async fn create(backend: Backend) -> Option<Self> {
        let name = format!("arbor_test_{}", uuid::Uuid::now_v7().simple());
        let Some(admin_url) = backend.admin_url() else {
            let dir = std::env::temp_dir().join(&name);
            std::fs::create_dir_all(&dir).ok()?;
            let url = format!("sqlite://{}?mode=rwc", dir.join("arbor.db").display());
            return Some(Self {
                backend,
                url,
                admin_url: None,
                name,
                dir: Some(dir),
                dropped: false,
            });
        };
        let admin = match Database::connect(admin_url.as_str()).await {
            Ok(admin) => admin,
            Err(e) => return unreachable_server(backend, &e),
        };
        let create = match backend {
            Backend::MySql => {
                format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            _ => format!("CREATE DATABASE \"{name}\""),
        };
        if let Err(e) = admin.execute_unprepared(&create).await {
            panic!("cannot create test database {name}: {e}");
        }
        let _ = admin.close().await;
        Some(Self {
            backend,
            url: with_database(&admin_url, &name),
            admin_url: Some(admin_url),
            name,
            dir: None,
            dropped: false,
        })
    }

    /// Which backend.
    #[must_use]
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where it lives: the database's name on its server, or the SQLite file's folder.
    #[must_use]
    pub fn location(&self) -> (String, Option<PathBuf>) {
        (self.name.clone(), self.dir.clone())
    }

    /// Whether the database at `location` (see [`TestDatabase::location`]) still exists.
    ///
    /// # Panics
    /// When the server cannot answer.
    pub async fn exists(backend: Backend, location: &(String, Option<PathBuf>)) -> bool {
        if let Some(dir) = &location.1 {
            return dir.exists();
        }
        let admin = Database::connect(backend.admin_url().expect("a server backend").as_str())
            .await
            .expect("the admin connection");
        let sql = match backend {
            Backend::MySql => format!(
                "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{}'",
                location.0
            ),
            _ => format!(
                "SELECT COUNT(*) AS n FROM pg_database WHERE datname = '{}'",
                location.0
            ),
        };
        let row = admin
            .query_one_raw(Statement::from_string(admin.get_database_backend(), sql))
            .await
            .expect("the catalogue answers")
            .expect("a count row");
        let n: i64 = row.try_get("", "n").expect("a count");
        let _ = admin.close().await;
        n > 0
    }

    /// A configuration for this database with `pool` connections.
    #[must_use]
    pub fn config(&self, pool: u32) -> DbConfig {
        DbConfig {
            url: self.url.clone(),
            max_connections: pool,
            min_connections: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(60),
            sqlite_busy_timeout: Duration::from_secs(30),
            lazy: false,
        }
    }

    /// A migrated store on this database.
    ///
    /// # Panics
    /// When it cannot connect or migrate.
    pub async fn store(&self) -> SeaOrmStore {
        let store = SeaOrmStore::connect(&self.config(16))
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        store
    }

    /// A plain connection, for assertions that look at rows directly.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn raw(&self) -> DatabaseConnection {
        Database::connect(self.url.as_str())
            .await
            .expect("raw connection to the test database")
    }

    /// `SELECT COUNT(*) FROM table [WHERE column = value]`.
    ///
    /// # Panics
    /// When the query fails.
    pub async fn count(&self, table: &'static str, filter: Option<(&'static str, Value)>) -> i64 {
        let mut query = Query::select();
        query.expr_as(Expr::col(Asterisk).count(), "n").from(table);
        if let Some((column, value)) = filter {
            query.and_where(Expr::col(column).eq(value));
        }
        let db = self.raw().await;
        let row = db
            .query_one(&query)
            .await
            .expect("count query")
            .expect("count row");
        let n: i64 = row.try_get("", "n").expect("count value");
        let _ = db.close().await;
        n
    }

    /// Runs a raw SQL statement that returns nothing.
    ///
    /// # Panics
    /// When it fails.
    pub async fn execute(&self, sql: &str) {
        let db = self.raw().await;
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .expect("raw statement");
        let _ = db.close().await;
    }

    /// The sea-orm backend.
    #[must_use]
    pub const fn db_backend(&self) -> DbBackend {
        match self.backend {
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::Postgres => DbBackend::Postgres,
            Backend::MySql => DbBackend::MySql,
        }
    }

    /// Drops the database (or deletes the SQLite folder).
    pub async fn drop_database(mut self) {
        self.dropped = true;
        remove(
            self.backend,
            self.admin_url.clone(),
            self.name.clone(),
            self.dir.clone(),
        )
        .await;
    }
}

async fn remove(backend: Backend, admin_url: Option<String>, name: String, dir: Option<PathBuf>) {
    if let Some(dir) = &dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(admin_url) = &admin_url
        && let Ok(admin) = Database::connect(admin_url.as_str()).await
    {
        let sql = match backend {
            Backend::MySql => format!("DROP DATABASE IF EXISTS `{name}`"),
            _ => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        };
        let _ = admin.execute_unprepared(&sql).await;
        let _ = admin.close().await;
    }
}

impl Drop for TestDatabase {
    /// A test that panicked never reached `drop_database`: remove the database anyway, on a
    /// thread of its own (a destructor cannot wait on the test's runtime).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (backend, admin_url, name, dir) = (
            self.backend,
            self.admin_url.take(),
            std::mem::take(&mut self.name),
            self.dir.take(),
        );
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(remove(backend, admin_url, name, dir));
            }
        });
        let _ = cleanup.join();
    }
}
