//! # infra-db
//!
//! The sea-orm adapter: implements every repository port of `usecase` on SQLite,
//! PostgreSQL and MySQL/MariaDB with one code path.
//!
//! Guarantees (each proven by `tests/repositories.rs` on all three backends):
//! - every multi-row operation is one transaction;
//! - concurrent writers queue instead of failing: on SQLite, writes go through a
//!   single-connection writer pool in WAL mode and every write transaction starts
//!   `IMMEDIATE` (a deferred transaction that reads first cannot upgrade to a write lock and
//!   fails with `SQLITE_BUSY` at once); on PostgreSQL and MySQL the chat row is locked
//!   `FOR UPDATE` before its tree changes;
//! - counters are single `UPDATE … SET n = n + 1` statements.

mod admin;
mod analytics;
mod chats;
mod cluster;
pub use cluster::PgCoordination;
mod convert;
mod credentials;
mod entity;
mod error;
mod import;
mod models;
mod presets;
mod templates;
mod users;
mod writes;

#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use usecase::ports::{HealthCheck, RepoError};

/// How to reach the database.
#[derive(Clone)]
pub struct DbConfig {
    /// `sqlite://path?mode=rwc`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// Pool size (for SQLite: the reader pool; writes always use one connection).
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// Limit for opening one connection.
    pub connect_timeout: Duration,
    /// Limit for waiting for a free pooled connection.
    pub acquire_timeout: Duration,
    /// How long SQLite waits for a lock before answering busy.
    pub sqlite_busy_timeout: Duration,
    /// Do not connect until first use (lets a server start while the database is down).
    pub lazy: bool,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("lazy", &self.lazy)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `***`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no supported backend.
    #[error("unsupported database URL {0:?}: use sqlite://, postgres:// or mysql://")]
    UnsupportedUrl(String),
    /// The SQLite file's folder could not be created.
    #[error("cannot create the folder for the SQLite file {path:?}")]
    SqliteFolder {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database did not accept a connection.
    #[error("cannot connect to the database at {url}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// Why.
        #[source]
        source: DbErr,
    },
}

/// A hook that makes an operation fail at a named point (after its first statement), so
/// tests can prove that a failure half-way leaves nothing behind. Production never sets it.
pub type FaultInjector = Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

/// Every repository port, backed by sea-orm.
#[derive(Clone)]
pub struct SeaOrmStore {
    read: DatabaseConnection,
    write: DatabaseConnection,
    backend: DbBackend,
    faults: Option<FaultInjector>,
    /// SQLite's writer task (group commit of the hot writes); `None` elsewhere.
    group_commit: Option<writes::GroupCommit>,
    /// How many of the newest messages a query too short for the trigram index reads.
    short_search_window: u64,
}

impl fmt::Debug for SeaOrmStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeaOrmStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn sqlite_file_folder(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
}

impl SeaOrmStore {
    /// Opens the pools. With `lazy`, PostgreSQL and MySQL are not contacted until first use.
    ///
    /// # Errors
    /// [`ConnectError`] naming the problem; the password never appears in it.
    pub async fn connect(config: &DbConfig) -> Result<Self, ConnectError> {
        let url = config.url.as_str();
        let backend = if url.starts_with("sqlite:") {
            DbBackend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbBackend::Postgres
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            DbBackend::MySql
        } else {
            return Err(ConnectError::UnsupportedUrl(redact_url(url)));
        };
        let unreachable = |source| ConnectError::Unreachable {
            url: redact_url(url),
            source,
        };
        let options = |max: u32, min: u32| {
            let mut opt = ConnectOptions::new(url.replacen("mariadb://", "mysql://", 1));
            opt.max_connections(max)
                .min_connections(min)
                .connect_timeout(config.connect_timeout)
                .acquire_timeout(config.acquire_timeout)
                .sqlx_logging(false)
                .connect_lazy(config.lazy && backend != DbBackend::Sqlite);
            let busy = config.sqlite_busy_timeout;
            opt.map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(busy)
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
            opt
        };
        if backend == DbBackend::Sqlite {
            if let Some(folder) = sqlite_file_folder(url) {
                std::fs::create_dir_all(folder).map_err(|source| ConnectError::SqliteFolder {
                    path: folder.to_owned(),
                    source,
                })?;
            }
            // One writer connection: SQLite admits one writer at a time anyway, and queueing
            // in the pool is fair, where racing for the file lock is not.
            let write = Database::connect(options(1, 1))
                .await
                .map_err(unreachable)?;
            let read = Database::connect(options(config.max_connections.max(1), 1))
                .await
                .map_err(unreachable)?;
            return Ok(Self {
                read,
                write,
                backend,
                faults: None,
                group_commit: None,
                short_search_window: domain::limits::SEARCH_SHORT_WINDOW,
            }
            .with_group_commit());
        }
        let pool = Database::connect(options(
            config.max_connections.max(1),
            config.min_connections,
        ))
        .await
        .map_err(unreachable)?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            backend,
            faults: None,
            group_commit: None,
            short_search_window: domain::limits::SEARCH_SHORT_WINDOW,
        })
    }

    /// On SQLite, (re)starts the writer task that group-commits the hot writes, with this
    /// store's current hooks.
    fn with_group_commit(mut self) -> Self {
        if self.backend == DbBackend::Sqlite {
            let writer = Self {
                group_commit: None,
                ..self.clone()
            };
            self.group_commit = Some(writes::GroupCommit::start(writer));
        }
        self
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when the database cannot be reached, otherwise
    /// [`RepoError::Unexpected`].
    pub async fn migrate(&self) -> Result<(), RepoError> {
        Migrator::up(&self.write, None)
            .await
            .map_err(error::to_repo_error)
    }

    /// Counts every statement this store sends from now on (for tests that prove a constant
    /// number of queries). Call before sharing the store.
    pub fn count_queries(&mut self) -> Arc<std::sync::atomic::AtomicU64> {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for conn in [&mut self.read, &mut self.write] {
            let c = Arc::clone(&counter);
            conn.set_metric_callback(move |_| {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        if self.group_commit.is_some() {
            *self = Self {
                group_commit: None,
                ..self.clone()
            }
            .with_group_commit();
        }
        counter
    }

    /// Installs a fault hook (tests only).
    #[must_use]
    pub fn with_fault_injector(mut self, faults: FaultInjector) -> Self {
        self.faults = Some(faults);
        if self.group_commit.is_some() {
            self.group_commit = None;
            return self.with_group_commit();
        }
        self
    }

    /// Reads at most `window` of the newest messages for a search query too short for the
    /// trigram index (default [`domain::limits::SEARCH_SHORT_WINDOW`]; tests use a small one).
    #[must_use]
    pub fn with_short_search_window(mut self, window: u64) -> Self {
        // Only reads use it: the group-commit writer's copy need not change.
        self.short_search_window = window;
        self
    }

    /// `sqlite`, `postgres` or `mysql`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            _ => "mysql",
        }
    }

    /// Connections in use and idle per pool: `write` and `read` on SQLite, one `shared` pool
    /// on PostgreSQL and MySQL.
    #[must_use]
    pub fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        fn usage(db: &DatabaseConnection) -> (u32, u32) {
            let (size, idle) = match db.get_database_backend() {
                DbBackend::Sqlite => {
                    let p = db.get_sqlite_connection_pool();
                    (p.size(), p.num_idle())
                }
                DbBackend::Postgres => {
                    let p = db.get_postgres_connection_pool();
                    (p.size(), p.num_idle())
                }
                _ => {
                    let p = db.get_mysql_connection_pool();
                    (p.size(), p.num_idle())
                }
            };
            let idle = u32::try_from(idle).unwrap_or(u32::MAX);
            (size.saturating_sub(idle), idle)
        }
        let (w_used, w_idle) = usage(&self.write);
        if self.backend != DbBackend::Sqlite {
            return vec![("shared", w_used, w_idle)];
        }
        let (r_used, r_idle) = usage(&self.read);
        vec![("write", w_used, w_idle), ("read", r_used, r_idle)]
    }

    /// The connection writes go through, for the migration CLI.
    #[must_use]
    pub fn migration_connection(&self) -> &DatabaseConnection {
        &self.write
    }

    /// Closes the pools.
    pub async fn close(self) {
        let _ = self.read.close_by_ref().await;
        let _ = self.write.close_by_ref().await;
    }

    /// Fails the current operation if the fault hook says so.
    fn fault(&self, point: &'static str) -> Result<(), RepoError> {
        match &self.faults {
            Some(hook) if hook(point) => Err(RepoError::Unexpected(
                format!("injected fault at {point}").into(),
            )),
            _ => Ok(()),
        }
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite).
    async fn begin_write(&self) -> Result<DatabaseTransaction, RepoError> {
        let options = TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: (self.backend == DbBackend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
        };
        self.write
            .begin_with_options(options)
            .await
            .map_err(error::to_repo_error)
    }

    fn locks_rows(&self) -> bool {
        self.backend != DbBackend::Sqlite
    }

    /// The rows of a raw `sql` read with bound `values` (the aggregates), on the read pool.
    async fn read_rows(
        &self,
        sql: String,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>, RepoError> {
        use sea_orm::ConnectionTrait;
        self.read
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                self.backend,
                sql,
                values,
            ))
            .await
            .map_err(error::to_repo_error)
    }
}

impl HealthCheck for SeaOrmStore {
    async fn ping(&self) -> Result<(), RepoError> {
        self.read
            .ping()
            .await
            .map_err(|e| match error::to_repo_error(e) {
                RepoError::Unexpected(e) => RepoError::Unavailable(e),
                other => other,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://arbor:s3cret@db:5432/arbor"),
            "postgres://arbor:***@db:5432/arbor"
        );
        assert_eq!(
            redact_url("postgres://arbor@db/arbor"),
            "postgres://arbor@db/arbor"
        );
        assert_eq!(
            redact_url("sqlite://data/arbor.db"),
            "sqlite://data/arbor.db"
        );
    }

    #[test]
    fn the_sqlite_folder_is_found_in_the_url() {
        assert_eq!(
            sqlite_file_folder("sqlite://data/arbor.db?mode=rwc"),
            Some("data")
        );
        assert_eq!(sqlite_file_folder("sqlite:arbor.db"), None);
        assert_eq!(sqlite_file_folder("sqlite::memory:"), None);
    }
}
