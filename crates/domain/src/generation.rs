//! What one model call produced and cost.

use crate::id::{ChatId, MessageId, UserId};
use crate::message::UnknownVariant;
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

impl TokenUsage {
    /// What a call used when its provider reported nothing (an answer cancelled, cut short
    /// or broken before the usage came, or a provider that never sends it): one token per
    /// four bytes of UTF-8, rounded up. About right for English; for Japanese (three bytes a
    /// character) it is nearer one token per character than a count of characters would be.
    #[must_use]
    pub const fn estimated(prompt_bytes: usize, completion_bytes: usize) -> Self {
        let prompt_tokens = prompt_bytes.div_ceil(4) as u64;
        let completion_tokens = completion_bytes.div_ceil(4) as u64;
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The record kept for every model call: each answer stored in a chat, and each call of the
/// OpenAI-compatible surface that stores nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRecord {
    /// The answer it describes (`None` for a call that stored no answer).
    pub message_id: Option<MessageId>,
    /// The chat of that answer (`None` for a call that stored no answer).
    pub chat_id: Option<ChatId>,
    /// Whose usage it is.
    pub user_id: UserId,
    /// Provider name (e.g. `openrouter`, or the upstream provider it routed to).
    pub provider: String,
    /// Model that answered.
    pub model: ModelId,
    /// Tokens used.
    pub usage: TokenUsage,
    /// What the call cost.
    pub cost: Usd,
    /// Where that cost comes from.
    pub cost_source: CostSource,
    /// Time from request to the last token, in milliseconds.
    pub latency_ms: u64,
    /// Time from request to the first token, in milliseconds (streams only).
    pub time_to_first_token_ms: Option<u64>,
    /// Why generation stopped (`stop`, `length`, …).
    pub finish_reason: Option<String>,
    /// When the record was written.
    pub created_at: Timestamp,
    /// What the call was for.
    pub kind: GenerationKind,
}

/// What a model call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenerationKind {
    /// An answer in a chat (complete, failed or interrupted).
    #[default]
    Answer,
    /// A chat's generated title.
    Title,
    /// A call of the OpenAI-compatible surface that stored no answer.
    Completion,
}

impl GenerationKind {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Title => "title",
            Self::Completion => "completion",
        }
    }
}

impl std::str::FromStr for GenerationKind {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "answer" => Ok(Self::Answer),
            "title" => Ok(Self::Title),
            "completion" => Ok(Self::Completion),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// Each count's share of their sum in hundredths of a percent, rounded so that the shares add
/// up to exactly 100.00 % (largest remainder: the floors, plus one hundredth for the largest
/// remainders until the sum is reached). All zeros when the sum is zero.
#[must_use]
pub fn shares_in_hundredths(counts: &[u64]) -> Vec<u64> {
    let total: u128 = counts.iter().map(|&c| u128::from(c)).sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let exact: Vec<(u128, u128)> = counts
        .iter()
        .map(|&c| {
            let scaled = u128::from(c) * 10_000;
            (scaled / total, scaled % total)
        })
        .collect();
    let mut shares: Vec<u64> = exact
        .iter()
        .map(|&(floor, _)| u64::try_from(floor).unwrap_or(u64::MAX))
        .collect();
    let missing = 10_000 - shares.iter().sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    // Largest remainder first; ties to the earlier entry, so the result is deterministic.
    by_remainder.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for &i in by_remainder
        .iter()
        .take(usize::try_from(missing).unwrap_or(0))
    {
        shares[i] += 1;
    }
    shares
}

/// What one answer's generation used, shown with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationStats {
    /// The model that answered.
    pub model: ModelId,
    /// The provider that served it.
    pub provider: String,
    /// Tokens used (zero when the provider reported none, e.g. for a cancelled answer).
    pub usage: TokenUsage,
    /// What it cost.
    pub cost: Usd,
    /// Where that cost comes from.
    pub cost_source: CostSource,
    /// From request to the last token, in milliseconds.
    pub latency_ms: u64,
    /// From request to the first token, in milliseconds (streams only).
    pub time_to_first_token_ms: Option<u64>,
    /// Why it stopped (`stop`, `length`, `cancelled`, `error`, …).
    pub finish_reason: Option<String>,
}

impl GenerationRecord {
    /// The same record naming no chat and no answer: kept for what the call used when
    /// what it answered into is gone.
    #[must_use]
    pub fn detached(self) -> Self {
        Self {
            chat_id: None,
            message_id: None,
            ..self
        }
    }

    /// What the answer shows of this record.
    #[must_use]
    pub fn stats(&self) -> GenerationStats {
        GenerationStats {
            model: self.model.clone(),
            provider: self.provider.clone(),
            usage: self.usage,
            cost: self.cost,
            cost_source: self.cost_source,
            latency_ms: self.latency_ms,
            time_to_first_token_ms: self.time_to_first_token_ms,
            finish_reason: self.finish_reason.clone(),
        }
    }
}

/// Where a generation's cost comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CostSource {
    /// The provider reported what the call cost (`usage.cost`).
    Provider,
    /// The catalogue's per-token prices times the tokens used (zero when it lists none).
    #[default]
    Catalogue,
    /// The catalogue's prices times [estimated](TokenUsage::estimated) tokens: the provider
    /// reported neither the cost nor the usage.
    Estimate,
}

impl CostSource {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Catalogue => "catalogue",
            Self::Estimate => "estimate",
        }
    }
}

impl std::str::FromStr for CostSource {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "provider" => Ok(Self::Provider),
            "catalogue" => Ok(Self::Catalogue),
            "estimate" => Ok(Self::Estimate),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// The cost of a call: what the provider reported, else the catalogue's prices.
#[must_use]
pub fn call_cost(
    reported: Option<Usd>,
    prices: &crate::model::Pricing,
    usage: TokenUsage,
) -> (Usd, CostSource) {
    match reported {
        Some(cost) => (cost, CostSource::Provider),
        None => (
            prices.cost(usage.prompt_tokens, usage.completion_tokens),
            CostSource::Catalogue,
        ),
    }
}

/// What a call used and cost: the provider's token counts, else (when it sent any text)
/// [estimated](TokenUsage::estimated) ones from the prompt's and the answer's sizes in
/// bytes, else none; priced as [`call_cost`] says, marked [`CostSource::Estimate`] when
/// the catalogue priced estimated tokens.
#[must_use]
pub fn usage_and_cost(
    reported_cost: Option<Usd>,
    prices: &crate::model::Pricing,
    reported_usage: Option<TokenUsage>,
    text_bytes: Option<(usize, usize)>,
) -> (TokenUsage, Usd, CostSource) {
    let (usage, estimated) = match (reported_usage, text_bytes) {
        (Some(usage), _) => (usage, false),
        (None, Some((prompt, answer))) => (TokenUsage::estimated(prompt, answer), true),
        (None, None) => (TokenUsage::default(), false),
    };
    match call_cost(reported_cost, prices, usage) {
        (cost, CostSource::Catalogue) if estimated => (usage, cost, CostSource::Estimate),
        (cost, source) => (usage, cost, source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_exactly_one_hundred_percent() {
        // 12 / 2 / 1 of 15: 80.00, 13.33…, 6.66… — truncated they made 99.99.
        assert_eq!(shares_in_hundredths(&[12, 2, 1]), [8_000, 1_333, 667]);
        assert_eq!(shares_in_hundredths(&[1, 1, 1]), [3_334, 3_333, 3_333]);
        assert_eq!(shares_in_hundredths(&[0, 5]), [0, 10_000]);
        assert_eq!(shares_in_hundredths(&[0, 0]), [0, 0]);
        assert!(shares_in_hundredths(&[]).is_empty());
        for counts in [vec![7, 3, 3, 1], vec![1; 7], vec![u64::MAX, 1]] {
            assert_eq!(
                shares_in_hundredths(&counts).iter().sum::<u64>(),
                10_000,
                "{counts:?}"
            );
        }
    }
    use crate::model::Pricing;

    #[test]
    fn unreported_usage_is_estimated_at_four_bytes_a_token_rounded_up() {
        assert_eq!(
            TokenUsage::estimated(9, 0),
            TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 0,
                total_tokens: 3
            }
        );
        // "こんにちは": five characters, fifteen bytes, four tokens.
        let japanese = TokenUsage::estimated(0, "こんにちは".len());
        assert_eq!(japanese.completion_tokens, 4);
        assert_eq!(japanese.total_tokens, 4);
    }

    #[test]
    fn a_reported_cost_wins_over_the_catalogue_prices() {
        let prices = Pricing {
            prompt: Usd::parse_decimal("0.000001").unwrap(),
            completion: Usd::parse_decimal("0.000002").unwrap(),
        };
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        };
        let reported = Usd::parse_decimal("0.0042").unwrap();
        assert_eq!(
            call_cost(Some(reported), &prices, usage),
            (reported, CostSource::Provider)
        );
        assert_eq!(
            call_cost(None, &prices, usage),
            (
                Usd::parse_decimal("0.00002").unwrap(),
                CostSource::Catalogue
            )
        );
        // No usage reported: estimated from the text when there was any, else nothing.
        let estimate = TokenUsage::estimated(40, 20);
        assert_eq!(
            usage_and_cost(None, &prices, None, Some((40, 20))),
            (
                estimate,
                prices.cost(estimate.prompt_tokens, estimate.completion_tokens),
                CostSource::Estimate
            )
        );
        assert_eq!(
            usage_and_cost(Some(reported), &prices, None, Some((40, 20))),
            (estimate, reported, CostSource::Provider)
        );
        assert_eq!(
            usage_and_cost(None, &prices, None, None),
            (TokenUsage::default(), Usd::default(), CostSource::Catalogue)
        );
        assert_eq!(
            usage_and_cost(None, &prices, Some(usage), Some((40, 20))).2,
            CostSource::Catalogue
        );
        assert_eq!("provider".parse(), Ok(CostSource::Provider));
        assert_eq!("estimate".parse(), Ok(CostSource::Estimate));
        assert!("guess".parse::<CostSource>().is_err());
    }
}
