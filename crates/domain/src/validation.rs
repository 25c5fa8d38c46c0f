//! Input limits and the one error type every value object reports.

use std::fmt;

/// Default limits from the design (every one is configurable where the design says so).
pub mod limits {
    /// Message content, in characters.
    pub const MESSAGE_CONTENT_MAX: usize = 32_000;
    /// Chat title, in characters.
    pub const CHAT_TITLE_MAX: usize = 200;
    /// System prompt of a chat or preset, in characters.
    pub const SYSTEM_PROMPT_MAX: usize = 8_000;
    /// Username length bounds.
    pub const USERNAME_MIN: usize = 3;
    /// Username length bounds.
    pub const USERNAME_MAX: usize = 32;
    /// Password length bounds, in characters.
    pub const PASSWORD_MIN: usize = 8;
    /// Password length bounds, in characters.
    pub const PASSWORD_MAX: usize = 128;
    /// Template name, in characters.
    pub const TEMPLATE_NAME_MAX: usize = 100;
    /// Template description, in characters.
    pub const TEMPLATE_DESCRIPTION_MAX: usize = 500;
    /// Template content, in characters.
    pub const TEMPLATE_CONTENT_MAX: usize = 20_000;
    /// Template category, in characters.
    pub const CATEGORY_MAX: usize = 50;
    /// Preset name, in characters.
    pub const PRESET_NAME_MAX: usize = 100;
    /// Preset description, in characters.
    pub const PRESET_DESCRIPTION_MAX: usize = 500;
    /// Model id, in characters.
    pub const MODEL_ID_MAX: usize = 200;
    /// API key name, in characters.
    pub const API_KEY_NAME_MAX: usize = 100;
    /// Search query length bounds, in characters.
    pub const SEARCH_QUERY_MIN: usize = 2;
    /// Search query length bounds, in characters.
    pub const SEARCH_QUERY_MAX: usize = 200;
    /// Queries of at least this many characters are answered through a trigram index and
    /// search every message in scope.
    pub const SEARCH_INDEXED_MIN: usize = 3;
    /// A shorter query (which no trigram index can answer) reads only this many of the
    /// newest messages in scope.
    pub const SEARCH_SHORT_WINDOW: u64 = 10_000;
    /// A search counts its matches exactly up to this many; past it the total is this cap
    /// (and the pages beyond it are still served).
    pub const SEARCH_TOTAL_CAP: u64 = 1_000;
    /// Highest page number a list accepts.
    pub const PAGE_MAX: u32 = 10_000;
    /// Largest page size a list accepts.
    pub const PAGE_SIZE_MAX: u32 = 100;
    /// Page size when none is asked for.
    pub const PAGE_SIZE_DEFAULT: u32 = 20;
    /// Temperature bounds.
    pub const TEMPERATURE_MAX: f64 = 2.0;
    /// Largest `max_tokens` accepted when the model's context length is unknown.
    pub const MAX_TOKENS_CEILING: u32 = 1_000_000;
    /// Variables one template may declare.
    pub const TEMPLATE_VARIABLES_MAX: usize = 50;
    /// Length of a template variable name.
    pub const TEMPLATE_VARIABLE_NAME_MAX: usize = 64;
    /// Characters of a rendered template (a placeholder may stand many times in one).
    pub const RENDERED_TEMPLATE_MAX: usize = 100_000;
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Empty or only white space.
    Blank,
    /// Fewer characters than allowed.
    TooShort { len: usize, min: usize },
    /// More characters than allowed.
    TooLong { len: usize, max: usize },
    /// A number outside its range.
    OutOfRange { min: f64, max: f64 },
    /// A character that is not allowed here.
    InvalidCharacter(char),
    /// Malformed in another way, described in words.
    Malformed(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blank => f.write_str("must not be blank"),
            Self::TooShort { len, min } => {
                write!(f, "has {len} characters; at least {min} are required")
            }
            Self::TooLong { len, max } => {
                write!(f, "has {len} characters; at most {max} are allowed")
            }
            Self::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Self::InvalidCharacter(c) => write!(f, "must not contain {c:?}"),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

/// A value that breaks a rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidInput {
    /// The name of the field as the client sent it (`content`, `title`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

impl InvalidInput {
    /// An error for `field`.
    #[must_use]
    pub const fn new(field: &'static str, problem: Problem) -> Self {
        Self { field, problem }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidInput {}

/// Checks a text's length in characters against `min..=max`, and rejects blank text when `min > 0`.
/// The text limits an operator may set (`[limits]`): each at most its value object's own
/// ceiling (the constants in [`limits`], the defaults), never above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Characters of one message.
    pub message_chars: usize,
    /// Characters of a chat title.
    pub title_chars: usize,
    /// Characters of a system prompt (chat or preset) and of a chat's initial message.
    pub system_prompt_chars: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            message_chars: limits::MESSAGE_CONTENT_MAX,
            title_chars: limits::CHAT_TITLE_MAX,
            system_prompt_chars: limits::SYSTEM_PROMPT_MAX,
        }
    }
}

impl InputLimits {
    /// Accepts limits from 1 up to each ceiling.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the first limit out of range.
    pub fn new(
        message_chars: usize,
        title_chars: usize,
        system_prompt_chars: usize,
    ) -> Result<Self, InvalidInput> {
        for (field, value, ceiling) in [
            ("message_chars", message_chars, limits::MESSAGE_CONTENT_MAX),
            ("title_chars", title_chars, limits::CHAT_TITLE_MAX),
            (
                "system_prompt_chars",
                system_prompt_chars,
                limits::SYSTEM_PROMPT_MAX,
            ),
        ] {
            if !(1..=ceiling).contains(&value) {
                return Err(InvalidInput::new(
                    field,
                    Problem::OutOfRange {
                        min: 1.0,
                        max: ceiling as f64,
                    },
                ));
            }
        }
        Ok(Self {
            message_chars,
            title_chars,
            system_prompt_chars,
        })
    }

    fn within(field: &'static str, text: &str, max: usize) -> Result<(), InvalidInput> {
        // A character is at least one byte: most texts are settled without counting.
        if text.len() <= max {
            return Ok(());
        }
        let len = text.chars().count();
        if len > max {
            return Err(InvalidInput::new(field, Problem::TooLong { len, max }));
        }
        Ok(())
    }

    /// A message's content.
    ///
    /// # Errors
    /// [`InvalidInput`] on `content` when it is longer than the limit.
    pub fn message(&self, text: &str) -> Result<(), InvalidInput> {
        Self::within("content", text, self.message_chars)
    }

    /// A chat title.
    ///
    /// # Errors
    /// [`InvalidInput`] on `title` when it is longer than the limit.
    pub fn title(&self, text: &str) -> Result<(), InvalidInput> {
        Self::within("title", text, self.title_chars)
    }

    /// A system prompt (or initial message), named `field`.
    ///
    /// # Errors
    /// [`InvalidInput`] on `field` when it is longer than the limit.
    pub fn system_prompt(&self, field: &'static str, text: &str) -> Result<(), InvalidInput> {
        Self::within(field, text, self.system_prompt_chars)
    }
}

pub(crate) fn check_text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<(), InvalidInput> {
    if min > 0 && raw.trim().is_empty() {
        return Err(InvalidInput::new(field, Problem::Blank));
    }
    let len = raw.chars().count();
    if len < min {
        return Err(InvalidInput::new(field, Problem::TooShort { len, min }));
    }
    if len > max {
        return Err(InvalidInput::new(field, Problem::TooLong { len, max }));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(InvalidInput::new(field, Problem::InvalidCharacter(c)));
    }
    Ok(())
}

/// Declares a text value object with character bounds.
macro_rules! bounded_text {
    ($(#[$meta:meta])* $name:ident, $field:literal, $min:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Smallest number of characters accepted.
            pub const MIN: usize = $min;
            /// Largest number of characters accepted by [`Self::parse`].
            pub const MAX: usize = $max;

            /// Accepts `raw` if it obeys the default bounds.
            ///
            /// # Errors
            /// [`InvalidInput`] naming the field when it is blank (for required text), too short,
            /// too long or contains a control character.
            pub fn parse(raw: impl Into<String>) -> Result<Self, $crate::validation::InvalidInput> {
                Self::parse_with_max(raw, Self::MAX)
            }

            /// Like [`Self::parse`] with a configured upper bound.
            ///
            /// # Errors
            /// As [`Self::parse`].
            pub fn parse_with_max(raw: impl Into<String>, max: usize) -> Result<Self, $crate::validation::InvalidInput> {
                let raw = raw.into();
                $crate::validation::check_text($field, &raw, Self::MIN, max)?;
                Ok(Self(raw))
            }

            /// The text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, by value.
            #[must_use]
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
pub(crate) use bounded_text;

/// A page request: 1-based page number and page size, both bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    page: u32,
    limit: u32,
}

impl PageRequest {
    /// Accepts `page` (1–[`limits::PAGE_MAX`], default 1) and `limit`
    /// (1–[`limits::PAGE_SIZE_MAX`], default [`limits::PAGE_SIZE_DEFAULT`]).
    ///
    /// # Errors
    /// [`InvalidInput`] on `page` or `limit` when out of range.
    pub fn new(page: Option<u32>, limit: Option<u32>) -> Result<Self, InvalidInput> {
        let page = page.unwrap_or(1);
        let limit = limit.unwrap_or(limits::PAGE_SIZE_DEFAULT);
        if !(1..=limits::PAGE_MAX).contains(&page) {
            return Err(InvalidInput::new(
                "page",
                Problem::OutOfRange {
                    min: 1.0,
                    max: f64::from(limits::PAGE_MAX),
                },
            ));
        }
        if !(1..=limits::PAGE_SIZE_MAX).contains(&limit) {
            return Err(InvalidInput::new(
                "limit",
                Problem::OutOfRange {
                    min: 1.0,
                    max: f64::from(limits::PAGE_SIZE_MAX),
                },
            ));
        }
        Ok(Self { page, limit })
    }

    /// The 1-based page number.
    #[must_use]
    pub const fn page(self) -> u32 {
        self.page
    }

    /// The page size.
    #[must_use]
    pub const fn limit(self) -> u32 {
        self.limit
    }

    /// How many items precede this page.
    #[must_use]
    pub const fn offset(self) -> u64 {
        (self.page as u64 - 1) * self.limit as u64
    }

    /// Number of pages needed for `total` items (at least 1).
    #[must_use]
    pub const fn pages_for(self, total: u64) -> u64 {
        let pages = total.div_ceil(self.limit as u64);
        if pages == 0 { 1 } else { pages }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            limit: limits::PAGE_SIZE_DEFAULT,
        }
    }
}

/// One page of a list, with the true total.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items the whole list has.
    pub total: u64,
    /// The page that was asked for.
    pub request: PageRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(Some(10_001), None).is_err());
        assert!(PageRequest::new(None, Some(0)).is_err());
        assert!(PageRequest::new(None, Some(101)).is_err());
        let p = PageRequest::new(Some(3), Some(25)).unwrap();
        assert_eq!(p.offset(), 50);
        assert_eq!(p.pages_for(0), 1);
        assert_eq!(p.pages_for(51), 3);
    }

    #[test]
    fn control_characters_are_rejected_but_newlines_and_tabs_are_not() {
        assert!(check_text("x", "a\nb\tc\r", 1, 10).is_ok());
        assert_eq!(
            check_text("x", "a\u{0}b", 1, 10),
            Err(InvalidInput::new("x", Problem::InvalidCharacter('\u{0}')))
        );
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        assert!(check_text("x", "日本語", 1, 3).is_ok());
        assert_eq!(
            check_text("x", "日本語です", 1, 3),
            Err(InvalidInput::new("x", Problem::TooLong { len: 5, max: 3 }))
        );
    }
}
