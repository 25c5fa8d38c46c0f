//! Accounts as stored, and what they used (for quotas and account views).

use domain::{Timestamp, User, UserId, Username};

use super::RepoError;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// New id.
    pub id: UserId,
    /// Login name.
    pub username: Username,
    /// PHC string of the password hash (never the password).
    pub password_hash: String,
    /// Its role.
    pub role: domain::AccountRole,
    /// Waits for an admin's approval before it can log in.
    pub pending: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A user with the hash needed to check a password.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// PHC string of the password hash.
    pub password_hash: String,
}

/// User accounts.
pub trait UserRepository: Send + Sync + 'static {
    /// Stores a new user.
    ///
    /// # Errors
    /// [`RepoError::Conflict`] when the name is taken, compared case-insensitively.
    fn create_user(&self, user: NewUser) -> impl Future<Output = Result<User, RepoError>> + Send;

    /// The user with this name (case-insensitively), with its password hash.
    ///
    /// # Errors
    /// Storage failures only; an unknown name is `Ok(None)`.
    fn find_credentials(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<UserCredentials>, RepoError>> + Send;

    /// The user with this id.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User).
    fn get_user(&self, id: UserId) -> impl Future<Output = Result<User, RepoError>> + Send;

    /// A page of users, oldest first, with the true total.
    ///
    /// # Errors
    /// Storage failures.
    fn list_users(
        &self,
        page: domain::PageRequest,
    ) -> impl Future<Output = Result<domain::Page<User>, RepoError>> + Send;

    /// Changes an account (operator actions).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User).
    fn update_user(
        &self,
        id: UserId,
        change: UserChange,
        now: Timestamp,
    ) -> impl Future<Output = Result<User, RepoError>> + Send;
}

/// An operator's change to an account.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// Disable (or re-enable) the account.
    pub disabled: Option<bool>,
    /// A new password hash (PHC string).
    pub password_hash: Option<String>,
    /// Bump the token epoch: every access token issued so far stops working.
    pub end_sessions: bool,
    /// A new role.
    pub role: Option<domain::AccountRole>,
    /// Approve (`Some(false)`) a pending account.
    pub pending: Option<bool>,
    /// New quota limits of the account's own.
    pub quota: Option<domain::QuotaOverrides>,
}

/// What accounts used, for quotas and account views.
pub trait UsageRepository: Send + Sync + 'static {
    /// Cost and tokens of `user`'s generation records in `[from, to)`.
    ///
    /// # Errors
    /// Storage failures.
    fn usage_between(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<domain::PeriodUsage, RepoError>> + Send;

    /// The account's own quota limits.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User).
    fn quota_overrides(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<domain::QuotaOverrides, RepoError>> + Send;

    /// Cost and tokens of `user`'s records since each of `since` (until now), in one
    /// statement.
    ///
    /// # Errors
    /// Storage failures.
    fn usage_since(
        &self,
        user: UserId,
        since: [Timestamp; 2],
    ) -> impl Future<Output = Result<[domain::PeriodUsage; 2], RepoError>> + Send;
}
