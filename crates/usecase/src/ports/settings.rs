//! Per-user settings as stored.

use domain::{ModelId, Timestamp, UserId};

use super::RepoError;

/// Per-user settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSettings {
    /// The model this user's chats use unless a chat, preset or request names another.
    pub default_model_id: Option<ModelId>,
}

/// Storage of per-user settings.
pub trait SettingsRepository: Send + Sync + 'static {
    /// The user's settings (defaults when never saved).
    ///
    /// # Errors
    /// Storage failures.
    fn get_settings(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<UserSettings, RepoError>> + Send;

    /// Saves the user's settings (insert or replace, in one statement).
    ///
    /// # Errors
    /// Storage failures; [`RepoError::NotFound`] for an unknown user.
    fn put_settings(
        &self,
        user: UserId,
        settings: UserSettings,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}
