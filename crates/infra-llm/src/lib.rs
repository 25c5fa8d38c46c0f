//! # infra-llm
//!
//! The [`LlmGateway`] port over async-openai, for any OpenAI-compatible provider (OpenRouter
//! by default; OpenAI, Ollama, vLLM and llama.cpp servers by configuration).
//!
//! - One `reqwest::Client` with a connect timeout, a per-read idle timeout (a silent stream
//!   fails) and a bounded idle pool, handed to async-openai. HTTP/2 (negotiated over TLS, or
//!   h2c by configuration) carries every stream on one connection: a stream then costs a few
//!   hundred bytes of connection state instead of a connection of its own.
//! - A semaphore caps concurrent upstream calls; a caller that waits longer than the queue
//!   timeout gets [`LlmError::Unavailable`].
//! - async-openai's bring-your-own-types calls with our own tolerant wire types, so
//!   OpenRouter's extra fields, `finish_reason: "error"` chunks and numeric error codes are
//!   understood instead of failing deserialisation.
//! - Dropping a [`CompletionStream`] drops async-openai's stream, which closes the upstream
//!   connection, and releases the concurrency permit.

mod retry;
mod router;
mod wire;

pub use router::{Provider, ProviderRouter};

use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use domain::{ModelId, ModelInfo, Pricing, Role, Timestamp, TokenUsage, Usd};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use usecase::llm::{
    Completion, CompletionRequest, CompletionStream, LlmError, LlmGateway, RawJson, StreamEvent,
};

use crate::wire::{WireChunk, WireCompletion, WireModels};

/// Provider settings (plain values; the server converts its configuration into this).
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL, e.g. `https://openrouter.ai/api/v1`.
    pub base_url: String,
    /// API key; never logged.
    pub api_key: String,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for a whole blocking call (and for opening a stream).
    pub request_timeout: Duration,
    /// Longest silence allowed between two reads of a stream.
    pub stream_idle_timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Speak HTTP/2 over plain `http://` without asking first (h2c with prior knowledge), so
    /// every stream shares one connection. Only for providers known to speak it; over
    /// `https://` HTTP/2 is negotiated anyway.
    pub http2_prior_knowledge: bool,
    /// Concurrent upstream calls.
    pub max_concurrent_requests: usize,
    /// How long a call waits for a free slot before failing with `Unavailable`.
    pub queue_timeout: Duration,
    /// Extra headers on every request (`HTTP-Referer`, `X-Title` for OpenRouter).
    pub extra_headers: Vec<(String, String)>,
    /// Retries of a call that got no answer (connection error, 429, 5xx).
    pub max_retries: u32,
    /// First backoff delay (doubled per retry, with full jitter).
    pub retry_base_delay: Duration,
    /// Longest single wait between retries, `Retry-After` included.
    pub retry_max_delay: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .finish_non_exhaustive()
    }
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// A configured header is invalid.
    #[error("invalid provider header {0:?}")]
    Header(String),
}

/// The async-openai adapter.
#[derive(Clone)]
pub struct OpenAiGateway {
    /// For streams (with the stream idle limit as its read timeout).
    streams: Client<OpenAIConfig>,
    /// For blocking calls and the model list.
    blocking: Client<OpenAIConfig>,
    permits: Arc<Semaphore>,
    config: Arc<LlmConfig>,
    /// The runtime the gateway was built on. Every call runs there, so pooled connections
    /// are driven by one long-lived runtime, not by whichever HTTP worker opened them (a
    /// worker stopping at shutdown would otherwise break streams still using them).
    home: Option<tokio::runtime::Handle>,
    /// Whether requests carry OpenRouter's `usage: {"include": true}` (see
    /// [`asks_for_usage_accounting`]).
    usage_accounting: bool,
}

/// OpenRouter reports a call's cost only when a request asks with `usage: {"include":
/// true}`. Other providers may refuse a field they do not know (OpenAI's own API answers 400),
/// so only OpenRouter is asked.
fn asks_for_usage_accounting(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(|host| host == "openrouter.ai" || host.ends_with(".openrouter.ai"))
        })
        .unwrap_or(false)
}

impl std::fmt::Debug for OpenAiGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiGateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiGateway {
    /// Builds the client. A rustls crypto provider must be installed first (the server does).
    ///
    /// # Errors
    /// [`BuildError`].
    pub fn new(config: LlmConfig) -> Result<Self, BuildError> {
        let mut openai = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(config.api_key.clone());
        for (name, value) in &config.extra_headers {
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::Header(name.clone()))?;
            openai = openai
                .with_header(header, value.clone())
                .map_err(|_| BuildError::Header(name.clone()))?;
        }
        let usage_accounting = asks_for_usage_accounting(&config.base_url);
        Ok(Self {
            // A stream's silence is bounded by a read timeout, which any bytes reset (the
            // comments a provider sends while a model thinks included). A blocking call
            // sends nothing until its whole answer is ready: only `request_timeout` bounds
            // it, so its client has no read timeout.
            streams: Self::client(&config, &openai, Some(config.stream_idle_timeout))?,
            blocking: Self::client(&config, &openai, None)?,
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            config: Arc::new(config),
            home: tokio::runtime::Handle::try_current().ok(),
            usage_accounting,
        })
    }

    /// An async-openai client over its own HTTP client, with retries.
    fn client(
        config: &LlmConfig,
        openai: &OpenAIConfig,
        read_timeout: Option<Duration>,
    ) -> Result<Client<OpenAIConfig>, BuildError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // A pool of size 0 is no pool: HTTP/2 would then open a connection per call.
            .pool_max_idle_per_host(if config.http2_prior_knowledge {
                config.pool_max_idle_per_host.max(1)
            } else {
                config.pool_max_idle_per_host
            })
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")));
        if let Some(timeout) = read_timeout {
            http = http.read_timeout(timeout);
        }
        if config.http2_prior_knowledge {
            http = http.http2_prior_knowledge();
        }
        let http = http.build().map_err(BuildError::Http)?;
        let service = tower::ServiceBuilder::new()
            .layer(tower::retry::RetryLayer::new(retry::ProviderRetry::new(
                config.max_retries,
                config.retry_base_delay,
                config.retry_max_delay,
            )))
            .service(async_openai::middleware::ReqwestService::new(http.clone()));
        Ok(Client::build(http, openai.clone()).with_http_service(service))
    }

    /// Upstream calls currently holding a slot.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.config.max_concurrent_requests.max(1) - self.permits.available_permits()
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, LlmError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        // The cap is full: this call queues.
        metrics::counter!("arbor_provider_permit_waits_total").increment(1);
        let waited = std::time::Instant::now();
        let result = tokio::time::timeout(
            self.config.queue_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await;
        metrics::histogram!("arbor_provider_permit_wait_seconds")
            .record(waited.elapsed().as_secs_f64());
        match result {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("arbor_provider_permit_timeouts_total").increment(1);
                Err(LlmError::Unavailable {
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
        }
    }

    fn body(&self, request: &CompletionRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": role(m.role), "content": m.content}))
            .collect();
        let mut body =
            json!({"model": request.model.as_str(), "messages": messages, "stream": stream});
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = request.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if stream {
            // OpenAI's and OpenRouter's ways of asking for usage in the stream.
            body["stream_options"] = json!({"include_usage": true});
        }
        if self.usage_accounting {
            body["usage"] = json!({"include": true});
        }
        if let Some(Ok(Value::Object(fields))) = request
            .passthrough
            .as_ref()
            .map(|p| serde_json::from_str::<Value>(p.as_str()))
        {
            for (name, value) in fields {
                body[name] = value;
            }
        }
        body
    }
}

const fn role(role: Role) -> &'static str {
    role.as_str()
}

/// The cost the provider reported. A reported 0 counts only with tokens at zero too (some
/// proxies send `cost: 0` when they do not know it).
fn reported_cost(u: &wire::WireUsage) -> Option<Usd> {
    let cost = Usd::parse_decimal(&wire::decimal(u.cost.as_ref()?)?).ok()?;
    (cost.as_pico() > 0 || u.total_tokens == 0).then_some(cost)
}

fn usage(u: &wire::WireUsage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
    }
}

/// Classifies an error body's numeric or textual code.
fn classify_status(status: u16, message: String) -> LlmError {
    match status {
        408 => LlmError::Timeout,
        429 => LlmError::RateLimited { retry_after: None },
        500..=599 => LlmError::Unavailable { retry_after: None },
        _ => LlmError::Rejected(message),
    }
}

fn to_llm_error(err: OpenAIError) -> LlmError {
    match err {
        OpenAIError::ApiError(e) => classify_status(e.status_code.as_u16(), e.api_error.message),
        OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout,
        OpenAIError::Reqwest(e) => {
            tracing::warn!(error = %e, "provider request failed");
            LlmError::Unavailable { retry_after: None }
        }
        // OpenRouter sends numeric `code`s that async-openai's error type cannot read: read
        // them ourselves.
        OpenAIError::JSONDeserialize(_, content) => {
            match serde_json::from_str::<wire::WireErrorBody>(&content) {
                Ok(body) => {
                    let status = body
                        .error
                        .code
                        .as_ref()
                        .and_then(wire::code_as_status)
                        .unwrap_or(502);
                    classify_status(status, body.error.message.unwrap_or_default())
                }
                Err(_) => LlmError::BrokenStream("unreadable provider response".into()),
            }
        }
        OpenAIError::StreamError(e) => {
            let text = e.to_string();
            if text.contains("timed out") {
                LlmError::Timeout
            } else {
                LlmError::BrokenStream(text)
            }
        }
        other => LlmError::Rejected(other.to_string()),
    }
}

/// Provider latency by call kind and result.
fn record_call(kind: &'static str, started: std::time::Instant, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::histogram!("arbor_provider_request_seconds", "kind" => kind, "result" => result)
        .record(started.elapsed().as_secs_f64());
}

struct StreamState {
    inner: async_openai::types::stream::StreamResponse<WireChunk>,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
    provider: Option<String>,
    cost: Option<Usd>,
    pending: std::collections::VecDeque<Result<StreamEvent, LlmError>>,
    done: bool,
    /// When the last chunk came, and the longest silence allowed: the read timeout's error
    /// says only that the body broke.
    last_chunk: std::time::Instant,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
}

impl OpenAiGateway {
    /// Runs `call` on the gateway's home runtime (aborted if the caller goes away).
    async fn at_home<T, F>(&self, call: F) -> Result<T, LlmError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, LlmError>> + Send + 'static,
    {
        match &self.home {
            Some(home) => tokio_util::task::AbortOnDropHandle::new(home.spawn(call))
                .await
                .unwrap_or_else(|e| {
                    Err(LlmError::Unavailable {
                        retry_after: if e.is_cancelled() {
                            Some(Duration::from_secs(1))
                        } else {
                            None
                        },
                    })
                }),
            None => call.await,
        }
    }
}

impl LlmGateway for OpenAiGateway {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let this = self.clone();
        self.at_home(async move { this.complete_here(request).await })
            .await
    }

    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, LlmError> {
        let this = self.clone();
        self.at_home(async move { this.stream_here(request).await })
            .await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let this = self.clone();
        self.at_home(async move { this.list_models_here().await })
            .await
    }
}

impl OpenAiGateway {
    async fn complete_here(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let _permit = self.permit().await?;
        let chat = self.blocking.chat();
        let call = chat.create_byot::<_, WireCompletion>(self.body(&request, false));
        let started = std::time::Instant::now();
        let response = tokio::time::timeout(self.config.request_timeout, call)
            .await
            .map_err(|_| LlmError::Timeout)
            .and_then(|r| r.map_err(to_llm_error));
        record_call("complete", started, response.is_ok());
        let response = response?;
        if let Some(error) = response.error {
            let status = error
                .code
                .as_ref()
                .and_then(wire::code_as_status)
                .unwrap_or(502);
            return Err(classify_status(status, error.message.unwrap_or_default()));
        }
        let mut choice = response.choices.into_iter().next();
        let mut message = choice.as_mut().and_then(|c| c.message.as_mut());
        Ok(Completion {
            extra: message
                .as_deref_mut()
                .and_then(wire::WireMessage::extra)
                .map(RawJson::new),
            content: message.and_then(|m| m.content.take()).unwrap_or_default(),
            usage: response.usage.as_ref().map(usage),
            cost: response.usage.as_ref().and_then(reported_cost),
            finish_reason: choice.and_then(|c| c.finish_reason),
            provider: response.provider,
        })
    }

    async fn stream_here(&self, request: CompletionRequest) -> Result<CompletionStream, LlmError> {
        let permit = self.permit().await?;
        let chat = self.streams.chat();
        let open = chat.create_stream_byot::<_, WireChunk>(self.body(&request, true));
        let started = std::time::Instant::now();
        let inner = tokio::time::timeout(self.config.request_timeout, open)
            .await
            .map_err(|_| LlmError::Timeout)
            .and_then(|r| r.map_err(to_llm_error));
        record_call("stream_open", started, inner.is_ok());
        let inner = inner?;
        let state = StreamState {
            inner,
            finish_reason: None,
            usage: None,
            provider: None,
            cost: None,
            pending: std::collections::VecDeque::new(),
            done: false,
            last_chunk: std::time::Instant::now(),
            idle: self.config.stream_idle_timeout,
            _permit: permit,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut s| async move {
                loop {
                    if let Some(item) = s.pending.pop_front() {
                        return Some((item, s));
                    }
                    if s.done {
                        return None;
                    }
                    match s.inner.next().await {
                        // A stream that ends with neither a finish reason nor usage was cut
                        // short (a proxy that lost its upstream closes its response cleanly,
                        // and the end of the body then looks like `[DONE]`).
                        None if s.finish_reason.is_none() && s.usage.is_none() => {
                            s.done = true;
                            s.pending.push_back(Err(LlmError::BrokenStream(
                                "the stream ended without a finish".into(),
                            )));
                        }
                        None => {
                            s.done = true;
                            s.pending.push_back(Ok(StreamEvent::Done {
                                finish_reason: s.finish_reason.take(),
                                usage: s.usage.take(),
                                provider: s.provider.take(),
                                cost: s.cost.take(),
                            }));
                        }
                        Some(Err(e)) => {
                            s.done = true;
                            s.pending.push_back(Err(match to_llm_error(e) {
                                // Silent for the whole idle limit: the read timed out.
                                LlmError::BrokenStream(_) if s.last_chunk.elapsed() >= s.idle => {
                                    LlmError::Timeout
                                }
                                e @ (LlmError::Timeout | LlmError::BrokenStream(_)) => e,
                                other => LlmError::BrokenStream(other.to_string()),
                            }));
                        }
                        Some(Ok(chunk)) => {
                            s.last_chunk = std::time::Instant::now();
                            if let Some(error) = chunk.error {
                                s.done = true;
                                s.pending.push_back(Err(LlmError::BrokenStream(
                                    error.message.unwrap_or_else(|| "provider error".into()),
                                )));
                                continue;
                            }
                            if chunk.provider.is_some() {
                                s.provider = chunk.provider;
                            }
                            if let Some(u) = &chunk.usage {
                                s.usage = Some(usage(u));
                                s.cost = reported_cost(u);
                            }
                            for choice in chunk.choices {
                                if choice.finish_reason.as_deref() == Some("error") {
                                    s.done = true;
                                    s.pending.push_back(Err(LlmError::BrokenStream(
                                        "provider error".into(),
                                    )));
                                    break;
                                }
                                if let Some(mut delta) = choice.delta {
                                    if let Some(text) =
                                        delta.content.take().filter(|t| !t.is_empty())
                                    {
                                        s.pending.push_back(Ok(StreamEvent::Delta(text)));
                                    }
                                    if let Some(extra) = delta.extra() {
                                        s.pending
                                            .push_back(Ok(StreamEvent::Extra(RawJson::new(extra))));
                                    }
                                }
                                if choice.finish_reason.is_some() {
                                    s.finish_reason = choice.finish_reason;
                                }
                            }
                        }
                    }
                }
            },
        )))
    }

    async fn list_models_here(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let models = self.blocking.models();
        let call = models.list_byot::<WireModels>();
        let response = tokio::time::timeout(self.config.request_timeout, call)
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(to_llm_error)?;
        let fetched_at = Timestamp::from_unix_micros(0);
        Ok(response
            .data
            .into_iter()
            .filter_map(|m| {
                let context_length = m.context();
                let id = ModelId::parse(m.id).ok()?;
                let pricing = m.pricing.unwrap_or_default();
                let arch = m.architecture.unwrap_or_default();
                Some(ModelInfo {
                    name: m.name.unwrap_or_else(|| id.as_str().to_owned()),
                    id,
                    description: m.description,
                    context_length,
                    pricing: Pricing {
                        prompt: pricing
                            .prompt
                            .as_deref()
                            .and_then(|p| Usd::parse_decimal(p).ok())
                            .unwrap_or_default(),
                        completion: pricing
                            .completion
                            .as_deref()
                            .and_then(|p| Usd::parse_decimal(p).ok())
                            .unwrap_or_default(),
                    },
                    input_modalities: arch.input_modalities.unwrap_or_default(),
                    output_modalities: arch.output_modalities.unwrap_or_default(),
                    created: m.created,
                    fetched_at,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::asks_for_usage_accounting;

    #[test]
    fn only_openrouter_is_asked_for_usage_accounting() {
        assert!(asks_for_usage_accounting("https://openrouter.ai/api/v1"));
        assert!(asks_for_usage_accounting(
            "https://eu.openrouter.ai/api/v1/"
        ));
        assert!(!asks_for_usage_accounting("https://api.openai.com/v1"));
        assert!(!asks_for_usage_accounting("http://127.0.0.1:8089/api/v1"));
        assert!(!asks_for_usage_accounting(
            "https://openrouter.ai.example.com/v1"
        ));
        assert!(!asks_for_usage_accounting("not a url"));
    }
}
