//! Bringing data from elsewhere. Adapters read the original service's database
//! ([`LegacySource`]) and ChatGPT exports ([`ConversationSource`]) into these shapes, in the
//! source's own terms; the import use case checks them and writes each account's data in
//! one transaction ([`ImportRepository`]).

use std::path::Path;

use domain::{
    ChatId, ChatTitle, ForeignNode, ForeignRoot, MessageId, Preset, PromptTemplate, RebuiltTree,
    SystemPrompt, Timestamp, UserId,
};
use tokio::sync::mpsc;

use super::{BoxError, NewUser, RepoError};

/// A chat to store whole: its row and its rebuilt tree (root first, parents first).
#[derive(Debug, Clone)]
pub struct ChatImport {
    /// The chat's id (kept from the source, or derived from it).
    pub id: ChatId,
    /// Title.
    pub title: Option<ChatTitle>,
    /// System prompt.
    pub system_prompt: Option<SystemPrompt>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The messages and the current leaf.
    pub tree: RebuiltTree,
}

/// Everything to write for one account.
#[derive(Debug, Clone)]
pub struct AccountImport {
    /// Whose data it is.
    pub owner: UserId,
    /// The account itself, when it comes along (the original service's users); otherwise
    /// `owner` must exist.
    pub user: Option<NewUser>,
    /// Chats.
    pub chats: Vec<ChatImport>,
    /// Templates (owned by `owner`).
    pub templates: Vec<PromptTemplate>,
    /// Presets (owned by `owner`).
    pub presets: Vec<Preset>,
}

/// What an import wrote, and what it found already there, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Chats written.
    pub chats: u64,
    /// Chats already there (or, in a report, unreadable).
    pub chats_skipped: u64,
    /// Messages written (roots included).
    pub messages: u64,
    /// Templates written.
    pub templates: u64,
    /// Templates already there (or, in a report, invalid).
    pub templates_skipped: u64,
    /// Presets written.
    pub presets: u64,
    /// Presets already there (or, in a report, invalid).
    pub presets_skipped: u64,
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: Self) {
        self.chats += other.chats;
        self.chats_skipped += other.chats_skipped;
        self.messages += other.messages;
        self.templates += other.templates;
        self.templates_skipped += other.templates_skipped;
        self.presets += other.presets;
        self.presets_skipped += other.presets_skipped;
    }
}

/// What an account's import wrote. Whatever was there already (the same id) is skipped, so
/// importing twice writes nothing the second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountImported {
    /// The account was created (not there before).
    pub user_created: bool,
    /// Its chats, messages, templates and presets.
    pub counts: ImportCounts,
}

/// What [`RepoError::Conflict`] says when an imported user's name belongs to another
/// account (any other conflict is data colliding with data, e.g. two imports at once).
pub const NAME_TAKEN: &str = "username is taken";

/// Writes imported data.
pub trait ImportRepository: Send + Sync + 'static {
    /// Writes `account` in **one** transaction: the user (unless its id exists), then every
    /// chat (unless its id, or the id of one of its messages, exists), template and preset
    /// whose id does not exist yet. With `dry_run` the transaction is rolled back: the counts
    /// say what a real run would write.
    ///
    /// # Errors
    /// [`RepoError::Conflict`] with [`NAME_TAKEN`] when the user's name is taken by another
    /// account, with anything else when a concurrent write took an id first (nothing is
    /// written either way); [`RepoError::NotFound`] when `user` is `None` and `owner` does not
    /// exist; storage failures (nothing is written).
    fn import_account(
        &self,
        account: AccountImport,
        dry_run: bool,
    ) -> impl Future<Output = Result<AccountImported, RepoError>> + Send;
}

/// A user of the original service, as stored there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyUser {
    /// The `uuid` column.
    pub uuid: String,
    /// The `name` column.
    pub name: String,
    /// The passlib hash (bcrypt).
    pub password_hash: String,
    /// When it registered.
    pub created_at: Timestamp,
}

/// A node of the original's `serialized_structure` (flattened: a tree as deep as a long
/// conversation is a list here, not a nesting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyNode {
    /// A message's `uuid`.
    pub uuid: String,
    /// Its parent's `uuid` (`None` for the root).
    pub parent: Option<String>,
}

/// A `message` row of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMessage {
    /// The `uuid` column.
    pub uuid: String,
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text.
    pub content: String,
    /// When it was written.
    pub created_at: Timestamp,
}

/// A chat (`discussionstructure`) of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyChat {
    /// The `uuid` column.
    pub uuid: String,
    /// Title.
    pub title: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The tree's nodes, the root first and every node after its parent, or why it could
    /// not be read (a legacy pickle, broken JSON).
    pub structure: Result<Vec<LegacyNode>, String>,
    /// Its `message` rows.
    pub messages: Vec<LegacyMessage>,
}

/// A `prompttemplate` row of the original.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyTemplate {
    /// The `uuid` column.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Content with `{name}` placeholders.
    pub content: String,
    /// Category.
    pub category: Option<String>,
    /// Visible to everyone.
    pub is_public: bool,
    /// Favourite.
    pub is_favorite: bool,
    /// Times used.
    pub usage_count: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A `conversationpreset` row of the original.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyPreset {
    /// The `uuid` column.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Model id (never checked by the original).
    pub model_id: Option<String>,
    /// Temperature, stored as text.
    pub temperature: Option<String>,
    /// Answer length cap.
    pub max_tokens: Option<i64>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Favourite.
    pub is_favorite: bool,
    /// Times used.
    pub usage_count: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One user of the original with everything they own.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyAccount {
    /// The user.
    pub user: LegacyUser,
    /// Their chats.
    pub chats: Vec<LegacyChat>,
    /// Their templates (or why a row cannot be read).
    pub templates: Vec<Result<LegacyTemplate, String>>,
    /// Their presets (or why a row cannot be read).
    pub presets: Vec<Result<LegacyPreset, String>>,
}

/// The original service's database.
pub trait LegacySource: Send + Sync {
    /// The row ids of its users, oldest first.
    ///
    /// # Errors
    /// When the database cannot be read or is not the original's schema.
    fn user_rows(&self) -> impl Future<Output = Result<Vec<i64>, BoxError>> + Send;

    /// The user of row `row` with everything they own.
    ///
    /// # Errors
    /// When the database cannot be read.
    fn account(&self, row: i64) -> impl Future<Output = Result<LegacyAccount, BoxError>> + Send;
}

/// One conversation of an export, with Arbor ids already derived for its owner (so the same
/// export imported twice by one user names the same chats, and by two users, different ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignConversation {
    /// The chat's id.
    pub id: ChatId,
    /// Title.
    pub title: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Its root.
    pub root: ForeignRoot,
    /// The nodes below the root.
    pub nodes: Vec<ForeignNode>,
    /// The node the source shows as current.
    pub current: Option<MessageId>,
}

/// Why an export cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Neither a JSON file nor a zip archive.
    #[error("not a ChatGPT export: expected conversations.json or the export's zip archive")]
    NotAnExport,
    /// Readable, but not what an export holds (truncated JSON, a missing field, a zip
    /// without `conversations.json`).
    #[error("the export is malformed: {0}")]
    Malformed(String),
    /// It expands (or counts) beyond what an import takes.
    #[error("the export is too large: {0}")]
    TooLarge(String),
    /// The file could not be read.
    #[error("the export could not be read")]
    Io(#[source] BoxError),
}

/// Reads ChatGPT exports.
pub trait ConversationSource: Send + Sync {
    /// Starts reading the export at `path` (`conversations.json` or the zip holding it) for
    /// `owner`: its conversations arrive in file order, one at a time (the file is never read
    /// whole into memory); the first error — a file that cannot be opened or is no export
    /// included — arrives in the stream and ends it. Implementations MUST NOT block the
    /// caller (reading runs elsewhere).
    ///
    /// # Errors
    /// When reading cannot even be started.
    fn conversations(
        &self,
        path: &Path,
        owner: UserId,
    ) -> Result<mpsc::Receiver<Result<ForeignConversation, ExportError>>, ExportError>;
}
