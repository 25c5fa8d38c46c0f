//! Small adapters that need no crate of their own: the system clock, UUID v7 ids and HS256
//! access tokens (password hashing: [`crate::password`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Timestamp, User};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use usecase::auth::{AccessClaims, AccessToken, CryptoError, TokenCodec, TokenRejection};
use usecase::ports::{Clock, IdGenerator};

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp::from_unix_micros(micros)
    }
}

/// Time-ordered UUID v7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Ids;

impl IdGenerator for UuidV7Ids {
    fn next_id(&self) -> u128 {
        uuid::Uuid::now_v7().as_u128()
    }
}

pub(crate) fn crypto(e: impl std::fmt::Display) -> CryptoError {
    CryptoError(e.to_string().into())
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
    /// The user's token epoch at issue time (absent in tokens of older versions: 0).
    #[serde(default)]
    epc: i64,
}

/// HS256 access tokens, 256-bit random secrets, SHA-256 digests.
#[derive(Clone)]
pub struct JwtCodec {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtCodec")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtCodec {
    /// A codec signing with `secret`; tokens live `ttl`.
    ///
    /// # Errors
    /// [`CryptoError`] for an empty secret.
    pub fn new(secret: &SecretString, ttl: Duration) -> Result<Self, CryptoError> {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        // Expiry is checked against the Clock port below, not the library's own clock.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes).map_err(crypto)?,
            decoding: DecodingKey::from_secret(bytes).map_err(crypto)?,
            validation,
            ttl,
        })
    }
}

impl TokenCodec for JwtCodec {
    fn issue_access(&self, user: &User, now: Timestamp) -> Result<AccessToken, CryptoError> {
        let iat = now.as_unix_seconds();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: user.id.to_string(),
            iat,
            exp: iat.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
            epc: user.token_epoch,
        };
        let token = encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(crypto)?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl.as_secs(),
        })
    }

    fn verify_access(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenRejection> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenRejection::Invalid)?;
        if data.claims.exp <= now.as_unix_seconds() {
            return Err(TokenRejection::Expired);
        }
        Ok(AccessClaims {
            user: data
                .claims
                .sub
                .parse()
                .map_err(|_| TokenRejection::Invalid)?,
            epoch: data.claims.epc,
        })
    }

    fn random_secret(&self) -> Result<String, CryptoError> {
        let bytes: [u8; 32] = rand::random();
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn digest(&self, secret: &str) -> String {
        let digest = Sha256::digest(secret.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use domain::{UserId, Username};

    fn user(id: u128, epoch: i64) -> User {
        User {
            id: UserId::from_u128(id),
            username: Username::parse("someone").unwrap(),
            disabled: false,
            role: domain::AccountRole::User,
            pending: false,
            quota: domain::QuotaOverrides::default(),
            token_epoch: epoch,
            created_at: Timestamp::from_unix_seconds(1_700_000_000),
        }
    }

    fn codec(secret: &str) -> JwtCodec {
        JwtCodec::new(
            &SecretString::from(secret.to_owned()),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let c = codec("a-secret-that-is-long-enough-for-hs256!!");
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        let t = c.issue_access(&user(42, 7), now).unwrap();
        assert_eq!(
            c.verify_access(&t.token, now),
            Ok(AccessClaims {
                user: UserId::from_u128(42),
                epoch: 7
            })
        );
        assert_eq!(
            c.verify_access(&t.token, now.plus_micros(61_000_000)),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn tokens_signed_with_another_secret_or_alg_none_are_invalid() {
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        let t = codec("first-secret-first-secret-first-secret")
            .issue_access(&user(1, 0), now)
            .unwrap();
        let other = codec("other-secret-other-secret-other-secret");
        assert_eq!(
            other.verify_access(&t.token, now),
            Err(TokenRejection::Invalid)
        );
        let payload = t.token.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        assert_eq!(
            other.verify_access(&none, now),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn secrets_are_random_and_digests_are_sha256_hex() {
        let c = codec("x".repeat(32).as_str());
        let a = c.random_secret().unwrap();
        assert_ne!(a, c.random_secret().unwrap());
        assert!(a.len() >= 43);
        assert_eq!(
            c.digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
