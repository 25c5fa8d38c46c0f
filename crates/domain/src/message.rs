//! Messages: the nodes of a conversation tree.

use std::fmt;
use std::str::FromStr;

use crate::id::{ChatId, MessageId};
use crate::time::Timestamp;
use crate::validation::{bounded_text, limits};

bounded_text!(
    /// What a user writes: 1–32,000 characters, not blank.
    MessageContent,
    "content",
    1,
    limits::MESSAGE_CONTENT_MAX
);

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The chat's root: its initial instruction (possibly empty).
    System,
    /// A person.
    User,
    /// The language model.
    Assistant,
}

impl Role {
    /// The wire name (`system`, `user`, `assistant`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no known variant of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant(pub String);

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value {:?}", self.0)
    }
}

impl std::error::Error for UnknownVariant {}

impl FromStr for Role {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Finished; immutable from now on.
    Complete,
    /// An assistant answer being generated.
    Streaming,
    /// Stopped before the end (cancelled, client gone, shutdown, crash); partial text kept.
    Interrupted,
    /// The provider failed; partial text kept.
    Failed,
}

impl MessageStatus {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Streaming => "streaming",
            Self::Interrupted => "interrupted",
            Self::Failed => "failed",
        }
    }

    /// Whether the message can no longer change.
    #[must_use]
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::Streaming)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageStatus {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "complete" => Ok(Self::Complete),
            "streaming" => Ok(Self::Streaming),
            "interrupted" => Ok(Self::Interrupted),
            "failed" => Ok(Self::Failed),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// A stored message.
///
/// `content` is plain text rather than [`MessageContent`]: the root system message may be
/// empty and an interrupted answer may hold a partial text; limits apply to what users send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Identity.
    pub id: MessageId,
    /// The chat whose tree holds it.
    pub chat_id: ChatId,
    /// The message it answers or follows; `None` only for the root.
    pub parent_id: Option<MessageId>,
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Life-cycle state.
    pub status: MessageStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// For an answer: what its generation used (`None` until it ends, and for questions).
    pub generation: Option<Box<crate::GenerationStats>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Problem;

    #[test]
    fn blank_content_is_rejected() {
        assert_eq!(
            MessageContent::parse(" \n\t").unwrap_err().problem,
            Problem::Blank
        );
    }

    #[test]
    fn content_over_the_limit_is_rejected_and_at_the_limit_accepted() {
        assert!(MessageContent::parse("あ".repeat(limits::MESSAGE_CONTENT_MAX)).is_ok());
        assert_eq!(
            MessageContent::parse("a".repeat(limits::MESSAGE_CONTENT_MAX + 1))
                .unwrap_err()
                .problem,
            Problem::TooLong {
                len: limits::MESSAGE_CONTENT_MAX + 1,
                max: limits::MESSAGE_CONTENT_MAX
            }
        );
    }

    #[test]
    fn roles_and_statuses_round_trip_through_their_names() {
        for role in [Role::System, Role::User, Role::Assistant] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        for status in [
            MessageStatus::Complete,
            MessageStatus::Streaming,
            MessageStatus::Interrupted,
            MessageStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
        }
        assert!("robot".parse::<Role>().is_err());
    }
}
