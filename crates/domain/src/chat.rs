//! Chats: a titled conversation tree owned by one user.

use crate::id::{ChatId, MessageId, PresetId, UserId};
use crate::model::ModelId;
use crate::time::Timestamp;
use crate::validation::{bounded_text, limits};

bounded_text!(
    /// A chat title: 1–200 characters, not blank.
    ChatTitle,
    "title",
    1,
    limits::CHAT_TITLE_MAX
);

bounded_text!(
    /// A system prompt (of a chat or a preset): at most 8,000 characters; may be empty.
    SystemPrompt,
    "system_prompt",
    0,
    limits::SYSTEM_PROMPT_MAX
);

bounded_text!(
    /// A search query: 2–200 characters. `%` and `_` are ordinary characters.
    SearchQuery,
    "q",
    limits::SEARCH_QUERY_MIN,
    limits::SEARCH_QUERY_MAX
);

/// The title shown for a chat that has none yet.
pub const UNTITLED_CHAT: &str = "Untitled Chat";

/// A stored chat.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    /// Identity.
    pub id: ChatId,
    /// Owner; nobody else may see or change it.
    pub owner: UserId,
    /// Title, generated after the first answer or set by the user.
    pub title: Option<ChatTitle>,
    /// Whether the title was set by the user (never overwritten by generated titles).
    pub title_set_by_user: bool,
    /// Sent to the model before every conversation path.
    pub system_prompt: Option<SystemPrompt>,
    /// Model for this chat's answers, unless a request names another.
    pub model_id: Option<ModelId>,
    /// Preset whose settings apply to this chat's answers.
    pub preset_id: Option<PresetId>,
    /// The root message (role `system`).
    pub root_id: MessageId,
    /// The end of the branch the user is on; new messages continue from here.
    pub current_leaf_id: MessageId,
    /// How many messages the tree holds, the root included.
    pub message_count: u64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of the chat or its tree.
    pub updated_at: Timestamp,
}

impl Chat {
    /// The title to display.
    #[must_use]
    pub fn display_title(&self) -> &str {
        self.title.as_ref().map_or(UNTITLED_CHAT, ChatTitle::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Problem;

    #[test]
    fn titles_must_not_be_blank_or_too_long() {
        assert_eq!(ChatTitle::parse("   ").unwrap_err().problem, Problem::Blank);
        assert!(ChatTitle::parse("t".repeat(201)).is_err());
        assert!(ChatTitle::parse("t".repeat(200)).is_ok());
    }

    #[test]
    fn an_empty_system_prompt_is_allowed_but_a_huge_one_is_not() {
        assert!(SystemPrompt::parse("").is_ok());
        assert!(SystemPrompt::parse("s".repeat(8_001)).is_err());
    }

    #[test]
    fn search_queries_need_two_characters() {
        assert!(SearchQuery::parse("a").is_err());
        assert!(SearchQuery::parse("50%").is_ok());
    }
}
