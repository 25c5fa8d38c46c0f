//! sea-orm entities, one per table of `migration`. Private to this crate: no entity crosses
//! into the use-case layer.

pub(crate) mod api_keys;
pub(crate) mod audit_log;
pub(crate) mod chats;
pub(crate) mod generations;
pub(crate) mod invites;
pub(crate) mod messages;
pub(crate) mod models;
pub(crate) mod presets;
pub(crate) mod prompt_templates;
pub(crate) mod refresh_tokens;
pub(crate) mod server_settings;
pub(crate) mod user_settings;
pub(crate) mod users;
