//! # Arbor's domain
//!
//! Entities, value objects and rules of a multi-user LLM chat service, with **no
//! dependencies** so any service can embed them: conversation trees (build, validate, walk,
//! branch), prompt templates (`{{variable}}` parsing and rendering), presets, model pricing,
//! and every input limit.
//!
//! Raw input becomes a value object at the edge, and an invalid value cannot be built:
//!
//! ```
//! use domain::{MessageContent, Problem};
//!
//! assert!(MessageContent::parse("Hello!").is_ok());
//! let err = MessageContent::parse("   ").unwrap_err();
//! assert_eq!(err.field, "content");
//! assert_eq!(err.problem, Problem::Blank);
//! ```
//!
//! Templates render with clear errors:
//!
//! ```
//! use std::collections::BTreeMap;
//! use domain::{RenderError, TemplateContent};
//!
//! let t = TemplateContent::parse("Translate {{text}} into {{language}}.")?;
//! let mut values = BTreeMap::new();
//! values.insert("text".to_owned(), "bonjour".to_owned());
//! let err = t.render(&values).unwrap_err();
//! assert!(matches!(err, RenderError::Variables { missing, .. } if missing == ["language"]));
//! values.insert("language".to_owned(), "English".to_owned());
//! assert_eq!(t.render(&values).unwrap(), "Translate bonjour into English.");
//! # Ok::<(), domain::InvalidInput>(())
//! ```
//!
//! Time and identity are values here: the domain never reads a clock or generates an id
//! (the use-case layer's `Clock` and `IdGenerator` ports do).

mod account;
mod chat;
mod generation;
mod id;
mod import;
mod message;
mod model;
mod preset;
mod settings;
mod template;
mod time;
mod title;
mod tree;
mod user;
mod validation;

pub use account::{AccountRole, PeriodUsage, QuotaLimits, QuotaOverrides, RegistrationPolicy};
pub use chat::{Chat, ChatTitle, SearchQuery, SystemPrompt, UNTITLED_CHAT};
pub use generation::{
    CostSource, GenerationKind, GenerationRecord, GenerationStats, TokenUsage, call_cost,
    shares_in_hundredths, usage_and_cost,
};
pub use id::{
    ApiKeyId, ChatId, GenerationId, InvalidId, MessageId, PresetId, TemplateId, TokenId, UserId,
};
pub use import::{
    ForeignMessage, ForeignNode, ForeignRoot, IMPORTED_MESSAGE_MAX_BYTES, RebuiltTree, Repair,
    rebuild_tree,
};
pub use message::{Message, MessageContent, MessageStatus, Role, UnknownVariant};
pub use model::{ModelId, ModelInfo, Pricing, Usd};
pub use preset::{MaxTokens, Preset, PresetDescription, PresetName, Temperature};
pub use settings::GenerationSettings;
pub use template::{
    Category, PromptTemplate, RenderError, TemplateContent, TemplateDescription, TemplateName,
};
pub use time::Timestamp;
pub use title::{
    TITLE_MAX_CHARS, TitleLanguage, clean_title, fallback_title, title_language, title_prompt,
};
pub use tree::{ConversationTree, TreeError};
pub use user::{Password, User, Username};
pub use validation::{InputLimits, InvalidInput, Page, PageRequest, Problem, limits};
