//! Presets: named generation settings (model, temperature, max tokens, system prompt).

use crate::chat::SystemPrompt;
use crate::id::{PresetId, UserId};
use crate::model::ModelId;
use crate::time::Timestamp;
use crate::validation::{InvalidInput, Problem, bounded_text, limits};

bounded_text!(
    /// A preset name: 1–100 characters.
    PresetName,
    "name",
    1,
    limits::PRESET_NAME_MAX
);
bounded_text!(
    /// A preset description: at most 500 characters.
    PresetDescription,
    "description",
    0,
    limits::PRESET_DESCRIPTION_MAX
);

/// Sampling temperature, 0–2.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Temperature(f64);

impl Temperature {
    /// Accepts a finite value in `0..=2`.
    ///
    /// # Errors
    /// [`InvalidInput`] on `temperature` otherwise.
    pub fn new(value: f64) -> Result<Self, InvalidInput> {
        if value.is_finite() && (0.0..=limits::TEMPERATURE_MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidInput::new(
                "temperature",
                Problem::OutOfRange {
                    min: 0.0,
                    max: limits::TEMPERATURE_MAX,
                },
            ))
        }
    }

    /// The value.
    #[must_use]
    pub const fn value(self) -> f64 {
        self.0
    }
}

/// Most tokens an answer may have: 1 up to the model's context (or a configured ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxTokens(u32);

impl MaxTokens {
    /// Accepts `1..=ceiling`, where the ceiling is the model's context length when known,
    /// else `configured_max`.
    ///
    /// # Errors
    /// [`InvalidInput`] on `max_tokens` otherwise.
    pub fn new(
        value: i64,
        context_length: Option<u32>,
        configured_max: u32,
    ) -> Result<Self, InvalidInput> {
        let ceiling = context_length.map_or(configured_max, |c| c.min(configured_max));
        if (1..=i64::from(ceiling)).contains(&value) {
            Ok(Self(value as u32))
        } else {
            Err(InvalidInput::new(
                "max_tokens",
                Problem::OutOfRange {
                    min: 1.0,
                    max: f64::from(ceiling),
                },
            ))
        }
    }

    /// The value.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }
}

/// A stored preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// Identity.
    pub id: PresetId,
    /// Owner; presets are private.
    pub owner: UserId,
    /// Name.
    pub name: PresetName,
    /// Description.
    pub description: Option<PresetDescription>,
    /// Model to use.
    pub model_id: Option<ModelId>,
    /// Sampling temperature.
    pub temperature: Option<Temperature>,
    /// Answer length cap.
    pub max_tokens: Option<MaxTokens>,
    /// System prompt sent before the conversation.
    pub system_prompt: Option<SystemPrompt>,
    /// Owner's favourite flag.
    pub is_favorite: bool,
    /// How many times it was used.
    pub usage_count: u64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_is_between_zero_and_two() {
        assert!(Temperature::new(0.0).is_ok());
        assert!(Temperature::new(2.0).is_ok());
        assert!(Temperature::new(-0.1).is_err());
        assert!(Temperature::new(2.01).is_err());
        assert!(Temperature::new(f64::NAN).is_err());
    }

    #[test]
    fn max_tokens_is_bounded_by_the_model_context_or_the_configured_ceiling() {
        assert!(MaxTokens::new(8_192, Some(8_192), 100_000).is_ok());
        assert!(MaxTokens::new(8_193, Some(8_192), 100_000).is_err());
        assert!(MaxTokens::new(100_000, None, 100_000).is_ok());
        assert!(MaxTokens::new(100_001, None, 100_000).is_err());
        assert!(MaxTokens::new(0, None, 100_000).is_err());
        assert!(MaxTokens::new(-5, None, 100_000).is_err());
    }
}
