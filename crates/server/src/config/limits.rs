//! `[limits]`: the text limits of what users send, lowerable by the operator (never above
//! the domain's ceilings, which are also the defaults).

use domain::InputLimits;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Characters a message, a chat title and a system prompt may have.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// One message (1–32,000).
    pub message_chars: usize,
    /// A chat title (1–200).
    pub title_chars: usize,
    /// A system prompt, or a chat's initial message (1–8,000).
    pub system_prompt_chars: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let d = InputLimits::default();
        Self {
            message_chars: d.message_chars,
            title_chars: d.title_chars,
            system_prompt_chars: d.system_prompt_chars,
        }
    }
}

impl LimitSettings {
    /// The limits, checked against their ceilings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the limit that is 0 or above its ceiling.
    pub fn input(&self) -> Result<InputLimits, ConfigError> {
        InputLimits::new(
            self.message_chars,
            self.title_chars,
            self.system_prompt_chars,
        )
        .map_err(|e| ConfigError::Invalid {
            key: match e.field {
                "message_chars" => "limits.message_chars",
                "title_chars" => "limits.title_chars",
                _ => "limits.system_prompt_chars",
            },
            problem: e.problem.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_may_be_lowered_but_not_raised_past_their_ceiling_or_to_zero() {
        let defaults = LimitSettings::default().input();
        assert_eq!(defaults.ok(), Some(InputLimits::default()));
        let lower = LimitSettings {
            message_chars: 4_000,
            ..LimitSettings::default()
        };
        assert_eq!(lower.input().map(|l| l.message_chars).ok(), Some(4_000));
        for (settings, key) in [
            (
                LimitSettings {
                    message_chars: 32_001,
                    ..LimitSettings::default()
                },
                "limits.message_chars",
            ),
            (
                LimitSettings {
                    title_chars: 0,
                    ..LimitSettings::default()
                },
                "limits.title_chars",
            ),
        ] {
            match settings.input() {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
