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
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub pricing: Option<WirePricing>,
    #[serde(default)]
    pub architecture: Option<WireArchitecture>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireModels {
    #[serde(default)]
    pub data: Vec<WireModel>,
}
