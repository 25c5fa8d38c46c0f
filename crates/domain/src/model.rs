//! Language models as the provider's catalogue describes them, and what they cost.

use std::fmt;

use crate::time::Timestamp;
use crate::validation::{InvalidInput, Problem, check_text, limits};

/// A provider's model id, e.g. `openai/gpt-4o-mini`: 1–200 characters, no white space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(String);

impl ModelId {
    /// Accepts a model id.
    ///
    /// # Errors
    /// [`InvalidInput`] on `model_id` when blank, too long or containing white space.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        check_text("model_id", &raw, 1, limits::MODEL_ID_MAX)?;
        if let Some(c) = raw.chars().find(|c| c.is_whitespace()) {
            return Err(InvalidInput::new("model_id", Problem::InvalidCharacter(c)));
        }
        Ok(Self(raw))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of US dollars, exact to the picodollar (10⁻¹² USD).
///
/// Per-token prices are tiny decimals (`0.000000075`); floating point would make sums
/// drift, so amounts are integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i64);

impl Usd {
    /// Decimal places kept.
    pub const SCALE: u32 = 12;
    /// Picodollars in one dollar.
    pub const ONE_DOLLAR: i64 = 1_000_000_000_000;

    /// From picodollars.
    #[must_use]
    pub const fn from_pico(pico: i64) -> Self {
        Self(pico)
    }

    /// In picodollars.
    #[must_use]
    pub const fn as_pico(self) -> i64 {
        self.0
    }

    /// Reads a non-negative decimal string such as `"0.000003"` or `"2"`. Digits past the
    /// twelfth decimal place are rounded half up.
    ///
    /// # Errors
    /// [`InvalidInput`] on `price` when the text is not a plain non-negative decimal or is too big.
    pub fn parse_decimal(raw: &str) -> Result<Self, InvalidInput> {
        let bad = || InvalidInput::new("price", Problem::Malformed("not a non-negative decimal"));
        let raw = raw.trim();
        let (int_part, frac_part) = raw.split_once('.').unwrap_or((raw, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut pico: i64 = 0;
        for c in int_part.chars() {
            pico = pico
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(c as u8 - b'0')))
                .ok_or_else(bad)?;
        }
        pico = pico.checked_mul(Self::ONE_DOLLAR).ok_or_else(bad)?;
        let mut unit = Self::ONE_DOLLAR;
        let mut round_up = false;
        for (i, c) in frac_part.chars().enumerate() {
            let digit = i64::from(c as u8 - b'0');
            if i < Self::SCALE as usize {
                unit /= 10;
                pico = pico.checked_add(digit * unit).ok_or_else(bad)?;
            } else {
                round_up = i == Self::SCALE as usize && digit >= 5;
                break;
            }
        }
        if round_up {
            pico = pico.checked_add(1).ok_or_else(bad)?;
        }
        Ok(Self(pico))
    }

    /// `self × n`, saturating.
    #[must_use]
    pub const fn times(self, n: u64) -> Self {
        let n = if n > i64::MAX as u64 {
            i64::MAX
        } else {
            n as i64
        };
        Self(self.0.saturating_mul(n))
    }

    /// `self + other`, saturating.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Usd {
    /// A plain decimal with trailing zeros removed, e.g. `0.000123` or `2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let one = Self::ONE_DOLLAR.unsigned_abs();
        let int = abs / one;
        let frac = abs % one;
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
    }
}

/// Prices per token, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pricing {
    /// Per prompt (input) token.
    pub prompt: Usd,
    /// Per completion (output) token.
    pub completion: Usd,
}

impl Pricing {
    /// What a call with these token counts costs.
    #[must_use]
    pub const fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Usd {
        self.prompt
            .times(prompt_tokens)
            .plus(self.completion.times(completion_tokens))
    }
}

/// A model of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Provider id.
    pub id: ModelId,
    /// Display name.
    pub name: String,
    /// Provider's description.
    pub description: Option<String>,
    /// Context window in tokens, when known.
    pub context_length: Option<u32>,
    /// Prices per token.
    pub pricing: Pricing,
    /// Input modalities (`text`, `image`, …).
    pub input_modalities: Vec<String>,
    /// Output modalities.
    pub output_modalities: Vec<String>,
    /// When the provider published it (Unix seconds), when known.
    pub created: Option<i64>,
    /// When Arbor last fetched this entry.
    pub fetched_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_prices_are_read_exactly() {
        assert_eq!(Usd::parse_decimal("0.000003").unwrap().as_pico(), 3_000_000);
        assert_eq!(Usd::parse_decimal("0.000000075").unwrap().as_pico(), 75_000);
        assert_eq!(
            Usd::parse_decimal("2").unwrap().as_pico(),
            2 * Usd::ONE_DOLLAR
        );
        assert_eq!(Usd::parse_decimal("0").unwrap().as_pico(), 0);
        assert_eq!(
            Usd::parse_decimal(".5").unwrap().as_pico(),
            Usd::ONE_DOLLAR / 2
        );
        assert_eq!(Usd::parse_decimal("0.0000000000015").unwrap().as_pico(), 2);
    }

    #[test]
    fn malformed_prices_are_rejected() {
        for bad in ["", ".", "-1", "1e-6", "abc", "0.0.1", "99999999999"] {
            assert!(Usd::parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn costs_are_exact_and_print_as_decimals() {
        let pricing = Pricing {
            prompt: Usd::parse_decimal("0.000003").unwrap(),
            completion: Usd::parse_decimal("0.000015").unwrap(),
        };
        let cost = pricing.cost(1_000, 500);
        assert_eq!(cost.to_string(), "0.0105");
        assert_eq!(Usd::from_pico(0).to_string(), "0");
    }

    #[test]
    fn model_ids_have_no_white_space() {
        assert!(ModelId::parse("openai/gpt-4o-mini").is_ok());
        assert!(ModelId::parse("open ai").is_err());
        assert!(ModelId::parse("").is_err());
    }
}
