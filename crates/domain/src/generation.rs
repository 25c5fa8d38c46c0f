//! What one model call produced and cost.

use crate::id::{ChatId, MessageId, UserId};
use crate::model::{ModelId, Usd};
use crate::time::Timestamp;

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum (as the provider reports it).
    pub total_tokens: u64,
}

/// The record kept for every assistant answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRecord {
    /// The answer it describes.
    pub message_id: MessageId,
    /// The chat of that answer.
    pub chat_id: ChatId,
    /// Whose usage it is.
    pub user_id: UserId,
    /// Provider name (e.g. `openrouter`, or the upstream provider it routed to).
    pub provider: String,
    /// Model that answered.
    pub model: ModelId,
    /// Tokens used.
    pub usage: TokenUsage,
    /// Cost from the catalogue's per-token prices.
    pub cost: Usd,
    /// Time from request to the last token, in milliseconds.
    pub latency_ms: u64,
    /// Time from request to the first token, in milliseconds (streams only).
    pub time_to_first_token_ms: Option<u64>,
    /// Why generation stopped (`stop`, `length`, …).
    pub finish_reason: Option<String>,
    /// When the record was written.
    pub created_at: Timestamp,
}
