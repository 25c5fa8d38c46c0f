//! Outbound ports: what the use cases need from the outside world.
//!
//! Implemented by the `infra-*` crates and, for tests, by the fakes in `crate::testing`
//! (feature `testing`). Every repository method is one **atomic business operation**: an
//! implementation MUST apply all of its writes in one transaction, or none of them.
//!
//! One file a family: `accounts` (users, usage counters), [`credentials`] (hashing, tokens,
//! refresh families, API keys, sessions), [`admin`] (audit log, invites, settings), `chats`
//! (chats, trees, lists, search, generation records), `library` (templates, presets, the model
//! catalogue), [`settings`] (per-user settings), [`analytics`] (usage aggregates), [`import`] (what imports read and write), [`llm`] (the
//! language-model gateway), [`cluster`] (coordination between replicas); the clock, ids and
//! the health probe here. The modules the use cases grew from re-export what they used to
//! define, so `usecase::auth::CredentialRepository` and `usecase::ports::credentials::…` name
//! the same trait.

use domain::Timestamp;

mod accounts;
pub mod admin;
pub mod analytics;
mod chats;
pub mod cluster;
pub mod credentials;
pub mod import;
mod library;
pub mod llm;
pub mod settings;

pub use accounts::{NewUser, UsageRepository, UserChange, UserCredentials, UserRepository};
pub use chats::{
    ChatCursor, ChatList, ChatPatch, ChatQuery, ChatRepository, ChatSort, ChatSummary, ChatVersion,
    CursorKey, DeletedSubtree, FinishedAnswer, NewChat, NewMessage, SearchHit, SearchResults,
};
pub use library::{
    ModelCatalogRepository, PresetQuery, PresetRepository, TemplateQuery, TemplateRepository,
    TemplateSort,
};

/// Type-erased cause of a failure the caller cannot act on but must log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of record a [`RepoError::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A user account.
    User,
    /// A chat (also: a chat of another user).
    Chat,
    /// A message (also: a message of another chat).
    Message,
    /// A prompt template.
    Template,
    /// A preset.
    Preset,
    /// A model of the catalogue.
    Model,
    /// A registration invite (also: a used or expired one).
    Invite,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Chat => "chat",
            Self::Message => "message",
            Self::Template => "template",
            Self::Preset => "preset",
            Self::Model => "model",
            Self::Invite => "invite",
        })
    }
}

/// The vocabulary every repository adapter translates its failures into.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No such record visible to the caller (absent, or owned by someone else).
    #[error("{0} not found")]
    NotFound(Entity),
    /// The write collides with existing data (a unique key).
    #[error("conflicts with existing data: {0}")]
    Conflict(&'static str),
    /// The stored data breaks an invariant (a corrupt row or tree).
    #[error("stored data is inconsistent")]
    Corrupt(#[source] BoxError),
    /// The database cannot be reached or is overloaded; retrying later may work.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// Any other storage failure.
    #[error("storage failure")]
    Unexpected(#[source] BoxError),
}

/// Reads the time. The domain never does.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// Makes new ids. Adapters SHOULD make them time-ordered (UUID v7) so indexes stay compact.
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, never used, 128-bit id.
    fn next_id(&self) -> u128;
}

/// Whether the storage answers (for readiness probes).
pub trait HealthCheck: Send + Sync + 'static {
    /// Succeeds when the database answers a trivial query and its schema is in place.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when it does not.
    fn ping(&self) -> impl Future<Output = Result<(), RepoError>> + Send;
}
