//! The composition root: the one place where concrete adapters meet the use cases.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use infra_db::SeaOrmStore;
use infra_llm::ProviderRouter;
use tracing_actix_web::TracingLogger;
use usecase::analytics::AnalyticsService;
use usecase::auth::{AuthPolicy, AuthService};
use usecase::catalog::CatalogService;
use usecase::chat::ChatService;
use usecase::generation::Generations;
use usecase::ports::{ChatRepository, Clock, HealthCheck, RepoError};
use usecase::preset::PresetService;
use usecase::template::TemplateService;

use crate::adapters::{JwtCodec, SystemClock, UuidV7Ids};
use crate::config::Settings;
use crate::password::Argon2Hasher;

/// The storage adapter this binary uses.
pub type Store = SeaOrmStore;
/// The auth use case with its concrete adapters.
pub type Auth = AuthService<Store, Argon2Hasher, JwtCodec, SystemClock, UuidV7Ids>;
/// The model catalogue with its concrete adapters.
pub type Catalog = CatalogService<Store, ProviderRouter, SystemClock>;
/// Presets with their concrete adapters.
pub type Presets = PresetService<Store, Catalog, SystemClock, UuidV7Ids>;
/// Templates with their concrete adapters.
pub type Templates = TemplateService<Store, SystemClock, UuidV7Ids>;
/// Analytics with their concrete adapters.
pub type Analytics = AnalyticsService<Store, SystemClock>;
/// Conversations with their concrete adapters.
pub type Chats = ChatService<Store, ProviderRouter, Catalog, SystemClock, UuidV7Ids>;
/// The import service.
pub type Imports = usecase::import::ImportService<Store, infra_import::ChatGptExports>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] infra_db::ConnectError),
    /// Migrations failed for a reason other than an unreachable database.
    #[error("database migration failed")]
    Migration(#[source] RepoError),
    /// The password hasher or token codec rejected its configuration.
    #[error("invalid auth configuration")]
    Crypto(#[from] usecase::auth::CryptoError),
    /// A configuration value the settings check let through is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The provider client could not be built.
    #[error("invalid provider configuration")]
    Llm(#[from] infra_llm::BuildError),
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

/// The account service with its production adapters (also used by `arbor user …`).
///
/// # Errors
/// [`StartupError::Crypto`] for unusable hashing or token settings.
pub fn auth_service(settings: &Settings, store: Store) -> Result<Auth, StartupError> {
    let a = &settings.auth;
    let concurrency = if a.hash_concurrency == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    } else {
        a.hash_concurrency
    };
    Ok(Auth::new(
        store,
        Argon2Hasher::new(
            a.argon2_memory_kib,
            a.argon2_iterations,
            a.argon2_parallelism,
            concurrency,
        )?,
        JwtCodec::new(&a.jwt_secret, Duration::from_secs(a.access_token_ttl_secs))?,
        SystemClock,
        UuidV7Ids,
        AuthPolicy {
            refresh_ttl_secs: i64::try_from(a.refresh_token_ttl_secs).unwrap_or(i64::MAX),
            registration: settings
                .accounts
                .registration()
                .map_err(|e| StartupError::Config(e.to_string()))?,
        },
    ))
}

/// The process-wide Prometheus recorder (installed once; every server in the process shares
/// it).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
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

/// Marks `interrupted` the answers left `streaming` by a process that died: all of them
/// created before `cutoff`.
async fn recover_streaming(store: &Store, cutoff: domain::Timestamp) {
    match store.interrupt_streaming(cutoff, SystemClock.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            count = n,
            "answers left streaming by an earlier process marked interrupted"
        ),
        Err(e) => tracing::warn!(error = %e, "could not recover answers left streaming"),
    }
}

/// Every minute, marks `interrupted` the answers still `streaming` long after any
/// generation's deadline (their process died; with replicas, start-up recovery leaves them).
/// Keeps the account cache honest: every `every`, forgets the accounts changed and the keys
/// revoked anywhere (by any process) since the previous poll.
async fn poll_account_changes(auth: Arc<Auth>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match auth.sync_account_changes().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("account changes are polled again; the account cache is back");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "polling account changes failed; authentication reads accounts until it succeeds");
            }
            Err(_) => {}
        }
    }
}

async fn sweep_expired_streams(store: Store, deadline: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        recover_streaming(&store, expired_before(deadline)).await;
    }
}

/// Answers created before this are past any live generation's deadline (plus the margin to
/// save them): no process is still writing them.
fn expired_before(deadline: Duration) -> domain::Timestamp {
    let slack =
        i64::try_from((deadline + usecase::chat::SAVE_MARGIN).as_micros()).unwrap_or(i64::MAX);
    domain::Timestamp::from_unix_micros(SystemClock.now().as_unix_micros().saturating_sub(slack))
}

/// Applies migrations, retrying with backoff while the database is unreachable, then
/// recovers answers left streaming before `cutoff`.
async fn migrate_until_done(store: Store, migrated: Arc<AtomicBool>, cutoff: domain::Timestamp) {
    let mut delay = Duration::from_millis(250);
    loop {
        match store.migrate().await {
            Ok(()) => {
                recover_streaming(&store, cutoff).await;
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
    generations: Generations,
    grace: Duration,
    draining: web::Data<api::health::Draining>,
    background: Background,
}

/// The process's work besides requests and generations (migrations retried until the database
/// answers, the sweep of expired streams, the account-change poll): stopped with the server,
/// before its pool closes, so nothing uses a closed pool.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Background {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Stops every task and waits until each has ended.
    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Tasks still running.
    #[must_use]
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Migrates (or, with the database down, keeps migrating in the background), recovers
/// answers left `streaming`, and starts the sweep of expired streams. Returns the readiness
/// flag (set once migrated) and whether replicas coordinate through this database.
async fn prepare_database(
    settings: &Settings,
    store: &Store,
    background: &Background,
) -> Result<(Arc<AtomicBool>, bool), StartupError> {
    let migrated = Arc::new(AtomicBool::new(!settings.database.migrate_on_startup));
    let deadline = Duration::from_secs(settings.generation.deadline_secs);
    let clustered = settings.cluster.mode == crate::config::ClusterMode::Auto
        && store.backend_name() == "postgres";
    let cutoff = match settings.generation.startup_recovery {
        // With replicas, the heartbeat recovers what dead replicas left (and the sweep
        // what no lease covers); alone, everything left streaming is this process's.
        crate::config::StartupRecovery::Lease if clustered => expired_before(deadline),
        crate::config::StartupRecovery::Lease | crate::config::StartupRecovery::All => {
            SystemClock.now()
        }
        crate::config::StartupRecovery::Expired => expired_before(deadline),
    };
    if settings.database.migrate_on_startup {
        match store.migrate().await {
            Ok(()) => {
                recover_streaming(store, cutoff).await;
                migrated.store(true, Ordering::Release);
            }
            Err(RepoError::Unavailable(e)) => {
                tracing::warn!(error = %e, "database unreachable at start-up; serving without it until it answers");
                background.spawn(migrate_until_done(
                    store.clone(),
                    Arc::clone(&migrated),
                    cutoff,
                ));
            }
            Err(e) => return Err(StartupError::Migration(e)),
        }
    } else {
        recover_streaming(store, cutoff).await;
    }
    background.spawn(sweep_expired_streams(store.clone(), deadline));
    Ok((migrated, clustered))
}

/// With replicas: this process's place among them (its heartbeat and inbox run from here on).
async fn join_cluster(
    settings: &Settings,
    store: &Store,
    generations: &Generations,
    clustered: bool,
) -> Option<Arc<dyn usecase::cluster::Coordination>> {
    if clustered {
        let timing = settings.lease_timing();
        infra_db::PgCoordination::join(store, timing)
            .await
            .map(|(port, inbox)| {
                let port: Arc<dyn usecase::cluster::Coordination> = Arc::new(port);
                generations.join_cluster(Arc::clone(&port), timing, inbox);
                tracing::info!(replica = %format!("{:032x}", port.replica().0), "coordinating with other replicas through PostgreSQL");
                port
            })
    } else {
        None
    }
}

/// The auth service, with its account cache and the poll that keeps it current when one
/// is configured.
fn cached_auth(
    settings: &Settings,
    store: &Store,
    background: &Background,
) -> Result<web::Data<Auth>, StartupError> {
    let a = &settings.auth;
    let auth = auth_service(settings, store.clone())?;
    Ok(if a.account_cache_capacity > 0 {
        let poll = Duration::from_millis(a.revocation_poll_ms);
        let auth = auth.with_account_cache(usecase::auth::AccountCacheConfig {
            capacity: a.account_cache_capacity,
            poll_interval_micros: i64::try_from(poll.as_micros()).unwrap_or(i64::MAX),
            max_age_micros: 60_000_000,
        });
        let auth = web::Data::new(auth);
        background.spawn(poll_account_changes(auth.clone().into_inner(), poll));
        auth
    } else {
        web::Data::new(auth)
    })
}

/// What the chat service falls back on: models, titles, default quotas, text limits.
fn chat_defaults(settings: &Settings) -> Result<usecase::chat::ChatDefaults, StartupError> {
    let default_model = domain::ModelId::parse(settings.llm.default_model.as_str())
        .map_err(|e| StartupError::Config(e.to_string()))?;
    Ok(usecase::chat::ChatDefaults {
        model: default_model,
        provider: settings.llm.provider_name.clone(),
        titles: settings.generation.titles,
        title_model: (!settings.generation.title_model.is_empty())
            .then(|| domain::ModelId::parse(settings.generation.title_model.as_str()))
            .transpose()
            .map_err(|e| StartupError::Config(e.to_string()))?,
        quota: settings
            .accounts
            .quota()
            .map_err(|e| StartupError::Config(e.to_string()))?,
        input: settings
            .limits
            .input()
            .map_err(|e| StartupError::Config(e.to_string()))?,
    })
}

/// `GET /metrics`: the Prometheus registry, with the levels (pools, generations running,
/// provider calls in flight, cache weight) sampled at each scrape.
fn metrics_endpoint(
    settings: &Settings,
    store: &Store,
    chats: &web::Data<Chats>,
    generations: &Generations,
    llm: &infra_llm::ProviderRouter,
) -> web::Data<api::telemetry::MetricsEndpoint> {
    if settings.metrics.enabled {
        let handle = prometheus();
        let (store, chats, generations) = (store.clone(), chats.clone(), generations.clone());
        let llm_in_flight = llm.clone();
        web::Data::new(api::telemetry::MetricsEndpoint::new(
            move || {
                // Sampled at scrape time: levels, not events.
                for (pool, used, idle) in store.pool_usage() {
                    metrics::gauge!("arbor_db_pool_connections", "pool" => pool, "state" => "in_use")
                        .set(f64::from(used));
                    metrics::gauge!("arbor_db_pool_connections", "pool" => pool, "state" => "idle")
                        .set(f64::from(idle));
                }
                metrics::gauge!("arbor_generations_running").set(generations.running() as f64);
                metrics::gauge!("arbor_provider_in_flight").set(llm_in_flight.in_flight() as f64);
                metrics::gauge!("arbor_cache_bytes", "cache" => "messages")
                    .set(chats.cache_stats().weight as f64);
                handle.as_ref().map(|h| h.render()).unwrap_or_default()
            },
            Some(secrecy::ExposeSecret::expose_secret(&settings.metrics.token).to_owned()),
        ))
    } else {
        web::Data::new(api::telemetry::MetricsEndpoint::disabled())
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
        Self::build_with_faults(settings, None).await
    }

    /// [`Application::build`] with a fault hook in the storage adapter (tests that prove a
    /// failed write leaves nothing behind; production never sets one).
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_faults(
        settings: &Settings,
        faults: Option<infra_db::FaultInjector>,
    ) -> Result<Self, StartupError> {
        // reqwest is built without a bundled TLS provider; rustls uses ring, as sqlx does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = SeaOrmStore::connect(&settings.db_config()).await?;
        let store = match faults {
            Some(faults) => store.with_fault_injector(faults),
            None => store,
        };
        tracing::info!(backend = store.backend_name(), "database configured");
        let background = Background::default();
        let (migrated, clustered) = prepare_database(settings, &store, &background).await?;
        // Generation tasks run on this (the main) runtime, which outlives the HTTP workers,
        // so shutdown can still save what runs.
        let generations = Generations::new(settings.generation_limits());
        let coordination = join_cluster(settings, &store, &generations, clustered).await;
        let readiness = web::Data::new(Readiness {
            store: store.clone(),
            migrated,
        });
        let a = &settings.auth;
        let auth = cached_auth(settings, &store, &background)?;
        let llm = settings.llm_router()?;
        let catalog = Arc::new(Catalog::new(
            store.clone(),
            llm.clone(),
            SystemClock,
            Duration::from_secs(settings.models.ttl_secs),
        ));
        let llm_gauge = llm.clone();
        let chats = web::Data::new(Chats::new(
            store.clone(),
            llm,
            Arc::clone(&catalog),
            SystemClock,
            UuidV7Ids,
            chat_defaults(settings)?,
            usecase::chat::ProcessState {
                cache: usecase::chat::MessageCache::new(settings.cache.messages_max_bytes),
                generations: generations.clone(),
            },
        ));
        let metrics_endpoint = metrics_endpoint(settings, &store, &chats, &generations, &llm_gauge);
        let streams = web::Data::new(api::streaming::StreamSettings {
            ping_interval: Duration::from_millis(settings.generation.ping_interval_ms),
        });
        let presets = web::Data::new(Presets::new(
            store.clone(),
            Arc::clone(&catalog),
            SystemClock,
            UuidV7Ids,
        ));
        let templates = web::Data::new(Templates::new(store.clone(), SystemClock, UuidV7Ids));
        let analytics = web::Data::new(Analytics::new(store.clone(), SystemClock));
        let imports = web::Data::new(Imports::new(
            store.clone(),
            infra_import::ChatGptExports::new(settings.import.max_expanded_bytes()),
        ));
        let import_limits = web::Data::new(api::import::ImportLimits::new(
            settings.import.max_upload_bytes(),
            settings.import.concurrent,
        ));
        let catalog = web::Data::from(catalog);
        let window = Duration::from_secs(a.rate_limit_window_secs);
        let rate_limits = web::Data::new(api::AuthRateLimits::new(
            a.login_per_window,
            a.register_per_window,
            window,
            coordination.as_ref(),
        ));
        let route_limits = web::Data::new(settings.route_limits(coordination.as_ref()));
        let refresh_cookie = web::Data::new(api::auth::RefreshCookie {
            max_age_secs: a.refresh_token_ttl_secs,
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
        let origins = settings.server.cors_allowed_origins.clone();
        let credentials = settings.server.cors_allow_credentials;
        let hsts = settings.server.hsts_max_age_secs;
        let draining = web::Data::new(api::health::Draining::default());
        let app_draining = draining.clone();
        let mut server = HttpServer::new(move || {
            let (json, query, path, payload) = api::extractor_config(body_limit);
            App::new()
                .wrap(actix_web::middleware::from_fn(api::limits::anonymous_limit))
                .wrap(actix_web::middleware::from_fn(
                    api::health::close_when_draining,
                ))
                .wrap(actix_web::middleware::from_fn(
                    api::context::request_context,
                ))
                .wrap(actix_web::middleware::from_fn(api::telemetry::record_http))
                .wrap(TracingLogger::<api::telemetry::RequestSpan>::new())
                // Outermost, so every response (error envelopes included) carries them.
                .wrap(api::security::cors(&origins, credentials))
                .wrap(api::security::security_headers(hsts))
                .app_data(json)
                .app_data(query)
                .app_data(path)
                .app_data(payload)
                .app_data(readiness.clone())
                .app_data(app_draining.clone())
                .app_data(auth.clone())
                .app_data(rate_limits.clone())
                .app_data(route_limits.clone())
                .app_data(refresh_cookie.clone())
                .app_data(catalog.clone())
                .app_data(chats.clone())
                .app_data(presets.clone())
                .app_data(templates.clone())
                .app_data(analytics.clone())
                .app_data(imports.clone())
                .app_data(import_limits.clone())
                .app_data(streams.clone())
                .app_data(metrics_endpoint.clone())
                .configure(
                    api::configure::<
                        Readiness,
                        Auth,
                        Catalog,
                        Chats,
                        Presets,
                        Templates,
                        Analytics,
                        Imports,
                    >,
                )
                .default_service(web::to(api::not_found))
        })
        // SSE responses end when their generation does: give them the generation grace
        // period plus time to save. Signals are handled in `run_until_stopped`.
        .shutdown_timeout(
            settings
                .server
                .shutdown_timeout_secs
                .max(settings.generation.shutdown_grace_secs + 5),
        )
        // A client that closes its connection is gone: the read side's EOF ends the response
        // at once (an SSE stream notices a hang-up without waiting for its next write).
        .h1_allow_half_closed(false)
        .disable_signals();
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
            generations,
            grace: Duration::from_secs(settings.generation.shutdown_grace_secs),
            draining,
            background,
        })
    }

    /// The process's background work (for tests and monitoring).
    #[must_use]
    pub fn background(&self) -> Background {
        self.background.clone()
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

    /// Serves until SIGTERM/SIGINT (or a stop through the handle). On a signal, new
    /// generations are refused, running ones get the grace period to finish and are then saved
    /// `interrupted`, while the HTTP server drains; finally the pools close.
    ///
    /// # Errors
    /// An I/O error from the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let generations = self.generations.clone();
        let grace = self.grace;
        let draining = self.draining.clone();
        let on_signal = tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(grace_secs = grace.as_secs(), "shutting down");
            draining.start();
            tokio::join!(generations.shutdown(grace), handle.stop(true));
        });
        let result = self.server.await;
        // Stopped through the handle, or after a signal: nothing may outlive the server.
        self.generations.shutdown(self.grace).await;
        on_signal.abort();
        self.background.stop().await;
        self.store.close().await;
        tracing::info!("stopped");
        result
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
