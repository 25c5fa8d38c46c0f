//! User accounts.

use crate::id::UserId;
use crate::time::Timestamp;
use crate::validation::{InvalidInput, Problem, check_text, limits};

/// A login name: 3–32 characters of `[A-Za-z0-9_.-]`, unique regardless of case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Accepts a username that obeys the rules.
    ///
    /// # Errors
    /// [`InvalidInput`] on `username` when too short, too long or with a character outside
    /// `[A-Za-z0-9_.-]`.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        check_text("username", &raw, limits::USERNAME_MIN, limits::USERNAME_MAX)?;
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(InvalidInput::new("username", Problem::InvalidCharacter(c)));
        }
        Ok(Self(raw))
    }

    /// The name as the user chose it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is checked on (ASCII lower case).
    #[must_use]
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A password as typed, 8–128 characters. Never stored; only its hash is.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Accepts a password that obeys the length rules.
    ///
    /// # Errors
    /// [`InvalidInput`] on `password` when too short or too long.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        let len = raw.chars().count();
        if len < limits::PASSWORD_MIN {
            return Err(InvalidInput::new(
                "password",
                Problem::TooShort {
                    len,
                    min: limits::PASSWORD_MIN,
                },
            ));
        }
        if len > limits::PASSWORD_MAX {
            return Err(InvalidInput::new(
                "password",
                Problem::TooLong {
                    len,
                    max: limits::PASSWORD_MAX,
                },
            ));
        }
        Ok(Self(raw))
    }

    /// The secret itself, for the hasher.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Identity; the `sub` of access tokens.
    pub id: UserId,
    /// Login name.
    pub username: Username,
    /// A disabled user cannot log in or use tokens.
    pub disabled: bool,
    /// What the account may administer.
    pub role: crate::AccountRole,
    /// Registered under the `approval` policy and not approved yet: cannot log in.
    pub pending: bool,
    /// The account's own quota limits (the server's defaults where `None`).
    pub quota: crate::QuotaOverrides,
    /// Grows whenever every access token issued so far must stop working (password reset,
    /// disabling); a token carries the epoch it was issued at.
    pub token_epoch: i64,
    /// When the account was created.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_character_rules() {
        assert!(Username::parse("alice_01.b-c").is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse("a".repeat(33)).is_err());
        assert_eq!(
            Username::parse("al ice").unwrap_err().problem,
            Problem::InvalidCharacter(' ')
        );
        assert!(Username::parse("アリス123").is_err());
    }

    #[test]
    fn usernames_compare_case_insensitively_through_their_canonical_form() {
        assert_eq!(
            Username::parse("Alice").unwrap().canonical(),
            Username::parse("aLICE").unwrap().canonical()
        );
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
