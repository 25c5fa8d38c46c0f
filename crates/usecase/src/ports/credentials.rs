//! Credentials as stored and the crypto they need: password hashing, access-token signing,
//! refresh-token families (rotation, reuse detection), personal API keys and sessions.

use domain::{ApiKeyId, Password, Timestamp, TokenId, User, UserId};

use super::{BoxError, RepoError};

/// Failures of the crypto ports.
#[derive(Debug, thiserror::Error)]
#[error("cryptographic operation failed")]
pub struct CryptoError(#[source] pub BoxError);

/// Hashes and verifies passwords (argon2id in production).
pub trait PasswordHasher: Send + Sync + 'static {
    /// A PHC string for `password`. Implementations MUST run the work off the async runtime.
    ///
    /// # Errors
    /// [`CryptoError`].
    fn hash(&self, password: &Password)
    -> impl Future<Output = Result<String, CryptoError>> + Send;

    /// Whether `password` matches `hash`. With `hash = None` (unknown user) implementations
    /// MUST do the same work against a dummy hash and answer `false`, so timing does not
    /// reveal whether a username exists.
    ///
    /// # Errors
    /// [`CryptoError`].
    fn verify(
        &self,
        password: &Password,
        hash: Option<&str>,
    ) -> impl Future<Output = Result<bool, CryptoError>> + Send;

    /// Whether a stored `hash` is of an older or weaker kind than this hasher makes (an
    /// imported bcrypt hash): after a successful login it is replaced.
    fn needs_rehash(&self, hash: &str) -> bool {
        let _ = hash;
        false
    }
}

/// A signed, short-lived access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The token text.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Signature, algorithm or format is wrong.
    Invalid,
    /// Past its expiry.
    Expired,
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessClaims {
    /// Whose token it is.
    pub user: UserId,
    /// The user's [`User::token_epoch`] when it was issued; a token of an older epoch is
    /// refused.
    pub epoch: i64,
}

/// Issues and checks access tokens, makes random secrets and digests them.
pub trait TokenCodec: Send + Sync + 'static {
    /// A signed token for `user` at the user's current token epoch, valid from `now`.
    ///
    /// # Errors
    /// [`CryptoError`].
    fn issue_access(&self, user: &User, now: Timestamp) -> Result<AccessToken, CryptoError>;

    /// The user and epoch a valid token names.
    ///
    /// # Errors
    /// [`TokenRejection`].
    fn verify_access(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenRejection>;

    /// A new random secret of at least 256 bits, URL-safe.
    ///
    /// # Errors
    /// [`CryptoError`] when the system's randomness fails.
    fn random_secret(&self) -> Result<String, CryptoError>;

    /// The digest stored in place of a secret (hex SHA-256).
    fn digest(&self, secret: &str) -> String;
}

/// A refresh token as stored (digest only).
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    /// Row id.
    pub id: TokenId,
    /// Owner.
    pub user_id: UserId,
    /// All tokens rotated from one login share a family.
    pub family_id: TokenId,
    /// Digest of the token.
    pub token_hash: String,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// The token that replaces a presented refresh token (same user and family as that one).
#[derive(Debug, Clone)]
pub struct RefreshSuccessor {
    /// Row id.
    pub id: TokenId,
    /// Digest of the new token.
    pub token_hash: String,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was valid: marked used, and its successor stored. Names the user.
    Rotated(UserId),
    /// It had been used or revoked before: the whole family is now revoked (theft).
    Reused,
    /// It is past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

/// How finely an API key's last use is kept (once a minute at most).
pub const API_KEY_USE_RESOLUTION_MICROS: i64 = 60_000_000;

/// A personal API key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Identity.
    pub id: ApiKeyId,
    /// Owner.
    pub user_id: UserId,
    /// Owner's label.
    pub name: String,
    /// Public lookup part, `arb_` + 12 characters.
    pub prefix: String,
    /// Digest of the whole key.
    pub key_hash: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last successful use.
    pub last_used_at: Option<Timestamp>,
    /// Refused from then on.
    pub expires_at: Option<Timestamp>,
    /// Only reads (`GET`/`HEAD`) are allowed with it.
    pub read_only: bool,
}

/// What a new API key may do, and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiKeyOptions {
    /// Days it stays valid (`None`: until revoked).
    pub valid_days: Option<u32>,
    /// Only reads.
    pub read_only: bool,
}

/// Refresh tokens and API keys.
pub trait CredentialRepository: Send + Sync + 'static {
    /// Stores a new refresh token.
    ///
    /// # Errors
    /// Storage failures.
    fn store_refresh_token(
        &self,
        record: RefreshTokenRecord,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Presents the token with digest `hash`: if valid, marks it used and stores `successor`
    /// with the presented token's user and family. If it was already used or revoked, revokes its whole family.
    ///
    /// Implementations MUST do this in one transaction, so two concurrent presentations of
    /// one token rotate it at most once.
    ///
    /// # Errors
    /// Storage failures.
    fn rotate_refresh_token(
        &self,
        hash: &str,
        successor: RefreshSuccessor,
        now: Timestamp,
    ) -> impl Future<Output = Result<Rotation, RepoError>> + Send;

    /// Revokes the token with digest `hash` if it belongs to `user`, or, with `hash = None`,
    /// every refresh token of `user`. Returns how many were revoked.
    ///
    /// # Errors
    /// Storage failures.
    fn revoke_refresh_tokens(
        &self,
        user: UserId,
        hash: Option<&str>,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;

    /// Stores a new API key.
    ///
    /// # Errors
    /// [`RepoError::Conflict`] if the prefix is taken.
    fn create_api_key(
        &self,
        key: ApiKeyRecord,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// The user's unrevoked keys, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_api_keys(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, RepoError>> + Send;

    /// Revokes one of the user's keys.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when it is not the user's unrevoked key.
    fn revoke_api_key(
        &self,
        user: UserId,
        id: ApiKeyId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// The unrevoked key with this prefix (a read: nothing is recorded before the secret is
    /// checked).
    ///
    /// # Errors
    /// Storage failures; an unknown prefix is `Ok(None)`.
    fn find_api_key(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, RepoError>> + Send;

    /// Records `now` as the key's last use, unless one was recorded within
    /// [`API_KEY_USE_RESOLUTION_MICROS`] (so key traffic does not turn every read into a
    /// write).
    ///
    /// # Errors
    /// Storage failures.
    fn record_api_key_use(
        &self,
        id: ApiKeyId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Accounts changed (`updated_at`) and API keys revoked at or after `since`: what a
    /// cache of account state must forget.
    ///
    /// # Errors
    /// Storage failures.
    fn account_changes_since(
        &self,
        since: Timestamp,
    ) -> impl Future<Output = Result<AccountChanges, RepoError>> + Send;

    /// Replaces `user`'s password hash by `new`, only while it is still `old` (a password
    /// changed in between stays as it is); whether it was replaced. Nothing else changes:
    /// sessions go on.
    ///
    /// # Errors
    /// Storage failures.
    fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: String,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}

/// What changed in accounts and keys since a moment (see
/// [`CredentialRepository::account_changes_since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// Accounts whose row changed (disabled, password, epoch).
    pub users: Vec<UserId>,
    /// Prefixes of API keys revoked.
    pub api_keys: Vec<String>,
}

/// One signed-in session: a refresh-token family (a login and its rotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The family (what `revoke_session` takes).
    pub id: TokenId,
    /// When the login happened.
    pub started_at: Timestamp,
    /// When its refresh token was last rotated (or issued).
    pub last_refreshed_at: Timestamp,
    /// When its current refresh token expires.
    pub expires_at: Timestamp,
}

/// Sessions as stored.
pub trait SessionRepository: Send + Sync + 'static {
    /// The user's sessions with a live refresh token at `now`, newest first.
    ///
    /// # Errors
    /// Storage failures.
    fn list_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Session>, RepoError>> + Send;

    /// Revokes every refresh token of one of the user's sessions.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when the user has no live session with this id.
    fn revoke_session(
        &self,
        user: UserId,
        session: TokenId,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}
