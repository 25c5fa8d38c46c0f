//! Self-service: an account changes its own password, sees and ends its own sessions, and
//! deletes itself. Each needs the account's password where a stolen token must not suffice.

use domain::{Password, TokenId, User, UserId};

use super::admin::AdminStore;
use super::{AuthError, AuthService, PasswordHasher, TokenCodec, TokenPair};
use crate::ports::{Clock, Entity, IdGenerator, RepoError, UserChange};

pub use crate::ports::credentials::{Session, SessionRepository};

/// What self-service stores in: accounts, credentials and sessions, administration's
/// records and usage.
pub trait AccountStore: AdminStore + SessionRepository {}

impl<T: AdminStore + SessionRepository> AccountStore for T {}

/// Inbound port of self-service.
pub trait AccountUseCase: Send + Sync + 'static {
    /// Changes the caller's password (the current one is required). Every session ends —
    /// access and refresh tokens alike — and the caller gets a fresh pair.
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`].
    fn change_password(
        &self,
        user: &User,
        current: Password,
        new: Password,
    ) -> impl Future<Output = Result<TokenPair, AuthError>> + Send;

    /// The caller's sessions.
    ///
    /// # Errors
    /// Storage failures.
    fn sessions(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<Session>, AuthError>> + Send;

    /// Ends one of the caller's sessions (its refresh token stops working; access tokens
    /// expire on their own).
    ///
    /// # Errors
    /// [`AuthError::SessionNotFound`].
    fn revoke_session(
        &self,
        user: UserId,
        session: TokenId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;

    /// Deletes the caller's account and everything it owns, in one transaction (the
    /// password is required).
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`].
    fn delete_own_account(
        &self,
        user: &User,
        password: Password,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
}

impl<R: AccountStore, H: PasswordHasher, T: TokenCodec, C: Clock, I: IdGenerator>
    AuthService<R, H, T, C, I>
{
    /// Checks the account's password (the same hashing work whether or not it matches).
    async fn confirm(&self, user: &User, password: &Password) -> Result<(), AuthError> {
        let stored = self.repo.find_credentials(&user.username).await?;
        let ok = self
            .hasher
            .verify(password, stored.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        match stored {
            Some(c) if ok && c.user.id == user.id => Ok(()),
            _ => Err(AuthError::WrongPassword),
        }
    }
}

impl<R: AccountStore, H: PasswordHasher, T: TokenCodec, C: Clock, I: IdGenerator> AccountUseCase
    for AuthService<R, H, T, C, I>
{
    async fn change_password(
        &self,
        user: &User,
        current: Password,
        new: Password,
    ) -> Result<TokenPair, AuthError> {
        self.confirm(user, &current).await?;
        let hash = self.hasher.hash(&new).await?;
        let changed = self
            .change(
                user.id,
                UserChange {
                    password_hash: Some(hash),
                    end_sessions: true,
                    ..UserChange::default()
                },
            )
            .await?;
        let family = TokenId::from_u128(self.ids.next_id());
        self.issue_pair(&changed, family).await
    }

    async fn sessions(&self, user: UserId) -> Result<Vec<Session>, AuthError> {
        Ok(self.repo.list_sessions(user, self.clock.now()).await?)
    }

    async fn revoke_session(&self, user: UserId, session: TokenId) -> Result<(), AuthError> {
        match self
            .repo
            .revoke_session(user, session, self.clock.now())
            .await
        {
            Ok(()) => Ok(()),
            Err(RepoError::NotFound(_)) => Err(AuthError::SessionNotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_own_account(&self, user: &User, password: Password) -> Result<(), AuthError> {
        self.confirm(user, &password).await?;
        self.repo
            .delete_user(user.id, self.clock.now())
            .await
            .map_err(|e| match e {
                RepoError::NotFound(Entity::User) => AuthError::Unauthenticated,
                other => other.into(),
            })?;
        self.forget(user.id);
        self.audit_deleted(None, "user.delete_self", user).await
    }
}
