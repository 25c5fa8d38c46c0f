//! What a generation takes and gives over HTTP, shared by the blocking routes (`chats`),
//! the streamed ones (`streaming`) and `/v1`: the request bodies of a send, retry and edit
//! and their use-case input, an answer's usage stats, and the status a provider failure
//! answers with.

use actix_web::web;
use domain::{MessageContent, MessageId, ModelId, limits};
use serde::{Deserialize, Serialize};
use usecase::chat::{GenerationOptions, SendInput};
use usecase::llm::LlmError;

use crate::error::ApiError;
use crate::path::parse_id;

/// The status a provider failure answers with.
pub(crate) fn provider_error(cause: &LlmError) -> ApiError {
    match cause {
        LlmError::RateLimited { retry_after } | LlmError::Unavailable { retry_after } => {
            ApiError::Unavailable {
                retry_after_secs: retry_after.map_or(5, |d| d.as_secs().max(1)),
            }
        }
        LlmError::Timeout => ApiError::GatewayTimeout,
        LlmError::Rejected(reason) => {
            ApiError::ProviderRejected(reason.chars().take(500).collect())
        }
        LlmError::BrokenStream(_) => ApiError::BadGateway,
    }
}

/// What an answer's generation used and cost.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AnswerStats {
    model: String,
    /// The provider that served it (`name/upstream` when it reported its own upstream).
    provider: String,
    /// Estimated from the text (four bytes a token) when the provider reported none (a
    /// cancelled answer, for instance); `cost_source` then says `estimate`.
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cost_usd: String,
    /// `provider` (what it reported), `catalogue` (listed prices × tokens) or `estimate`
    /// (listed prices × tokens estimated from the text).
    #[schema(pattern = "^(provider|catalogue|estimate)$")]
    cost_source: &'static str,
    latency_ms: u64,
    /// Streamed answers only.
    ttft_ms: Option<u64>,
    /// `stop`, `length`, `cancelled`, `timeout`, `error`, …
    finish_reason: Option<String>,
}

impl From<&domain::GenerationStats> for AnswerStats {
    fn from(g: &domain::GenerationStats) -> Self {
        Self {
            model: g.model.as_str().to_owned(),
            provider: g.provider.clone(),
            prompt_tokens: g.usage.prompt_tokens,
            completion_tokens: g.usage.completion_tokens,
            total_tokens: g.usage.total_tokens,
            cost_usd: g.cost.to_string(),
            cost_source: g.cost_source.as_str(),
            latency_ms: g.latency_ms,
            ttft_ms: g.time_to_first_token_ms,
            finish_reason: g.finish_reason.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    #[schema(min_length = 1, max_length = 32000)]
    content: String,
    #[schema(format = Uuid)]
    preset_id: Option<String>,
    #[schema(format = Uuid)]
    parent_message_uuid: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<String>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f64>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<i64>,
}

/// A send request as the use case's input.
pub(crate) fn send_input(b: SendRequest) -> Result<SendInput, ApiError> {
    Ok(SendInput {
        content: MessageContent::parse(b.content)?,
        parent: b
            .parent_message_uuid
            .as_deref()
            .map(|p| parse_id::<MessageId>(p, "parent_message_uuid"))
            .transpose()?,
        options: generation_options(b.model_id, b.preset_id, b.temperature, b.max_tokens)?,
    })
}

/// A request's model, preset and sampling overrides, validated.
fn generation_options(
    model_id: Option<String>,
    preset_id: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
) -> Result<GenerationOptions, ApiError> {
    let (temperature, max_tokens) = generation_settings(temperature, max_tokens)?;
    Ok(GenerationOptions {
        model_id: model_id.map(ModelId::parse).transpose()?,
        preset_id: preset_id
            .as_deref()
            .map(|p| parse_id(p, "preset_id"))
            .transpose()?,
        temperature,
        max_tokens,
        prompt: None,
    })
}

/// The optional body of a retry as generation options.
pub(crate) fn retry_options(body: &web::Bytes) -> Result<GenerationOptions, ApiError> {
    let b: RetryRequest = crate::error::optional_json(body)?;
    generation_options(b.model_id, b.preset_id, b.temperature, b.max_tokens)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryRequest {
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<String>,
    #[schema(format = Uuid)]
    preset_id: Option<String>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f64>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<i64>,
}

pub(crate) fn generation_settings(
    temperature: Option<f64>,
    max_tokens: Option<i64>,
) -> Result<(Option<f64>, Option<u32>), ApiError> {
    Ok((
        temperature
            .map(domain::Temperature::new)
            .transpose()?
            .map(domain::Temperature::value),
        max_tokens
            .map(|n| domain::MaxTokens::new(n, None, limits::MAX_TOKENS_CEILING))
            .transpose()?
            .map(domain::MaxTokens::value),
    ))
}

/// The new text, and for the answer (`regenerate=true`, or the streamed form) its overrides.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRequest {
    #[schema(min_length = 1, max_length = 32000)]
    content: String,
    /// The answer's model (only when an answer is asked for).
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<String>,
    /// The answer's preset (only when an answer is asked for).
    #[schema(format = Uuid)]
    preset_id: Option<String>,
    /// The answer's temperature, 0–2 (only when an answer is asked for).
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f64>,
    /// The answer's token cap (only when an answer is asked for).
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<i64>,
}

impl EditRequest {
    /// The new content and the answer's options.
    pub(crate) fn into_parts(self) -> Result<(MessageContent, GenerationOptions), ApiError> {
        Ok((
            MessageContent::parse(self.content)?,
            generation_options(
                self.model_id,
                self.preset_id,
                self.temperature,
                self.max_tokens,
            )?,
        ))
    }

    pub(crate) fn asks_for_an_answer(&self) -> bool {
        self.model_id.is_some()
            || self.preset_id.is_some()
            || self.temperature.is_some()
            || self.max_tokens.is_some()
    }
}
