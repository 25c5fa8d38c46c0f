//! The composition root: the one place where concrete adapters meet the use cases.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use infra_db::SeaOrmStore;
use tracing_actix_web::TracingLogger;
use usecase::ports::{HealthCheck, RepoError};

use crate::config::Settings;

/// The storage adapter this binary uses.
pub type Store = SeaOrmStore;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] infra_db::ConnectError),
    /// Migrations failed for a reason other than an unreachable database.
    #[error("database migration failed")]
    Migration(#[source] RepoError),
    /// The listener could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Readiness: the schema is migrated and the database answers.
#[derive(Debug, Clone)]
pub struct Readiness {
    store: Store,
    migrated: Arc<AtomicBool>,
}

impl HealthCheck for Readiness {
    async fn ping(&self) -> Result<(), RepoError> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(RepoError::Unavailable("migrations not applied yet".into()));
        }
        self.store.ping().await
    }
}

/// Applies migrations, retrying with backoff while the database is unreachable.
async fn migrate_until_done(store: Store, migrated: Arc<AtomicBool>) {
    let mut delay = Duration::from_millis(250);
    loop {
        match store.migrate().await {
            Ok(()) => {
                migrated.store(true, Ordering::Release);
                tracing::info!("database schema is up to date");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not reachable; will retry migrations");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    store: Store,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the database, starts migrations, binds the listener (port 0 picks a free port).
    ///
    /// A PostgreSQL or MySQL server that is down does not stop start-up: the server answers
    /// `/health`, reports 503 on `/ready`, and becomes ready once the database is back.
    ///
    /// # Errors
    /// [`StartupError`] for a bad database URL, an SQLite file that cannot be opened, a
    /// failing migration, or a port that cannot be bound.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let store = SeaOrmStore::connect(&settings.db_config()).await?;
        tracing::info!(backend = store.backend_name(), "database configured");
        let migrated = Arc::new(AtomicBool::new(!settings.database.migrate_on_startup));
        if settings.database.migrate_on_startup {
            match store.migrate().await {
                Ok(()) => migrated.store(true, Ordering::Release),
                Err(RepoError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "database unreachable at start-up; serving without it until it answers");
                    tokio::spawn(migrate_until_done(store.clone(), Arc::clone(&migrated)));
                }
                Err(e) => return Err(StartupError::Migration(e)),
            }
        }
        let readiness = web::Data::new(Readiness {
            store: store.clone(),
            migrated,
        });

        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();
        let body_limit = settings.server.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(TracingLogger::default())
                .app_data(web::JsonConfig::default().limit(body_limit))
                .app_data(web::PayloadConfig::new(body_limit))
                .app_data(readiness.clone())
                .configure(api::configure::<Readiness>)
                .default_service(web::to(api::not_found))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                address: format!("port {port}"),
                source,
            })?
            .run();
        tracing::info!(port, "listening");
        Ok(Self {
            port,
            server,
            store,
        })
    }

    /// The bound port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server gracefully.
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or a stop through the handle), then closes the pools.
    ///
    /// # Errors
    /// An I/O error from the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.store.close().await;
        tracing::info!("stopped");
        result
    }
}
