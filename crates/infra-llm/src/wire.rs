//! Our own tolerant wire types for OpenAI/OpenRouter responses: unknown fields are ignored,
//! every field is optional, `finish_reason` is any string and error codes may be numbers.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// What the call cost in USD, when the provider says (OpenRouter, LiteLLM): a number
    /// or a numeric string.
    #[serde(default)]
    pub cost: Option<Value>,
}

/// A non-negative amount from a JSON number or numeric string, as plain decimal text with
/// at most 12 decimals (picodollars): `4.2e-6` becomes `0.0000042`.
pub(crate) fn decimal(value: &Value) -> Option<String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    let n: f64 = text.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    if !text.contains(['e', 'E']) {
        return Some(text);
    }
    let plain = format!("{n:.12}");
    Some(plain.trim_end_matches('0').trim_end_matches('.').to_owned())
}

/// A positive whole number from a JSON number or numeric string (context lengths).
pub(crate) fn count(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireError {
    #[serde(default)]
    pub code: Option<Value>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireErrorBody {
    pub error: WireError,
}

/// An HTTP-like status from an error `code` (a number, or a numeric string).
pub(crate) fn code_as_status(code: &Value) -> Option<u16> {
    match code {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireMessage {
    #[serde(default)]
    pub content: Option<String>,
    /// Every other member (`role`, `tool_calls`, `refusal`, …).
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

impl WireMessage {
    /// The members other than the role and the text that carry something (tool calls, a
    /// refusal), as a JSON object; `None` when there are none.
    pub fn extra(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.rest);
        let kept: serde_json::Map<String, Value> = rest
            .into_iter()
            .filter(|(k, v)| k != "role" && !v.is_null())
            .collect();
        (!kept.is_empty()).then(|| Value::Object(kept).to_string())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireChoice {
    #[serde(default)]
    pub message: Option<WireMessage>,
    #[serde(default)]
    pub delta: Option<WireMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireCompletion {
    #[serde(default)]
    pub choices: Vec<WireChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub error: Option<WireError>,
}

pub(crate) type WireChunk = WireCompletion;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WirePricing {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub completion: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireArchitecture {
    #[serde(default)]
    pub input_modalities: Option<Vec<String>>,
    #[serde(default)]
    pub output_modalities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// OpenRouter's and most providers' field.
    #[serde(default)]
    pub context_length: Option<Value>,
    /// OpenRouter's per-endpoint figure.
    #[serde(default)]
    pub top_provider: Option<WireTopProvider>,
    /// LiteLLM's.
    #[serde(default)]
    pub max_input_tokens: Option<Value>,
    /// vLLM's.
    #[serde(default)]
    pub max_model_len: Option<Value>,
    /// Others'.
    #[serde(default)]
    pub context_window: Option<Value>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub pricing: Option<WirePricing>,
    #[serde(default)]
    pub architecture: Option<WireArchitecture>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireTopProvider {
    #[serde(default)]
    pub context_length: Option<Value>,
}

impl WireModel {
    /// The context length from whichever field the provider uses.
    pub(crate) fn context(&self) -> Option<u32> {
        [
            self.context_length.as_ref(),
            self.top_provider
                .as_ref()
                .and_then(|t| t.context_length.as_ref()),
            self.max_input_tokens.as_ref(),
            self.max_model_len.as_ref(),
            self.context_window.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find_map(count)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModels {
    #[serde(default)]
    pub data: Vec<WireModel>,
}
