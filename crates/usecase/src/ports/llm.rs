//! The language-model port: blocking and streaming chat completions and the provider's model
//! list, in the use cases' vocabulary (no HTTP or provider type).

use std::pin::Pin;
use std::time::Duration;

use domain::{ModelId, ModelInfo, Role, TokenUsage};

/// One message sent to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    /// `system`, `user` or `assistant`.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// A JSON value the use cases carry without reading it: provider-protocol fields a client
/// asked to pass through (tools, a response format, a message's tool calls). Whoever builds
/// one has checked that it is valid JSON of the documented shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(String);

impl RawJson {
    /// Wraps JSON text (the caller has validated it).
    #[must_use]
    pub const fn new(json: String) -> Self {
        Self(json)
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// Which model.
    pub model: ModelId,
    /// The conversation, system prompt first.
    pub messages: Vec<PromptMessage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Answer length cap.
    pub max_tokens: Option<u32>,
    /// A JSON object whose members are set in the provider request as given, replacing
    /// what the fields above produced (`messages` included, for a conversation with tool
    /// calls or images).
    pub passthrough: Option<RawJson>,
}

impl CompletionRequest {
    /// The size in bytes of its messages' text, to estimate the prompt's tokens when the
    /// provider does not report them.
    #[must_use]
    pub fn prompt_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.content.len()).sum()
    }
}

/// A finished blocking completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer.
    pub content: String,
    /// Token counts, when the provider reported them.
    pub usage: Option<TokenUsage>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// The upstream provider that served it, when reported (OpenRouter routes).
    pub provider: Option<String>,
    /// What the call cost, when the provider reported it (`usage.cost`).
    pub cost: Option<domain::Usd>,
    /// The answer message's other members (tool calls, a refusal), as a JSON object.
    pub extra: Option<RawJson>,
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// New text (never empty).
    Delta(String),
    /// A delta's other members (tool-call fragments, a refusal), as a JSON object.
    Extra(RawJson),
    /// The end: why it stopped and what it used. Always the last item of a successful stream.
    Done {
        /// Why generation stopped.
        finish_reason: Option<String>,
        /// Token counts, when reported.
        usage: Option<TokenUsage>,
        /// The upstream provider, when reported.
        provider: Option<String>,
        /// What the call cost, when reported.
        cost: Option<domain::Usd>,
    },
}

/// Why a model call failed, classified for the use cases (and for HTTP statuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The provider refused the request (bad model, bad parameters, 4xx).
    #[error("the provider rejected the request: {0}")]
    Rejected(String),
    /// The provider rate-limited us.
    #[error("the provider is rate limiting")]
    RateLimited {
        /// How long the provider asked to wait.
        retry_after: Option<Duration>,
    },
    /// The provider is unreachable or failing (5xx), or our own concurrency cap is full.
    #[error("the provider is unavailable")]
    Unavailable {
        /// How long to wait before retrying, when known.
        retry_after: Option<Duration>,
    },
    /// No answer (or no next token) in time.
    #[error("the provider timed out")]
    Timeout,
    /// The stream broke after it started (an error event, a reset, garbage).
    #[error("the answer stream broke: {0}")]
    BrokenStream(String),
}

/// A streamed completion. Dropping it cancels the upstream request and releases its
/// connection.
pub type CompletionStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<StreamEvent, LlmError>> + Send + 'static>>;

/// An OpenAI-compatible provider.
pub trait LlmGateway: Send + Sync + 'static {
    /// A blocking completion.
    ///
    /// # Errors
    /// [`LlmError`].
    fn complete(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<Completion, LlmError>> + Send;

    /// A streamed completion: deltas in order, then exactly one [`StreamEvent::Done`], or an
    /// error item after which the stream ends.
    ///
    /// # Errors
    /// [`LlmError`] when the stream cannot be opened.
    fn stream(
        &self,
        request: CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, LlmError>> + Send;

    /// The provider's model catalogue.
    ///
    /// # Errors
    /// [`LlmError`].
    fn list_models(&self) -> impl Future<Output = Result<Vec<ModelInfo>, LlmError>> + Send;
}
