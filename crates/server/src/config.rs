//! Layered configuration: `config/default.toml` → `config/$ARBOR_ENV.toml` → environment
//! (`ARBOR__SECTION__KEY`, plus `DATABASE_URL`). Every key has a default, so an empty
//! `config/` folder still gives a working development server on an SQLite file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

mod accounts;
mod import;
mod limits;

pub use accounts::AccountSettings;
pub use import::ImportSettings;
pub use limits::LimitSettings;

/// All settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// The environment name (`development`, `test`, `production`, …).
    #[serde(default = "default_env")]
    pub env: String,
    /// HTTP listener.
    pub server: ServerSettings,
    /// Database.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// Accounts and tokens.
    pub auth: AuthSettings,
    /// The language-model provider.
    pub llm: LlmSettings,
    /// The model catalogue.
    pub models: ModelSettings,
    /// In-process caches.
    pub cache: CacheSettings,
    /// Streamed generations, their bounds and automatic titles.
    pub generation: GenerationSettings,
    /// Request rate limits per route family.
    pub rate_limits: RateLimitSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Registration policy and default quotas.
    pub accounts: AccountSettings,
    /// Replicas sharing one database.
    pub cluster: ClusterSettings,
    /// Text limits of what users send.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Imports from the original service and from ChatGPT.
    #[serde(default)]
    pub import: ImportSettings,
}

/// Whether replicas coordinate through the database.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Through the database when it is PostgreSQL; alone otherwise.
    Auto,
    /// Alone: this process is the only one on the database.
    Off,
}

/// Replicas sharing one PostgreSQL database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `auto` or `off`.
    pub mode: ClusterMode,
    /// A replica whose heartbeat is this old (milliseconds) is dead.
    pub lease_ms: u64,
    /// How often each replica renews its lease and saves partial answers (milliseconds).
    pub heartbeat_ms: u64,
}

/// Prometheus metrics at `GET /metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics` (404 when off).
    pub enabled: bool,
    /// When set, scrapers must send `Authorization: Bearer <token>`.
    #[serde(serialize_with = "serialize_secret")]
    pub token: SecretString,
}

/// Request rate limits: per user for authenticated requests, per client IP otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off = no route limits (the login/registration limits of `[auth]` still apply).
    pub enabled: bool,
    /// Sends (blocking and streamed) per user per minute.
    pub send_per_minute: u32,
    /// New chats per user per minute.
    pub create_chat_per_minute: u32,
    /// Conversation reads per user per minute.
    pub history_per_minute: u32,
    /// Retries per user per minute.
    pub retry_per_minute: u32,
    /// Other authenticated requests per user per minute.
    pub general_per_minute: u32,
    /// Requests without (valid) credentials per client IP per minute.
    pub anonymous_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed (exact addresses).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// What a departed SSE client means for its generation.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnClientDisconnect {
    /// The generation completes and is saved.
    Finish,
    /// The generation stops at once and is saved `interrupted`.
    Cancel,
}

/// Which `streaming` messages start-up marks `interrupted`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartupRecovery {
    /// Those whose replica's lease expired (with replicas on PostgreSQL; the heartbeat
    /// does it), or all of them when this process is alone on the database.
    Lease,
    /// All of them: this is the only process on the database.
    All,
    /// Only those older than the generation deadline (several replicas share the database).
    Expired,
}

/// Streamed generations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSettings {
    /// Concurrent generations per user (streamed and blocking).
    pub per_user_limit: usize,
    /// Concurrent generations in this process.
    pub global_limit: usize,
    /// Longest a generation may run, in seconds.
    pub deadline_secs: u64,
    /// `finish` or `cancel`.
    pub on_client_disconnect: OnClientDisconnect,
    /// Milliseconds between `: ping` comments on an SSE stream.
    pub ping_interval_ms: u64,
    /// Seconds a finished generation stays re-attachable.
    pub linger_secs: u64,
    /// Seconds running generations get to finish on shutdown before they are interrupted.
    pub shutdown_grace_secs: u64,
    /// `lease`, `all` or `expired`.
    pub startup_recovery: StartupRecovery,
    /// Title untitled chats after their first answer.
    pub titles: bool,
    /// The model that writes titles; empty = the chat's answering model.
    pub title_model: String,
}

/// In-process caches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Bytes of chat messages kept for hot reads.
    pub messages_max_bytes: u64,
}

/// The language-model provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// OpenAI-compatible base URL.
    pub base_url: String,
    /// API key (`OPENROUTER_API_KEY` overrides it).
    #[serde(serialize_with = "serialize_secret")]
    pub api_key: SecretString,
    /// Seconds to connect.
    pub connect_timeout_secs: u64,
    /// Seconds for a blocking call or opening a stream.
    pub request_timeout_secs: u64,
    /// Longest silence within a stream, in seconds.
    pub stream_idle_timeout_secs: u64,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// HTTP/2 without negotiation on an `http://` base URL (h2c).
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Concurrent upstream calls.
    pub max_concurrent_requests: usize,
    /// Seconds a call waits for a slot before 503.
    pub queue_timeout_secs: u64,
    /// Retries of calls without an answer.
    pub max_retries: u32,
    /// First retry delay, milliseconds.
    pub retry_base_delay_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_delay_ms: u64,
    /// `HTTP-Referer` header (OpenRouter attribution); empty to omit.
    pub http_referer: String,
    /// `X-Title` header (OpenRouter attribution); empty to omit.
    pub x_title: String,
    /// The server-wide default model.
    pub default_model: String,
    /// The provider's name in generation records.
    pub provider_name: String,
    /// Several providers (`[[llm.providers]]`); empty: the one at `base_url` serves every
    /// model.
    #[serde(default)]
    pub providers: Vec<ProviderSettings>,
}

/// One of several providers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Its name in generation records.
    pub name: String,
    /// OpenAI-compatible base URL.
    pub base_url: String,
    /// The environment variable holding its API key (empty: no key).
    #[serde(default)]
    pub api_key_env: String,
    /// Model ids it serves: `prefix/` or `prefix*`, `*`, or exact ids; empty: its own list.
    #[serde(default)]
    pub models: Vec<String>,
    /// Lower is tried first.
    #[serde(default)]
    pub priority: u32,
    /// Its own concurrency cap (default: `llm.max_concurrent_requests`).
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
    /// Its own limit for a blocking call or opening a stream, in seconds.
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
    /// HTTP/2 without negotiation on an `http://` base URL.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Extra headers on its requests.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The model catalogue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Seconds before cached entries are refreshed.
    pub ttl_secs: u64,
}

/// The example JWT secret shipped in `config/default.toml`.
pub const EXAMPLE_JWT_SECRET: &str = "arbor-example-secret-change-me-0123456789";

/// Accounts and tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret.
    #[serde(serialize_with = "serialize_secret")]
    pub jwt_secret: SecretString,
    /// Access token lifetime.
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime.
    pub refresh_token_ttl_secs: u64,
    /// argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// Concurrent password hashes; 0 = cores − 1 (at least 1).
    pub hash_concurrency: usize,
    /// Logins per client IP and username per window.
    pub login_per_window: u32,
    /// Registrations per client IP per window.
    pub register_per_window: u32,
    /// The rate-limit window.
    pub rate_limit_window_secs: u64,
    /// Accounts and API keys kept in the authentication cache (each); 0 = no cache.
    pub account_cache_capacity: usize,
    /// How often each process asks the database which accounts changed; a disabled account,
    /// a password reset or a revoked key takes effect within about this interval.
    pub revocation_poll_ms: u64,
}

fn default_env() -> String {
    "development".to_owned()
}

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds that in-flight requests get to finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Origins allowed to call the API from a browser (`*` = any, without credentials).
    pub cors_allowed_origins: Vec<String>,
    /// Let those origins send cookies/credentials (never with `*`).
    pub cors_allow_credentials: bool,
    /// `Strict-Transport-Security` max-age; 0 = not sent (enable behind HTTPS only).
    pub hsts_max_age_secs: u64,
}

/// Database settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://…`, `postgres://…` or `mysql://…` (overridden by `DATABASE_URL`).
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    /// Pool size (SQLite: readers; it always has one writer connection).
    pub max_connections: u32,
    /// Idle connections kept open.
    pub min_connections: u32,
    /// Seconds to open one connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a pooled connection.
    pub acquire_timeout_secs: u64,
    /// Seconds SQLite waits on a lock.
    pub sqlite_busy_timeout_secs: u64,
    /// Apply pending migrations at start-up (retried in the background while the database
    /// is unreachable).
    pub migrate_on_startup: bool,
}

fn serialize_secret<S: serde::Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `arbor=debug,info` (`RUST_LOG` overrides it).
    pub level: String,
}

/// The shipped `config/default.toml`, compiled in: the bottom layer of every configuration.
pub const DEFAULTS_TOML: &str = include_str!("../../../config/default.toml");

impl Default for Settings {
    /// The compiled-in defaults.
    fn default() -> Self {
        Figment::from(Toml::string(DEFAULTS_TOML))
            .merge(Serialized::default("env", default_env()))
            .extract()
            .unwrap_or_else(|e| unreachable!("the shipped default.toml is valid: {e}"))
    }
}

/// Why the configuration was rejected. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read or has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of its allowed range.
    #[error("invalid configuration: {key}: {problem}")]
    Invalid {
        /// The key, e.g. `database.max_connections`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// Loads the layers from `config_dir` and the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(config_dir: &Path) -> Result<Self, ConfigError> {
        let env = std::env::var("ARBOR_ENV").unwrap_or_else(|_| default_env());
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML))
            .merge(Toml::file(config_dir.join("default.toml")))
            .merge(Toml::file(config_dir.join(format!("{env}.toml"))))
            .merge(Env::prefixed("ARBOR__").split("__"))
            .merge(Serialized::default("env", &env));
        if let Ok(key) = std::env::var("OPENROUTER_API_KEY") {
            figment = figment.merge(Serialized::default("llm.api_key", key));
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        let settings: Self = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The folder configuration files are read from: `ARBOR_CONFIG_DIR`, else `./config`.
    #[must_use]
    pub fn default_dir() -> PathBuf {
        std::env::var_os("ARBOR_CONFIG_DIR").map_or_else(|| PathBuf::from("config"), PathBuf::from)
    }

    /// Checks ranges that types cannot express.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.accounts.registration()?;
        self.accounts.quota()?;
        self.limits.input()?;
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let url = self.database.url.expose_secret();
        if ![
            "sqlite:",
            "postgres://",
            "postgresql://",
            "mysql://",
            "mariadb://",
        ]
        .iter()
        .any(|p| url.starts_with(p))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres://, postgresql://, mysql:// or mariadb://",
            );
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1_000 {
            return invalid("database.max_connections", "must be between 1 and 1000");
        }
        if self.database.min_connections > self.database.max_connections {
            return invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            );
        }
        if self.database.connect_timeout_secs == 0 || self.database.acquire_timeout_secs == 0 {
            return invalid(
                "database.connect_timeout_secs",
                "timeouts must be at least 1 second",
            );
        }
        if self.server.body_limit_bytes < 1_024 || self.server.body_limit_bytes > 64 * 1024 * 1024 {
            return invalid(
                "server.body_limit_bytes",
                "must be between 1 KiB and 64 MiB",
            );
        }
        for origin in &self.server.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.trim_end_matches('/').contains(['?', '#'])
                    && origin.split('/').count() == 3);
            if !ok {
                return invalid(
                    "server.cors_allowed_origins",
                    "each entry must be * or an origin such as https://app.example.com",
                );
            }
        }
        if self.server.cors_allow_credentials
            && self.server.cors_allowed_origins.iter().any(|o| o == "*")
        {
            return invalid(
                "server.cors_allow_credentials",
                "credentials are never allowed with the * origin; list the origins",
            );
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.llm.providers {
            if p.name.trim().is_empty() || p.name.len() > 100 || !names.insert(p.name.as_str()) {
                return invalid(
                    "llm.providers",
                    "every provider needs a unique name of at most 100 characters",
                );
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return invalid("llm.providers", "a provider's base_url must be http(s)://");
            }
            if p.max_concurrent_requests == Some(0) || p.request_timeout_secs == Some(0) {
                return invalid(
                    "llm.providers",
                    "a provider's max_concurrent_requests and request_timeout_secs must be positive",
                );
            }
        }
        let c = &self.cluster;
        if c.heartbeat_ms < 100 || c.heartbeat_ms.saturating_mul(3) > c.lease_ms {
            return invalid(
                "cluster.heartbeat_ms",
                "must be at least 100 and at most a third of cluster.lease_ms",
            );
        }
        if self.server.workers > 1_024 {
            return invalid("server.workers", "must be at most 1024 (0 = one per core)");
        }
        let secret = self.auth.jwt_secret.expose_secret();
        if secret.is_empty() {
            return invalid("auth.jwt_secret", "must not be empty");
        }
        if self.env != "development" && self.env != "test" {
            if secret.len() < 32 {
                return invalid(
                    "auth.jwt_secret",
                    "must be at least 32 bytes outside development",
                );
            }
            if secret == EXAMPLE_JWT_SECRET {
                return invalid(
                    "auth.jwt_secret",
                    "is the shipped example; set ARBOR__AUTH__JWT_SECRET outside development",
                );
            }
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.refresh_token_ttl_secs == 0 {
            return invalid(
                "auth.access_token_ttl_secs",
                "token lifetimes must be at least 1 second",
            );
        }
        if self.auth.argon2_memory_kib < 8 * self.auth.argon2_parallelism.max(1)
            || self.auth.argon2_iterations == 0
            || self.auth.argon2_parallelism == 0
        {
            return invalid("auth.argon2_memory_kib", "argon2 costs are out of range");
        }
        if !(50..=1_000).contains(&self.auth.revocation_poll_ms) {
            return invalid("auth.revocation_poll_ms", "must be 50-1000");
        }
        if self.auth.rate_limit_window_secs == 0 {
            return invalid("auth.rate_limit_window_secs", "must be at least 1");
        }
        let base = &self.llm.base_url;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return invalid("llm.base_url", "must be an http:// or https:// URL");
        }
        if self.llm.max_concurrent_requests == 0 || self.llm.max_concurrent_requests > 100_000 {
            return invalid(
                "llm.max_concurrent_requests",
                "must be between 1 and 100000",
            );
        }
        if self.llm.request_timeout_secs == 0
            || self.llm.stream_idle_timeout_secs == 0
            || self.llm.connect_timeout_secs == 0
        {
            return invalid(
                "llm.request_timeout_secs",
                "provider timeouts must be at least 1 second",
            );
        }
        if domain::ModelId::parse(self.llm.default_model.as_str()).is_err() {
            return invalid(
                "llm.default_model",
                "must be a model id without white space",
            );
        }
        if self.llm.max_retries > 10 {
            return invalid("llm.max_retries", "must be at most 10");
        }
        let r = &self.rate_limits;
        if [
            r.send_per_minute,
            r.create_chat_per_minute,
            r.history_per_minute,
            r.retry_per_minute,
            r.general_per_minute,
            r.anonymous_per_minute,
        ]
        .contains(&0)
        {
            return invalid(
                "rate_limits.send_per_minute",
                "every per-minute limit must be at least 1 (set rate_limits.enabled = false to turn them off)",
            );
        }
        let g = &self.generation;
        if g.per_user_limit == 0 || g.global_limit == 0 || g.per_user_limit > g.global_limit {
            return invalid(
                "generation.per_user_limit",
                "limits must be at least 1, and per user at most the global limit",
            );
        }
        if g.deadline_secs == 0 {
            return invalid("generation.deadline_secs", "must be at least 1");
        }
        if g.ping_interval_ms < 10 {
            return invalid("generation.ping_interval_ms", "must be at least 10");
        }
        if !g.title_model.is_empty() && domain::ModelId::parse(g.title_model.as_str()).is_err() {
            return invalid(
                "generation.title_model",
                "must be empty or a model id without white space",
            );
        }
        if self.log.level.trim().is_empty() {
            return invalid("log.level", "must not be empty");
        }
        Ok(())
    }

    /// The provider adapter's configuration.
    #[must_use]
    pub fn llm_config(&self) -> infra_llm::LlmConfig {
        let l = &self.llm;
        let mut headers = Vec::new();
        if !l.http_referer.is_empty() {
            headers.push(("HTTP-Referer".to_owned(), l.http_referer.clone()));
        }
        if !l.x_title.is_empty() {
            headers.push(("X-Title".to_owned(), l.x_title.clone()));
        }
        infra_llm::LlmConfig {
            base_url: l.base_url.clone(),
            api_key: l.api_key.expose_secret().to_owned(),
            connect_timeout: Duration::from_secs(l.connect_timeout_secs),
            request_timeout: Duration::from_secs(l.request_timeout_secs),
            stream_idle_timeout: Duration::from_secs(l.stream_idle_timeout_secs),
            pool_max_idle_per_host: l.pool_max_idle_per_host,
            http2_prior_knowledge: l.http2_prior_knowledge,
            max_concurrent_requests: l.max_concurrent_requests,
            queue_timeout: Duration::from_secs(l.queue_timeout_secs),
            extra_headers: headers,
            max_retries: l.max_retries,
            retry_base_delay: Duration::from_millis(l.retry_base_delay_ms),
            retry_max_delay: Duration::from_millis(l.retry_max_delay_ms),
        }
    }

    /// The providers: `[[llm.providers]]`, or the one at `llm.base_url` serving every model.
    ///
    /// # Errors
    /// A provider's HTTP client cannot be built.
    pub fn llm_router(&self) -> Result<infra_llm::ProviderRouter, infra_llm::BuildError> {
        let base = self.llm_config();
        if self.llm.providers.is_empty() {
            return Ok(infra_llm::ProviderRouter::new(vec![infra_llm::Provider {
                name: self.llm.provider_name.clone(),
                models: vec!["*".to_owned()],
                priority: 0,
                gateway: infra_llm::OpenAiGateway::new(base)?,
            }]));
        }
        let mut providers = Vec::new();
        for p in &self.llm.providers {
            let mut config = base.clone();
            config.base_url.clone_from(&p.base_url);
            config.api_key = if p.api_key_env.is_empty() {
                String::new()
            } else {
                std::env::var(&p.api_key_env).unwrap_or_default()
            };
            if let Some(n) = p.max_concurrent_requests {
                config.max_concurrent_requests = n;
            }
            if let Some(secs) = p.request_timeout_secs {
                config.request_timeout = Duration::from_secs(secs);
            }
            config.http2_prior_knowledge = p.http2_prior_knowledge;
            config
                .extra_headers
                .extend(p.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            providers.push(infra_llm::Provider {
                name: p.name.clone(),
                models: p.models.clone(),
                priority: p.priority,
                gateway: infra_llm::OpenAiGateway::new(config)?,
            });
        }
        Ok(infra_llm::ProviderRouter::new(providers))
    }

    /// The route limits (shared with the other replicas through `shared`).
    #[must_use]
    pub fn route_limits(
        &self,
        shared: Option<&std::sync::Arc<dyn usecase::cluster::Coordination>>,
    ) -> api::limits::RateLimits {
        let r = &self.rate_limits;
        let per = api::limits::RoutePerMinute {
            send: r.send_per_minute,
            create_chat: r.create_chat_per_minute,
            history: r.history_per_minute,
            retry: r.retry_per_minute,
            general: r.general_per_minute,
            anonymous: r.anonymous_per_minute,
        };
        api::limits::RateLimits::new(per, r.trusted_proxies.clone(), r.enabled, shared)
    }

    /// The generation registry's bounds.
    #[must_use]
    pub fn generation_limits(&self) -> usecase::generation::GenerationLimits {
        let g = &self.generation;
        usecase::generation::GenerationLimits {
            per_user: g.per_user_limit,
            global: g.global_limit,
            deadline: Duration::from_secs(g.deadline_secs),
            linger: Duration::from_secs(g.linger_secs),
            on_client_disconnect: match g.on_client_disconnect {
                OnClientDisconnect::Finish => usecase::generation::DisconnectPolicy::Finish,
                OnClientDisconnect::Cancel => usecase::generation::DisconnectPolicy::Cancel,
            },
            retry_after: Duration::from_secs(5),
        }
    }

    /// The lease timing of replicas.
    #[must_use]
    pub fn lease_timing(&self) -> usecase::cluster::LeaseTiming {
        usecase::cluster::LeaseTiming {
            lease: Duration::from_millis(self.cluster.lease_ms),
            heartbeat: Duration::from_millis(self.cluster.heartbeat_ms),
            // No generation holds a slot past its deadline and the save after it.
            slot_max_age: Duration::from_secs(self.generation.deadline_secs + 120),
        }
    }

    /// The database adapter's configuration.
    #[must_use]
    pub fn db_config(&self) -> infra_db::DbConfig {
        let d = &self.database;
        infra_db::DbConfig {
            url: d.url.expose_secret().to_owned(),
            max_connections: d.max_connections,
            min_connections: d.min_connections,
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            acquire_timeout: Duration::from_secs(d.acquire_timeout_secs),
            sqlite_busy_timeout: Duration::from_secs(d.sqlite_busy_timeout_secs),
            lazy: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_an_sqlite_file() {
        let s = Settings::default();
        s.validate().unwrap();
        assert!(s.database.url.expose_secret().starts_with("sqlite://data/"));
    }

    #[test]
    fn the_database_url_is_never_printed() {
        let mut s = Settings::default();
        s.database.url = SecretString::from("postgres://u:hunter2@db/arbor");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }

    #[test]
    fn outside_development_the_example_or_a_short_jwt_secret_is_refused() {
        let mut s = Settings::default();
        s.validate().unwrap();
        s.env = "production".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
        s.auth.jwt_secret = SecretString::from("short");
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("at least 32 bytes")
        );
        s.auth.jwt_secret = SecretString::from("x".repeat(32));
        s.validate().unwrap();
    }

    #[test]
    fn several_providers_are_read_checked_and_built() {
        let providers = r#"
            [[llm.providers]]
            name = "local"
            base_url = "http://127.0.0.1:11434/v1"
            priority = 1
            [[llm.providers]]
            name = "openrouter"
            base_url = "https://openrouter.ai/api/v1"
            api_key_env = "ARBOR_TEST_NO_SUCH_KEY"
            models = ["openai/", "anthropic/*"]
            priority = 5
            max_concurrent_requests = 8
            headers = { "X-Title" = "Arbor" }
        "#;
        let mut s: Settings = Figment::from(Toml::string(DEFAULTS_TOML))
            .merge(Toml::string(providers))
            .extract()
            .unwrap();
        s.validate().unwrap();
        assert_eq!(s.llm.providers.len(), 2);
        assert_eq!(s.llm.providers[1].models, ["openai/", "anthropic/*"]);
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(s.llm_router().is_ok());
        s.llm.providers[1].name = "local".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("llm.providers"), "{err}");
        s.llm.providers[1].name = "other".into();
        s.llm.providers[1].base_url = "ftp://x".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut s = Settings::default();
        s.database.max_connections = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("database.max_connections"), "{err}");
        let mut s = Settings::default();
        s.database.url = SecretString::from("oracle://x");
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("database.url")
        );
    }

    #[test]
    fn cors_never_pairs_credentials_with_any_origin_and_origins_are_origins() {
        let key_of = |s: &Settings| s.validate().unwrap_err().to_string();
        let mut s = Settings::default();
        s.server.cors_allowed_origins = vec!["*".into()];
        s.validate().unwrap();
        s.server.cors_allow_credentials = true;
        assert!(key_of(&s).contains("server.cors_allow_credentials"));
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x"] {
            let mut s = Settings::default();
            s.server.cors_allowed_origins = vec![bad.into()];
            assert!(key_of(&s).contains("server.cors_allowed_origins"), "{bad}");
        }
        let mut s = Settings::default();
        s.server.cors_allowed_origins = vec!["https://app.example.com".into()];
        s.server.cors_allow_credentials = true;
        s.validate().unwrap();
        let mut s = Settings::default();
        s.generation.per_user_limit = 0;
        assert!(key_of(&s).contains("generation.per_user_limit"));
    }

    #[test]
    fn a_file_with_a_wrong_type_or_unknown_key_is_rejected_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("arbor-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default.toml"), "[server]\nport = \"eighty\"\n").unwrap();
        let err = Settings::load(&dir).unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        std::fs::write(dir.join("default.toml"), "[server]\nprot = 80\n").unwrap();
        let err = Settings::load(&dir).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
