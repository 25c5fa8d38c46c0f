//! Administration: accounts (search with usage, disable, approve, role, password reset,
//! deletion, quotas), the registration policy and its invites. Every action is checked
//! against the actor's role here too (the HTTP layer checks first) and written to the audit
//! log in the same breath.

use domain::{
    AccountRole, Page, PageRequest, Password, QuotaOverrides, RegistrationPolicy, User, UserId,
};

use super::{AuthError, AuthService, CredentialRepository, PasswordHasher, TokenCodec};
use crate::ports::{
    Clock, Entity, IdGenerator, NewUser, RepoError, UsageRepository, UserChange, UserRepository,
};

pub use crate::ports::admin::{AdminRepository, AuditEntry, Invite, UserOverview};

/// What accounts and their administration store in: users, credentials, the audit log,
/// invites and settings, usage.
pub trait AdminStore:
    UserRepository + CredentialRepository + AdminRepository + UsageRepository
{
}

impl<T> AdminStore for T where
    T: UserRepository + CredentialRepository + AdminRepository + UsageRepository
{
}

/// The setting holding the registration policy.
pub const REGISTRATION_SETTING: &str = "registration_policy";
/// The prefix of invite codes.
pub const INVITE_PREFIX: &str = "inv_";
/// The longest an invite may stay valid.
pub const INVITE_TTL_MAX_HOURS: u32 = 24 * 90;

/// An admin's change to an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountUpdate {
    /// Disable (or enable).
    pub disabled: Option<bool>,
    /// A new role.
    pub role: Option<AccountRole>,
    /// Approve a pending account.
    pub approve: bool,
}

/// A freshly made invite: the code is shown once.
#[derive(Debug, Clone)]
pub struct IssuedInvite {
    /// What is stored.
    pub invite: Invite,
    /// The code to hand over.
    pub code: String,
}

/// Inbound port of administration. Every method refuses a non-admin `actor`
/// ([`AuthError::Forbidden`]).
pub trait AdminUseCase: Send + Sync + 'static {
    /// Accounts with this month's usage.
    ///
    /// # Errors
    /// Storage failures.
    fn search_users(
        &self,
        actor: &User,
        query: Option<String>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<UserOverview>, AuthError>> + Send;

    /// Disables/enables, approves or changes the role of an account (never the actor's own
    /// role or state: [`AuthError::SelfAdministration`]).
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    fn update_account(
        &self,
        actor: &User,
        target: UserId,
        update: AccountUpdate,
    ) -> impl Future<Output = Result<User, AuthError>> + Send;

    /// Sets a password and ends every session of the account.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    fn reset_password(
        &self,
        actor: &User,
        target: UserId,
        password: Password,
    ) -> impl Future<Output = Result<User, AuthError>> + Send;

    /// Sets the account's own quota limits.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    fn set_quota(
        &self,
        actor: &User,
        target: UserId,
        quota: QuotaOverrides,
    ) -> impl Future<Output = Result<User, AuthError>> + Send;

    /// Deletes another account with all its data.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`], [`AuthError::SelfAdministration`].
    fn delete_account(
        &self,
        actor: &User,
        target: UserId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;

    /// The audit log, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn audit_log(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<AuditEntry>, AuthError>> + Send;

    /// The registration policy in force.
    ///
    /// # Errors
    /// Storage failures.
    fn registration_policy(
        &self,
    ) -> impl Future<Output = Result<RegistrationPolicy, AuthError>> + Send;

    /// Changes the registration policy (for every replica: it is stored).
    ///
    /// # Errors
    /// Storage failures.
    fn set_registration_policy(
        &self,
        actor: &User,
        policy: RegistrationPolicy,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;

    /// A single-use invite valid for `hours`.
    ///
    /// # Errors
    /// Storage failures.
    fn create_invite(
        &self,
        actor: &User,
        hours: u32,
    ) -> impl Future<Output = Result<IssuedInvite, AuthError>> + Send;

    /// Invites, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_invites(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<Invite>, AuthError>> + Send;
}

fn admin_only(actor: &User) -> Result<(), AuthError> {
    if actor.role == AccountRole::Admin && !actor.disabled {
        Ok(())
    } else {
        Err(AuthError::Forbidden)
    }
}

fn unknown_user(e: RepoError) -> AuthError {
    match e {
        RepoError::NotFound(Entity::User) => AuthError::UnknownUser,
        other => other.into(),
    }
}

/// Describes a quota for the audit log.
fn quota_detail(q: &QuotaOverrides) -> String {
    let cost = |c: Option<domain::Usd>| c.map_or_else(|| "default".to_owned(), |c| c.to_string());
    let tokens = |t: Option<u64>| t.map_or_else(|| "default".to_owned(), |t| t.to_string());
    format!(
        "daily cost {}, monthly cost {}, daily tokens {}, monthly tokens {}",
        cost(q.daily_cost),
        cost(q.monthly_cost),
        tokens(q.daily_tokens),
        tokens(q.monthly_tokens)
    )
}

impl<R: AdminStore, H: PasswordHasher, T: TokenCodec, C: Clock, I: IdGenerator>
    AuthService<R, H, T, C, I>
{
    /// Writes an audit entry; a failure fails the action's response (the change is made, so
    /// the log says so).
    async fn audit(
        &self,
        actor: Option<&User>,
        action: &'static str,
        target: Option<&User>,
        detail: String,
    ) -> Result<(), AuthError> {
        self.repo
            .append_audit(AuditEntry {
                id: self.ids.next_id(),
                actor: actor.map(|a| a.id),
                actor_name: actor
                    .map_or_else(|| "cli".to_owned(), |a| a.username.as_str().to_owned()),
                action: action.to_owned(),
                target: target.map(|t| t.id),
                target_name: target.map(|t| t.username.as_str().to_owned()),
                detail,
                at: self.clock.now(),
            })
            .await?;
        Ok(())
    }

    /// Writes that `deleted` is gone: the trail keeps its name, not the id of an account that
    /// no longer exists (an account deleting itself acts under its own name).
    pub(super) async fn audit_deleted(
        &self,
        actor: Option<&User>,
        action: &'static str,
        deleted: &User,
    ) -> Result<(), AuthError> {
        self.repo
            .append_audit(AuditEntry {
                id: self.ids.next_id(),
                actor: actor.map(|a| a.id),
                actor_name: actor.unwrap_or(deleted).username.as_str().to_owned(),
                action: action.to_owned(),
                target: None,
                target_name: Some(deleted.username.as_str().to_owned()),
                detail: String::new(),
                at: self.clock.now(),
            })
            .await?;
        Ok(())
    }

    /// Changes an account and drops it from the account cache.
    pub(super) async fn change(
        &self,
        target: UserId,
        change: UserChange,
    ) -> Result<User, AuthError> {
        let now = self.clock.now();
        let ends = change.end_sessions;
        let user = self
            .repo
            .update_user(target, change, now)
            .await
            .map_err(unknown_user)?;
        if ends {
            self.repo.revoke_refresh_tokens(user.id, None, now).await?;
        }
        self.forget(user.id);
        Ok(user)
    }

    /// Operator (command line): creates an account with `role`, whatever the policy.
    ///
    /// # Errors
    /// [`AuthError::UsernameTaken`].
    pub async fn create_account(
        &self,
        username: domain::Username,
        password: Password,
        role: AccountRole,
    ) -> Result<User, AuthError> {
        let user = self.new_user(username, &password, role, false).await?;
        let user = match self.repo.create_user(user).await {
            Ok(user) => user,
            Err(RepoError::Conflict(_)) => return Err(AuthError::UsernameTaken),
            Err(e) => return Err(e.into()),
        };
        self.audit(None, "user.create", Some(&user), format!("role {role}"))
            .await?;
        Ok(user)
    }

    /// Operator (command line): sets an account's role.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    pub async fn set_role(
        &self,
        username: &domain::Username,
        role: AccountRole,
    ) -> Result<User, AuthError> {
        let change = UserChange {
            role: Some(role),
            ..UserChange::default()
        };
        self.operator_change(username, change, "user.role", format!("role {role}"))
            .await
    }

    /// Operator (command line): changes the account named so, and audits it.
    async fn operator_change(
        &self,
        username: &domain::Username,
        change: UserChange,
        action: &'static str,
        detail: String,
    ) -> Result<User, AuthError> {
        let user = self.find(username).await?;
        let user = self.change(user.id, change).await?;
        self.audit(None, action, Some(&user), detail).await?;
        Ok(user)
    }

    /// Operator (command line): disables (or re-enables) an account. Disabling ends every
    /// session: refresh tokens are revoked and access tokens stop working at once (each
    /// request checks the account).
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    pub async fn set_disabled(
        &self,
        username: &domain::Username,
        disabled: bool,
    ) -> Result<User, AuthError> {
        let change = UserChange {
            disabled: Some(disabled),
            end_sessions: disabled,
            ..UserChange::default()
        };
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.operator_change(username, change, action, String::new())
            .await
    }

    /// Operator (command line): sets a new password and ends every session of the account.
    ///
    /// # Errors
    /// [`AuthError::UnknownUser`].
    pub async fn set_password(
        &self,
        username: &domain::Username,
        password: Password,
    ) -> Result<User, AuthError> {
        let change = UserChange {
            password_hash: Some(self.hasher.hash(&password).await?),
            end_sessions: true,
            ..UserChange::default()
        };
        self.operator_change(
            username,
            change,
            "user.password_reset",
            "sessions ended".into(),
        )
        .await
    }

    /// A new account's row.
    pub(super) async fn new_user(
        &self,
        username: domain::Username,
        password: &Password,
        role: AccountRole,
        pending: bool,
    ) -> Result<NewUser, AuthError> {
        Ok(NewUser {
            id: UserId::from_u128(self.ids.next_id()),
            username,
            password_hash: self.hasher.hash(password).await?,
            role,
            pending,
            created_at: self.clock.now(),
        })
    }

    /// The stored policy, else the configured one.
    pub(super) async fn policy_in_force(&self) -> Result<RegistrationPolicy, AuthError> {
        Ok(self
            .repo
            .setting(REGISTRATION_SETTING)
            .await?
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.policy.registration))
    }
}

impl<R: AdminStore, H: PasswordHasher, T: TokenCodec, C: Clock, I: IdGenerator> AdminUseCase
    for AuthService<R, H, T, C, I>
{
    async fn search_users(
        &self,
        actor: &User,
        query: Option<String>,
        page: PageRequest,
    ) -> Result<Page<UserOverview>, AuthError> {
        admin_only(actor)?;
        let (month, _) = self.clock.now().utc_month_bounds();
        Ok(self.repo.search_users(query, page, month).await?)
    }

    async fn update_account(
        &self,
        actor: &User,
        target: UserId,
        update: AccountUpdate,
    ) -> Result<User, AuthError> {
        admin_only(actor)?;
        if target == actor.id && (update.disabled.is_some() || update.role.is_some()) {
            return Err(AuthError::SelfAdministration);
        }
        let disabling = update.disabled == Some(true);
        let user = self
            .change(
                target,
                UserChange {
                    disabled: update.disabled,
                    end_sessions: disabling,
                    role: update.role,
                    pending: update.approve.then_some(false),
                    ..UserChange::default()
                },
            )
            .await?;
        for (done, action, detail) in [
            (
                update.disabled.is_some(),
                if disabling {
                    "user.disable"
                } else {
                    "user.enable"
                },
                String::new(),
            ),
            (
                update.role.is_some(),
                "user.role",
                format!("role {}", user.role),
            ),
            (update.approve, "user.approve", String::new()),
        ] {
            if done {
                self.audit(Some(actor), action, Some(&user), detail).await?;
            }
        }
        Ok(user)
    }

    async fn reset_password(
        &self,
        actor: &User,
        target: UserId,
        password: Password,
    ) -> Result<User, AuthError> {
        admin_only(actor)?;
        let hash = self.hasher.hash(&password).await?;
        let user = self
            .change(
                target,
                UserChange {
                    password_hash: Some(hash),
                    end_sessions: true,
                    ..UserChange::default()
                },
            )
            .await?;
        self.audit(
            Some(actor),
            "user.password_reset",
            Some(&user),
            "sessions ended".into(),
        )
        .await?;
        Ok(user)
    }

    async fn set_quota(
        &self,
        actor: &User,
        target: UserId,
        quota: QuotaOverrides,
    ) -> Result<User, AuthError> {
        admin_only(actor)?;
        let user = self
            .change(
                target,
                UserChange {
                    quota: Some(quota),
                    ..UserChange::default()
                },
            )
            .await?;
        self.audit(Some(actor), "user.quota", Some(&user), quota_detail(&quota))
            .await?;
        Ok(user)
    }

    async fn delete_account(&self, actor: &User, target: UserId) -> Result<(), AuthError> {
        admin_only(actor)?;
        if target == actor.id {
            return Err(AuthError::SelfAdministration);
        }
        let user = self.repo.get_user(target).await.map_err(unknown_user)?;
        self.repo
            .delete_user(target, self.clock.now())
            .await
            .map_err(unknown_user)?;
        self.forget(target);
        self.audit_deleted(Some(actor), "user.delete", &user).await
    }

    async fn audit_log(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, AuthError> {
        admin_only(actor)?;
        Ok(self.repo.list_audit(page).await?)
    }

    async fn registration_policy(&self) -> Result<RegistrationPolicy, AuthError> {
        self.policy_in_force().await
    }

    async fn set_registration_policy(
        &self,
        actor: &User,
        policy: RegistrationPolicy,
    ) -> Result<(), AuthError> {
        admin_only(actor)?;
        self.repo
            .put_setting(
                REGISTRATION_SETTING,
                policy.as_str().to_owned(),
                self.clock.now(),
            )
            .await?;
        self.audit(
            Some(actor),
            "registration.policy",
            None,
            format!("policy {policy}"),
        )
        .await
    }

    async fn create_invite(&self, actor: &User, hours: u32) -> Result<IssuedInvite, AuthError> {
        admin_only(actor)?;
        let code = format!("{INVITE_PREFIX}{}", self.tokens.random_secret()?);
        let now = self.clock.now();
        let invite = Invite {
            id: self.ids.next_id(),
            code_hash: self.tokens.digest(&code),
            created_by: Some(actor.id),
            created_at: now,
            expires_at: now
                .plus_micros(i64::from(hours.clamp(1, INVITE_TTL_MAX_HOURS)) * 3_600_000_000),
            used: None,
        };
        self.repo.create_invite(invite.clone()).await?;
        self.audit(
            Some(actor),
            "invite.create",
            None,
            format!("expires {}", invite.expires_at),
        )
        .await?;
        Ok(IssuedInvite { invite, code })
    }

    async fn list_invites(
        &self,
        actor: &User,
        page: PageRequest,
    ) -> Result<Page<Invite>, AuthError> {
        admin_only(actor)?;
        Ok(self.repo.list_invites(page).await?)
    }
}
