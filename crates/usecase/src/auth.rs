//! Accounts and authentication: registration, password login, rotating refresh tokens,
//! personal API keys, and resolving a bearer credential to a user.
//!
//! Secrets at rest are digests only (refresh tokens, API keys) or password hashes; digests
//! are compared with `constant_time_eq`.

pub mod account;
pub mod admin;
mod cache;

use std::fmt;

pub use cache::AccountCacheConfig;

use domain::{ApiKeyId, Page, Password, Timestamp, TokenId, User, UserId, Username};

use crate::ports::{BoxError, Clock, Entity, IdGenerator, RepoError, UserRepository};

/// Prefix of every personal API key, so they are recognisable (and scannable) in the wild.
pub const API_KEY_PREFIX: &str = "arb_";
/// Length of the public lookup part of an API key (after [`API_KEY_PREFIX`]).
pub const API_KEY_LOOKUP_LEN: usize = 12;
/// Unrevoked API keys one account may hold.
pub const API_KEYS_MAX: usize = 100;

pub use crate::ports::credentials::{
    API_KEY_USE_RESOLUTION_MICROS, AccessClaims, AccessToken, AccountChanges, ApiKeyOptions,
    ApiKeyRecord, CredentialRepository, CryptoError, PasswordHasher, RefreshSuccessor,
    RefreshTokenRecord, Rotation, TokenCodec, TokenRejection,
};

/// Why an auth operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The username is taken (case-insensitively).
    #[error("username is already taken")]
    UsernameTaken,
    /// Wrong username or password (deliberately not saying which).
    #[error("incorrect username or password")]
    InvalidCredentials,
    /// Missing, malformed, expired, revoked or unknown credential.
    #[error("invalid or expired credentials")]
    Unauthenticated,
    /// A refresh token was presented twice; its family is revoked.
    #[error("refresh token reuse detected; please log in again")]
    RefreshTokenReused,
    /// The API key does not exist.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// No account has this name (operator commands only; logins never say so).
    #[error("no such user")]
    UnknownUser,
    /// The caller may not do this (an administrative action by a non-admin).
    #[error("you are not allowed to do this")]
    Forbidden,
    /// An admin acting on their own role, state or account through administration.
    #[error("administrators cannot change their own role or state, or delete themselves, here")]
    SelfAdministration,
    /// The account waits for an admin's approval.
    #[error("this account is waiting for an administrator's approval")]
    AccountPending,
    /// Registration is closed.
    #[error("registration is closed")]
    RegistrationClosed,
    /// Registration needs a valid invite (missing, unknown, used or expired).
    #[error("a valid invite code is required to register")]
    InviteRequired,
    /// The account's password, asked again to confirm an action, is wrong.
    #[error("the password is not correct")]
    WrongPassword,
    /// No such session of the caller's.
    #[error("session not found")]
    SessionNotFound,
    /// A read-only API key was used for a request that changes something.
    #[error("this API key is read-only")]
    ReadOnlyKey,
    /// The user already has [`API_KEYS_MAX`] unrevoked keys.
    #[error("at most {API_KEYS_MAX} API keys per account: revoke one first")]
    TooManyApiKeys,
    /// The database is unreachable or busy.
    #[error("storage unavailable")]
    Unavailable(#[source] RepoError),
    /// Anything else.
    #[error("internal failure")]
    Internal(#[source] BoxError),
}

impl From<RepoError> for AuthError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(_) => Self::Unavailable(e),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<CryptoError> for AuthError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// Tokens handed out by a login or refresh.
#[derive(Clone)]
pub struct TokenPair {
    /// Short-lived JWT.
    pub access: AccessToken,
    /// Opaque, single-use refresh token.
    pub refresh_token: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenPair(<redacted>)")
    }
}

/// A newly created API key: the only time the full key is visible.
#[derive(Clone)]
pub struct IssuedApiKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The full key.
    pub key: String,
}

impl fmt::Debug for IssuedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedApiKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Inbound port of the auth capability (what the HTTP layer calls).
pub trait AuthUseCase: Send + Sync + 'static {
    /// Creates an account under the registration policy in force (`approval`: the account
    /// waits for an admin; `invite`: `invite` must be a valid code, used up by this).
    ///
    /// # Errors
    /// [`AuthError::UsernameTaken`], [`AuthError::RegistrationClosed`],
    /// [`AuthError::InviteRequired`].
    fn register(
        &self,
        username: Username,
        password: Password,
        invite: Option<String>,
    ) -> impl Future<Output = Result<User, AuthError>> + Send;

    /// Checks a password and issues tokens.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`].
    fn login(
        &self,
        username: Username,
        password: Password,
    ) -> impl Future<Output = Result<TokenPair, AuthError>> + Send;

    /// Exchanges a refresh token for a new pair (the old one becomes unusable).
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`], [`AuthError::RefreshTokenReused`].
    fn refresh(
        &self,
        refresh_token: &str,
    ) -> impl Future<Output = Result<TokenPair, AuthError>> + Send;

    /// Revokes the presented refresh token, or all of the user's.
    ///
    /// # Errors
    /// Storage failures.
    fn logout(
        &self,
        user: UserId,
        refresh_token: Option<&str>,
        all: bool,
    ) -> impl Future<Output = Result<u64, AuthError>> + Send;

    /// The user a bearer credential (access token or API key) stands for, for a request that
    /// changes something (`write`) or only reads.
    ///
    /// # Errors
    /// [`AuthError::Unauthenticated`] (also: an expired key), [`AuthError::ReadOnlyKey`]
    /// (a read-only key used to write).
    fn authenticate(
        &self,
        bearer: &str,
        write: bool,
    ) -> impl Future<Output = Result<User, AuthError>> + Send;

    /// Creates a personal API key.
    ///
    /// # Errors
    /// Storage failures.
    fn create_api_key(
        &self,
        user: UserId,
        name: String,
        options: ApiKeyOptions,
    ) -> impl Future<Output = Result<IssuedApiKey, AuthError>> + Send;

    /// The user's keys (without secrets).
    ///
    /// # Errors
    /// Storage failures.
    fn list_api_keys(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, AuthError>> + Send;

    /// Revokes one of the user's keys.
    ///
    /// # Errors
    /// [`AuthError::ApiKeyNotFound`].
    fn revoke_api_key(
        &self,
        user: UserId,
        id: ApiKeyId,
    ) -> impl Future<Output = Result<(), AuthError>> + Send;
}

/// Lifetimes of issued credentials, and who may register.
#[derive(Debug, Clone, Copy)]
pub struct AuthPolicy {
    /// Refresh token lifetime in seconds.
    pub refresh_ttl_secs: i64,
    /// The registration policy until an admin stores another.
    pub registration: domain::RegistrationPolicy,
}

/// The canonical [`AuthUseCase`].
#[derive(Debug)]
pub struct AuthService<R, H, T, C, I> {
    repo: R,
    hasher: H,
    tokens: T,
    clock: C,
    ids: I,
    policy: AuthPolicy,
    cache: Option<cache::AccountCache>,
}

impl<R, H, T, C, I> AuthService<R, H, T, C, I> {
    /// Wires the service (no account cache: every request reads the account).
    pub const fn new(repo: R, hasher: H, tokens: T, clock: C, ids: I, policy: AuthPolicy) -> Self {
        Self {
            repo,
            hasher,
            tokens,
            clock,
            ids,
            policy,
            cache: None,
        }
    }

    /// Serves account state from a bounded cache. Whoever owns the service must then call
    /// [`AuthService::sync_account_changes`] every `config.poll_interval_micros`; until a
    /// poll has succeeded (and whenever none has for two intervals) the cache answers nothing.
    #[must_use]
    pub fn with_account_cache(mut self, config: AccountCacheConfig) -> Self {
        self.cache = Some(cache::AccountCache::new(config));
        self
    }
}

impl<R, H, T, C, I> AuthService<R, H, T, C, I>
where
    R: UserRepository + CredentialRepository,
    H: PasswordHasher,
    T: TokenCodec,
    C: Clock,
    I: IdGenerator,
{
    /// Replaces a hash of an older kind (the original service's bcrypt) by one of this
    /// hasher's, with the password just verified. A failure is logged: the login goes on
    /// and the next one tries again.
    async fn rehash(&self, user: &User, old: &str, password: &Password) {
        let replaced = match self.hasher.hash(password).await {
            Ok(hash) => self.repo.replace_password_hash(user.id, old, hash).await,
            Err(e) => Err(RepoError::Unexpected(Box::new(e))),
        };
        if let Err(e) = replaced {
            tracing::warn!(error = %e, user = %user.id, "an old password hash could not be replaced");
        }
    }

    fn successor(&self, secret: &str) -> RefreshSuccessor {
        let now = self.clock.now();
        RefreshSuccessor {
            id: TokenId::from_u128(self.ids.next_id()),
            token_hash: self.tokens.digest(secret),
            created_at: now,
            expires_at: now.plus_micros(self.policy.refresh_ttl_secs.saturating_mul(1_000_000)),
        }
    }

    async fn issue_pair(&self, user: &User, family: TokenId) -> Result<TokenPair, AuthError> {
        let refresh_token = format!("art_{}", self.tokens.random_secret()?);
        let next = self.successor(&refresh_token);
        self.repo
            .store_refresh_token(RefreshTokenRecord {
                id: next.id,
                user_id: user.id,
                family_id: family,
                token_hash: next.token_hash,
                created_at: next.created_at,
                expires_at: next.expires_at,
            })
            .await?;
        Ok(TokenPair {
            access: self.tokens.issue_access(user, self.clock.now())?,
            refresh_token,
        })
    }

    /// Records a verified key's use (at most once per resolution; the cached copy learns it
    /// too, so cached keys do not write on every request). A failure is logged: the request
    /// was authenticated all the same.
    async fn note_key_use(&self, prefix: &str, key: &ApiKeyRecord, now: Timestamp) {
        let stale = key.last_used_at.is_none_or(|t| {
            now.as_unix_micros() - t.as_unix_micros() >= API_KEY_USE_RESOLUTION_MICROS
        });
        if !stale {
            return;
        }
        if let Some(cache) = &self.cache {
            cache.note_key_use(prefix, now);
        }
        if let Err(e) = self.repo.record_api_key_use(key.id, now).await {
            tracing::warn!(error = %e, key = %key.id, "an API key's last use could not be recorded");
        }
    }

    /// Operator: a page of accounts.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list_users(&self, page: domain::PageRequest) -> Result<Page<User>, AuthError> {
        Ok(self.repo.list_users(page).await?)
    }

    pub(crate) fn forget(&self, user: UserId) {
        if let Some(cache) = &self.cache {
            cache.forget_user(user);
        }
    }

    /// Asks the database which accounts changed and which API keys were revoked since the
    /// previous call, and drops them from the account cache. Call it every poll interval.
    ///
    /// # Errors
    /// Storage failures (the cache then stops answering once its trust runs out).
    pub async fn sync_account_changes(&self) -> Result<(), AuthError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let started = self.clock.now();
        let changes = match cache.poll_from() {
            Some(since) => Some(self.repo.account_changes_since(since).await?),
            None => None,
        };
        cache.apply(started, changes);
        Ok(())
    }

    pub(crate) async fn find(&self, username: &Username) -> Result<User, AuthError> {
        self.repo
            .find_credentials(username)
            .await?
            .map(|c| c.user)
            .ok_or(AuthError::UnknownUser)
    }

    /// The account `id` if it is enabled and (with `epoch`) still at that token epoch.
    ///
    /// The cache may say yes; only the database says no: a cached refusal (a disabled
    /// account, another epoch) is read again, so an account enabled or a token issued by
    /// another process a moment ago is never refused for a stale entry.
    async fn active_user(&self, id: UserId, epoch: Option<i64>) -> Result<User, AuthError> {
        let accepts = |user: &User| {
            !user.disabled && !user.pending && epoch.is_none_or(|e| e == user.token_epoch)
        };
        let found = match &self.cache {
            Some(cache) => {
                match cache
                    .user_or_load(
                        id,
                        (self.clock.now(), || self.clock.now()),
                        self.repo.get_user(id),
                    )
                    .await
                {
                    Ok(user) if !accepts(&user) => {
                        cache.forget_user(id);
                        cache
                            .user_or_load(
                                id,
                                (self.clock.now(), || self.clock.now()),
                                self.repo.get_user(id),
                            )
                            .await
                    }
                    other => other,
                }
            }
            None => self.repo.get_user(id).await,
        };
        match found {
            Ok(user) if accepts(&user) => Ok(user),
            Ok(_) | Err(RepoError::NotFound(_)) => Err(AuthError::Unauthenticated),
            Err(e) => Err(e.into()),
        }
    }
}

impl<R: admin::AdminStore, H: PasswordHasher, T: TokenCodec, C: Clock, I: IdGenerator> AuthUseCase
    for AuthService<R, H, T, C, I>
{
    async fn register(
        &self,
        username: Username,
        password: Password,
        invite: Option<String>,
    ) -> Result<User, AuthError> {
        use domain::RegistrationPolicy as Policy;
        let policy = self.policy_in_force().await?;
        if policy == Policy::Closed {
            return Err(AuthError::RegistrationClosed);
        }
        let code = match (policy, invite) {
            (Policy::Invite, Some(code)) => Some(self.tokens.digest(&code)),
            (Policy::Invite, None) => return Err(AuthError::InviteRequired),
            _ => None,
        };
        let user = self
            .new_user(
                username,
                &password,
                domain::AccountRole::User,
                policy == Policy::Approval,
            )
            .await?;
        let created = match code {
            Some(code) => {
                self.repo
                    .create_user_with_invite(code, user, self.clock.now())
                    .await
            }
            None => self.repo.create_user(user).await,
        };
        match created {
            Ok(user) => Ok(user),
            Err(RepoError::Conflict(_)) => Err(AuthError::UsernameTaken),
            Err(RepoError::NotFound(Entity::Invite)) => Err(AuthError::InviteRequired),
            Err(e) => Err(e.into()),
        }
    }

    async fn login(&self, username: Username, password: Password) -> Result<TokenPair, AuthError> {
        let found = self.repo.find_credentials(&username).await?;
        // Same hashing work whether or not the user exists.
        let ok = self
            .hasher
            .verify(&password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        match found {
            // Said only to whoever knows the password.
            Some(c) if ok && c.user.pending => Err(AuthError::AccountPending),
            Some(c) if ok && !c.user.disabled => {
                if self.hasher.needs_rehash(&c.password_hash) {
                    self.rehash(&c.user, &c.password_hash, &password).await;
                }
                let family = TokenId::from_u128(self.ids.next_id());
                self.issue_pair(&c.user, family).await
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let hash = self.tokens.digest(refresh_token);
        let secret = format!("art_{}", self.tokens.random_secret()?);
        let successor = self.successor(&secret);
        match self
            .repo
            .rotate_refresh_token(&hash, successor, self.clock.now())
            .await?
        {
            Rotation::Rotated(user) => {
                // Read, not cached: the new token carries the account's current epoch.
                let user = match self.repo.get_user(user).await {
                    Ok(user) if !user.disabled => user,
                    Ok(_) | Err(RepoError::NotFound(_)) => return Err(AuthError::Unauthenticated),
                    Err(e) => return Err(e.into()),
                };
                Ok(TokenPair {
                    access: self.tokens.issue_access(&user, self.clock.now())?,
                    refresh_token: secret,
                })
            }
            Rotation::Reused => Err(AuthError::RefreshTokenReused),
            Rotation::Expired | Rotation::Unknown => Err(AuthError::Unauthenticated),
        }
    }

    async fn logout(
        &self,
        user: UserId,
        refresh_token: Option<&str>,
        all: bool,
    ) -> Result<u64, AuthError> {
        let hash = refresh_token.map(|t| self.tokens.digest(t));
        let target = if all {
            None
        } else {
            Some(hash.as_deref().unwrap_or(""))
        };
        Ok(self
            .repo
            .revoke_refresh_tokens(user, target, self.clock.now())
            .await?)
    }

    async fn authenticate(&self, bearer: &str, write: bool) -> Result<User, AuthError> {
        let now = self.clock.now();
        if let Some(rest) = bearer.strip_prefix(API_KEY_PREFIX) {
            let Some(lookup) = rest.get(..API_KEY_LOOKUP_LEN) else {
                return Err(AuthError::Unauthenticated);
            };
            let prefix = format!("{API_KEY_PREFIX}{lookup}");
            let found = match &self.cache {
                Some(cache) => {
                    cache
                        .key_or_load(
                            &prefix,
                            (now, || self.clock.now()),
                            self.repo.find_api_key(&prefix),
                        )
                        .await?
                }
                None => self.repo.find_api_key(&prefix).await?,
            };
            let Some(key) = found else {
                return Err(AuthError::Unauthenticated);
            };
            let presented = self.tokens.digest(bearer);
            if !constant_time_eq::constant_time_eq(presented.as_bytes(), key.key_hash.as_bytes())
                || key.expires_at.is_some_and(|at| at <= now)
            {
                return Err(AuthError::Unauthenticated);
            }
            if key.read_only && write {
                return Err(AuthError::ReadOnlyKey);
            }
            let user = self.active_user(key.user_id, None).await?;
            self.note_key_use(&prefix, &key, now).await;
            return Ok(user);
        }
        let claims = self
            .tokens
            .verify_access(bearer, now)
            .map_err(|_| AuthError::Unauthenticated)?;
        // A token issued before a password reset or a disabling names an older epoch.
        self.active_user(claims.user, Some(claims.epoch)).await
    }

    async fn create_api_key(
        &self,
        user: UserId,
        name: String,
        options: ApiKeyOptions,
    ) -> Result<IssuedApiKey, AuthError> {
        // Checked before the insert, so keys created at the same instant may pass it
        // together: the bound holds within the handful of requests in flight.
        if self.repo.list_api_keys(user).await?.len() >= API_KEYS_MAX {
            return Err(AuthError::TooManyApiKeys);
        }
        let secret = self.tokens.random_secret()?;
        let lookup: String = self
            .tokens
            .random_secret()?
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(API_KEY_LOOKUP_LEN)
            .collect();
        if lookup.len() < API_KEY_LOOKUP_LEN {
            return Err(AuthError::Internal("not enough random characters".into()));
        }
        let prefix = format!("{API_KEY_PREFIX}{lookup}");
        let key = format!("{prefix}{secret}");
        let record = ApiKeyRecord {
            id: ApiKeyId::from_u128(self.ids.next_id()),
            user_id: user,
            name,
            prefix,
            key_hash: self.tokens.digest(&key),
            created_at: self.clock.now(),
            last_used_at: None,
            expires_at: options.valid_days.map(|days| {
                self.clock
                    .now()
                    .plus_micros(i64::from(days) * Timestamp::MICROS_PER_DAY)
            }),
            read_only: options.read_only,
        };
        self.repo.create_api_key(record.clone()).await?;
        Ok(IssuedApiKey { record, key })
    }

    async fn list_api_keys(&self, user: UserId) -> Result<Vec<ApiKeyRecord>, AuthError> {
        Ok(self.repo.list_api_keys(user).await?)
    }

    async fn revoke_api_key(&self, user: UserId, id: ApiKeyId) -> Result<(), AuthError> {
        let revoked = self.repo.revoke_api_key(user, id, self.clock.now()).await;
        if let Some(cache) = &self.cache {
            cache.forget_key(id);
        }
        match revoked {
            Err(RepoError::NotFound(_)) => Err(AuthError::ApiKeyNotFound),
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests;
