//! What administration stores besides accounts: the audit log, invites, settings, and the
//! account overview with its usage.

use domain::{Page, PageRequest, PeriodUsage, Timestamp, User, UserId};

use super::{NewUser, RepoError};

/// One administrative action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Entry id.
    pub id: u128,
    /// Who acted (`None`: the command line).
    pub actor: Option<UserId>,
    /// Their name at the time (`cli` for the command line).
    pub actor_name: String,
    /// What they did (`user.disable`, `user.delete`, `registration.policy`, …).
    pub action: String,
    /// On whom, when an account.
    pub target: Option<UserId>,
    /// That account's name at the time.
    pub target_name: Option<String>,
    /// The change, in words (never a secret).
    pub detail: String,
    /// When.
    pub at: Timestamp,
}

/// A registration invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Id.
    pub id: u128,
    /// Digest of its code (the code itself is shown once).
    pub code_hash: String,
    /// The admin who made it.
    pub created_by: Option<UserId>,
    /// When.
    pub created_at: Timestamp,
    /// Unusable from then on.
    pub expires_at: Timestamp,
    /// When it was used, and by whom.
    pub used: Option<(Timestamp, Option<UserId>)>,
}

/// An account with what it used this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserOverview {
    /// The account.
    pub user: User,
    /// Its usage since the start of the UTC month.
    pub this_month: PeriodUsage,
}

/// What administration stores besides accounts.
pub trait AdminRepository: Send + Sync + 'static {
    /// Accounts whose name contains `query` (case-insensitively; all without one), oldest
    /// first, each with its usage since `since`.
    ///
    /// # Errors
    /// Storage failures.
    fn search_users(
        &self,
        query: Option<String>,
        page: PageRequest,
        since: Timestamp,
    ) -> impl Future<Output = Result<Page<UserOverview>, RepoError>> + Send;

    /// Deletes the account and everything it owns (chats, messages, records, keys, sessions,
    /// presets, templates, settings) in one transaction; audit entries and invites keep
    /// their names but lose the id.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User).
    /// It also leaves a tombstone: [`account_changes_since`] reports the account as changed
    /// from `now` on, so every process drops it from its account cache at its next poll.
    ///
    /// [`account_changes_since`]: crate::auth::CredentialRepository::account_changes_since
    fn delete_user(
        &self,
        id: UserId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Appends to the audit log.
    ///
    /// # Errors
    /// Storage failures.
    fn append_audit(&self, entry: AuditEntry)
    -> impl Future<Output = Result<(), RepoError>> + Send;

    /// The audit log, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_audit(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<AuditEntry>, RepoError>> + Send;

    /// Stores an invite.
    ///
    /// # Errors
    /// Storage failures.
    fn create_invite(&self, invite: Invite) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Invites, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_invites(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<Invite>, RepoError>> + Send;

    /// Creates `user` with the invite whose code has this digest, in one transaction: the
    /// invite is marked used only if it was unused and unexpired at `now`.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Invite`](super::Entity::Invite) (unknown, used or expired);
    /// [`RepoError::Conflict`] for a taken name (the invite stays unused).
    fn create_user_with_invite(
        &self,
        code_hash: String,
        user: NewUser,
        now: Timestamp,
    ) -> impl Future<Output = Result<User, RepoError>> + Send;

    /// A run-time setting.
    ///
    /// # Errors
    /// Storage failures.
    fn setting(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Result<Option<String>, RepoError>> + Send;

    /// Sets a run-time setting.
    ///
    /// # Errors
    /// Storage failures.
    fn put_setting(
        &self,
        name: &'static str,
        value: String,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}
