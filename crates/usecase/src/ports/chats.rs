//! Conversations as stored: chats, their message trees, lists and search, and the records of
//! what each answer used.

use domain::{
    Chat, ChatId, ChatTitle, GenerationRecord, Message, MessageId, MessageStatus, ModelId,
    PresetId, Role, SystemPrompt, Timestamp, UserId,
};

use super::RepoError;

/// A chat to create together with its root message.
#[derive(Debug, Clone)]
pub struct NewChat {
    /// New chat id.
    pub id: ChatId,
    /// Owner.
    pub owner: UserId,
    /// Title given at creation, if any.
    pub title: Option<ChatTitle>,
    /// System prompt sent before every path.
    pub system_prompt: Option<SystemPrompt>,
    /// Model for this chat.
    pub model_id: Option<ModelId>,
    /// Preset for this chat.
    pub preset_id: Option<PresetId>,
    /// Id of the root (system) message.
    pub root_id: MessageId,
    /// Content of the root message (may be empty).
    pub root_content: String,
    /// Creation time of both rows.
    pub created_at: Timestamp,
}

/// A message to add to a chat's tree.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// New id.
    pub id: MessageId,
    /// The parent; MUST be a message of the same chat.
    pub parent_id: MessageId,
    /// `user` or `assistant` (a chat has exactly one `system` message, its root).
    pub role: Role,
    /// Text.
    pub content: String,
    /// Initial status (`streaming` for an answer still being generated).
    pub status: MessageStatus,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewMessage {
    /// The message as it reads once stored in `chat`.
    #[must_use]
    pub fn stored_in(&self, chat: ChatId) -> Message {
        Message {
            id: self.id,
            chat_id: chat,
            parent_id: Some(self.parent_id),
            role: self.role,
            content: self.content.clone(),
            status: self.status,
            created_at: self.created_at,
            generation: None,
        }
    }
}

/// How a streaming answer ended.
#[derive(Debug, Clone)]
pub struct FinishedAnswer {
    /// The answer, created with status `streaming`.
    pub message: MessageId,
    /// The question it answers (its parent).
    pub question: MessageId,
    /// Everything generated (the partial text when it did not complete).
    pub content: String,
    /// `complete`, `interrupted` or `failed`.
    pub status: MessageStatus,
    /// The generation record (stored for complete answers and whenever usage is known).
    pub record: Option<GenerationRecord>,
    /// The chat's current leaf when the generation began. The answer becomes the current
    /// leaf only if the user is still there (or on the question); a user who moved to
    /// another branch meanwhile stays where they are.
    pub leaf_at_start: MessageId,
    /// When it ended.
    pub now: Timestamp,
}

/// What deleting a subtree did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedSubtree {
    /// Every removed message, the one asked for first.
    pub removed: Vec<MessageId>,
    /// The chat's current leaf afterwards (the nearest surviving ancestor when the old leaf
    /// was removed).
    pub current_leaf: MessageId,
}

/// How a chat list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatSort {
    /// Most recently changed first (the default).
    #[default]
    UpdatedDesc,
    /// Least recently changed first.
    UpdatedAsc,
    /// Newest first.
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// By title, A→Z.
    TitleAsc,
    /// By title, Z→A.
    TitleDesc,
}

/// A chat list request.
#[derive(Debug, Clone, Default)]
pub struct ChatQuery {
    /// Case-insensitive substring of the title (`%` and `_` are literal).
    pub title: Option<domain::SearchQuery>,
    /// Order.
    pub sort: ChatSort,
    /// Which page (its limit always applies; its number only without `after`).
    pub page: domain::PageRequest,
    /// Keyset pagination: the page starts right after this chat, in `sort`'s order. The
    /// total is not counted then (its cost grows with the list).
    pub after: Option<ChatCursor>,
    /// Do not count the total (the first page of a keyset walk).
    pub without_total: bool,
}

/// A chat's version as caches key it: `updated_at` (microseconds) and the message count.
/// Every change of a chat's messages changes it.
pub type ChatVersion = (i64, u64);

/// A position in a chat list: the sort key and id of the last chat seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCursor {
    /// The sort key of that chat.
    pub key: CursorKey,
    /// Its id (the tie-breaker).
    pub id: ChatId,
}

/// The sort key a [`ChatCursor`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorKey {
    /// `updated_at` or `created_at`, microseconds.
    Time(i64),
    /// The title (`None` sorts before every title).
    Title(Option<String>),
}

/// One page of a chat list.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatList {
    /// The chats, in order.
    pub items: Vec<ChatSummary>,
    /// How many chats match, counted only for a request without a cursor.
    pub total: Option<u64>,
    /// Where the next page starts, when there is one.
    pub next: Option<ChatCursor>,
}

impl ChatCursor {
    /// The cursor that continues after `chat` in `sort`'s order.
    #[must_use]
    pub fn after(chat: &Chat, sort: ChatSort) -> Self {
        let key = match sort {
            ChatSort::UpdatedDesc | ChatSort::UpdatedAsc => {
                CursorKey::Time(chat.updated_at.as_unix_micros())
            }
            ChatSort::CreatedDesc | ChatSort::CreatedAsc => {
                CursorKey::Time(chat.created_at.as_unix_micros())
            }
            ChatSort::TitleAsc | ChatSort::TitleDesc => {
                CursorKey::Title(chat.title.as_ref().map(|t| t.as_str().to_owned()))
            }
        };
        Self { key, id: chat.id }
    }
}

/// A chat in a list, with the text of its current leaf as a preview.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSummary {
    /// The chat.
    pub chat: Chat,
    /// The current leaf's content (truncated by the caller as it likes).
    pub preview: String,
}

/// Changes to a chat's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ChatPatch {
    /// A user-set title (never overwritten by generated titles afterwards).
    pub title: Option<ChatTitle>,
    /// A new system prompt; `Some(None)` removes it.
    pub system_prompt: Option<Option<SystemPrompt>>,
    /// A new model; `Some(None)` removes it.
    pub model_id: Option<Option<ModelId>>,
    /// A new preset (one of the owner's); `Some(None)` removes it.
    pub preset_id: Option<Option<PresetId>>,
}

/// A message found by a search, with its chat's title.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message.
    pub message: Message,
    /// Its chat's title, if any.
    pub chat_title: Option<ChatTitle>,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// The hits, newest first; `total` counts at most [`domain::limits::SEARCH_TOTAL_CAP`].
    pub page: domain::Page<SearchHit>,
    /// Whether `page.total` is the true number of matches (false: there are more than the
    /// cap).
    pub total_exact: bool,
    /// Whether every message in scope was searched (false: a query shorter than
    /// [`domain::limits::SEARCH_INDEXED_MIN`] read only the newest
    /// [`domain::limits::SEARCH_SHORT_WINDOW`] messages).
    pub searched_all: bool,
}

/// Chats and their message trees. Every method is scoped to `owner`: a chat of another user
/// MUST behave exactly like a chat that does not exist ([`RepoError::NotFound`]).
pub trait ChatRepository: Send + Sync + 'static {
    /// Creates the chat and its root `system` message.
    ///
    /// Implementations MUST write both rows in one transaction.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User) when the owner does not exist.
    fn create_chat(&self, chat: NewChat) -> impl Future<Output = Result<Chat, RepoError>> + Send;

    /// The chat, if `owner` owns it.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat).
    fn get_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Chat, RepoError>> + Send;

    /// One page of the owner's chats: by offset with a true total, or (with
    /// `query.after`) by keyset without one; with the cursor of the next page when there is
    /// one. Implementations MUST use a constant number of queries whatever the page size, and
    /// a keyset page MUST cost the same wherever it is in the list. Titles sort with `None`
    /// first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_chats(
        &self,
        owner: UserId,
        query: ChatQuery,
    ) -> impl Future<Output = Result<ChatList, RepoError>> + Send;

    /// Moves the chat's current leaf to `message`, which MUST be in the chat.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat) or [`Entity::Message`](super::Entity::Message).
    fn select_leaf(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Chat, RepoError>> + Send;

    /// Applies `patch` and bumps `updated_at`.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat).
    fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
        now: Timestamp,
    ) -> impl Future<Output = Result<Chat, RepoError>> + Send;

    /// Messages of the owner's chats (or of one chat) whose content contains `query`,
    /// case-insensitively (`%` and `_` literal), newest first (`created_at`, then id). The
    /// total is exact up to [`domain::limits::SEARCH_TOTAL_CAP`]; a query shorter than
    /// [`domain::limits::SEARCH_INDEXED_MIN`] characters reads only the newest
    /// [`domain::limits::SEARCH_SHORT_WINDOW`] messages in scope. Implementations MUST
    /// NOT read every message of a large scope for a query that an index can answer.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat) when `chat` is not the owner's.
    fn search_messages(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: domain::SearchQuery,
        page: domain::PageRequest,
    ) -> impl Future<Output = Result<SearchResults, RepoError>> + Send;

    /// Every message of the chat, in creation order.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat).
    fn list_messages(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Vec<Message>, RepoError>> + Send;

    /// Adds a message under `message.parent_id` and, when `move_leaf`, makes it the chat's
    /// current leaf; bumps the message count and `updated_at` (see
    /// [`ChatRepository::append_message_from`]).
    ///
    /// # Errors
    /// As [`ChatRepository::append_message_from`].
    fn append_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        move_leaf: bool,
    ) -> impl Future<Output = Result<Message, RepoError>> + Send {
        async move {
            self.append_message_from(owner, chat, (message, move_leaf), None)
                .await
                .map(|(m, _)| m)
        }
    }

    /// [`ChatRepository::append_message`]; with `expected`, a write made from a known chat
    /// version: when the chat was still there (nobody wrote in between) the chat's version
    /// after this write is returned too, so a cache can extend its copy instead of reading
    /// the chat again.
    ///
    /// Implementations MUST do all of it in one transaction and MUST serialise concurrent
    /// appends to one chat so that none is lost.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat), or with [`Entity::Message`](super::Entity::Message) when the
    /// parent is not a message of this chat.
    fn append_message_from(
        &self,
        owner: UserId,
        chat: ChatId,
        message: (NewMessage, bool),
        expected: Option<ChatVersion>,
    ) -> impl Future<Output = Result<(Message, Option<ChatVersion>), RepoError>> + Send;

    /// Starts a streamed turn: adds `question` under its parent as the current leaf and the
    /// `streaming` row of its `answer` under it (the leaf stays on the question), as
    /// [`ChatRepository::append_message`] does for each.
    ///
    /// # Errors
    /// As [`ChatRepository::append_message_from`].
    fn append_turn(
        &self,
        owner: UserId,
        chat: ChatId,
        question: NewMessage,
        answer: NewMessage,
    ) -> impl Future<Output = Result<Message, RepoError>> + Send {
        async move {
            self.append_turn_from(owner, chat, (question, answer), None)
                .await
                .map(|(m, _)| m)
        }
    }

    /// [`ChatRepository::append_turn`], from a known version as in
    /// [`ChatRepository::append_message_from`]. Implementations MUST write both rows in one
    /// transaction.
    ///
    /// # Errors
    /// As [`ChatRepository::append_message_from`].
    fn append_turn_from(
        &self,
        owner: UserId,
        chat: ChatId,
        turn: (NewMessage, NewMessage),
        expected: Option<ChatVersion>,
    ) -> impl Future<Output = Result<(Message, Option<ChatVersion>), RepoError>> + Send;

    /// Stores a finished assistant answer: the message, its generation record, and the
    /// current leaf moved to it.
    ///
    /// # Errors
    /// As [`ChatRepository::append_message_from`].
    fn append_answer(
        &self,
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        record: GenerationRecord,
    ) -> impl Future<Output = Result<Message, RepoError>> + Send {
        async move {
            self.append_answer_from(owner, chat, (message, record), None)
                .await
                .map(|(m, _)| m)
        }
    }

    /// [`ChatRepository::append_answer`], from a known version as in
    /// [`ChatRepository::append_message_from`]. Implementations MUST write the three in one
    /// transaction.
    ///
    /// # Errors
    /// As [`ChatRepository::append_message_from`].
    fn append_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: (NewMessage, GenerationRecord),
        expected: Option<ChatVersion>,
    ) -> impl Future<Output = Result<(Message, Option<ChatVersion>), RepoError>> + Send;

    /// Removes a message and its whole subtree (their generation records stay, detached) and
    /// moves the current leaf to the nearest surviving ancestor if it was removed.
    ///
    /// Implementations MUST do all of it in one transaction.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat) or [`Entity::Message`](super::Entity::Message);
    /// [`RepoError::Conflict`] for the root message.
    fn delete_subtree(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> impl Future<Output = Result<DeletedSubtree, RepoError>> + Send;

    /// Ends a streaming answer: its final content and status, its generation record, the
    /// chat's current leaf moved to it (unless the user moved elsewhere, see
    /// [`FinishedAnswer::leaf_at_start`]) and the chat's version bumped.
    ///
    /// # Errors
    /// As [`ChatRepository::finish_answer_from`].
    fn finish_answer(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: FinishedAnswer,
    ) -> impl Future<Output = Result<(), RepoError>> + Send {
        async move {
            self.finish_answer_from(owner, chat, answer, None)
                .await
                .map(|_| ())
        }
    }

    /// [`ChatRepository::finish_answer`], from a known version as in
    /// [`ChatRepository::append_message_from`] (returns the version after it, if so).
    ///
    /// Implementations MUST write all of it in one transaction, and only while the message
    /// is still `streaming` (an answer ends once).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when the chat or the message is gone (deleted meanwhile);
    /// [`RepoError::Conflict`] when the message is no longer `streaming`.
    fn finish_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: FinishedAnswer,
        expected: Option<ChatVersion>,
    ) -> impl Future<Output = Result<Option<ChatVersion>, RepoError>> + Send;

    /// Marks `interrupted` every message still `streaming` that was created before
    /// `created_before` (answers whose generation died with a process), bumping their chats'
    /// versions; an answer whose question is still the current leaf becomes the leaf (as if
    /// it had ended). Returns how many were marked.
    ///
    /// # Errors
    /// Storage failures.
    fn interrupt_streaming(
        &self,
        created_before: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;

    /// Sets a generated title, only while the chat has no title at all (a user's title, or
    /// an earlier generated one, is never overwritten). Does not change `updated_at`.
    /// Returns whether the title was set.
    ///
    /// # Errors
    /// Storage failures.
    fn set_generated_title(
        &self,
        owner: UserId,
        chat: ChatId,
        title: ChatTitle,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;

    /// Deletes the chat with all its messages. Its generation records stay, detached (what
    /// the chat cost still counts in analytics and quotas).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Chat`](super::Entity::Chat).
    fn delete_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Stores the record of a model call that stored no answer (its `chat_id` and
    /// `message_id` are `None`): it counts in the caller's analytics all the same.
    ///
    /// # Errors
    /// Storage failures.
    fn record_generation(
        &self,
        record: GenerationRecord,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}
