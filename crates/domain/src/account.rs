//! What an account may do and spend: its role, the registration policy, and quotas.

use std::fmt;
use std::str::FromStr;

use crate::message::UnknownVariant;
use crate::model::Usd;

/// What an account may administer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AccountRole {
    /// Uses the service.
    #[default]
    User,
    /// Also administers it: accounts, quotas, registration.
    Admin,
}

impl AccountRole {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for AccountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountRole {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RegistrationPolicy {
    /// Anyone.
    #[default]
    Open,
    /// Anyone, but the account waits for an admin's approval before it can log in.
    Approval,
    /// Only with an admin-issued, single-use, expiring invite code.
    Invite,
    /// Nobody (admins create accounts).
    Closed,
}

impl RegistrationPolicy {
    /// The configured name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Approval => "approval",
            Self::Invite => "invite",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for RegistrationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegistrationPolicy {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Self::Open),
            "approval" => Ok(Self::Approval),
            "invite" => Ok(Self::Invite),
            "closed" => Ok(Self::Closed),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

/// Limits on what one account spends; a zero is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaLimits {
    /// Cost per UTC day.
    pub daily_cost: Usd,
    /// Cost per UTC calendar month.
    pub monthly_cost: Usd,
    /// Tokens per UTC day.
    pub daily_tokens: u64,
    /// Tokens per UTC calendar month.
    pub monthly_tokens: u64,
}

/// An account's own limits; `None` takes the server's default (and a zero is no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaOverrides {
    /// Cost per UTC day.
    pub daily_cost: Option<Usd>,
    /// Cost per UTC calendar month.
    pub monthly_cost: Option<Usd>,
    /// Tokens per UTC day.
    pub daily_tokens: Option<u64>,
    /// Tokens per UTC calendar month.
    pub monthly_tokens: Option<u64>,
}

impl QuotaLimits {
    /// These defaults with an account's overrides applied.
    #[must_use]
    pub fn with(self, overrides: QuotaOverrides) -> Self {
        Self {
            daily_cost: overrides.daily_cost.unwrap_or(self.daily_cost),
            monthly_cost: overrides.monthly_cost.unwrap_or(self.monthly_cost),
            daily_tokens: overrides.daily_tokens.unwrap_or(self.daily_tokens),
            monthly_tokens: overrides.monthly_tokens.unwrap_or(self.monthly_tokens),
        }
    }

    /// Whether any limit applies.
    #[must_use]
    pub const fn any(&self) -> bool {
        self.daily_cost.as_pico() > 0
            || self.monthly_cost.as_pico() > 0
            || self.daily_tokens > 0
            || self.monthly_tokens > 0
    }
}

/// What an account used in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodUsage {
    /// Cost so far.
    pub cost: Usd,
    /// Tokens so far.
    pub tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_policies_round_trip_and_refuse_unknown_names() {
        for role in [AccountRole::User, AccountRole::Admin] {
            assert_eq!(role.as_str().parse::<AccountRole>(), Ok(role));
        }
        for policy in [
            RegistrationPolicy::Open,
            RegistrationPolicy::Approval,
            RegistrationPolicy::Invite,
            RegistrationPolicy::Closed,
        ] {
            assert_eq!(policy.as_str().parse::<RegistrationPolicy>(), Ok(policy));
        }
        assert!("root".parse::<AccountRole>().is_err());
        assert!("sometimes".parse::<RegistrationPolicy>().is_err());
    }

    #[test]
    fn overrides_replace_defaults_field_by_field_and_zero_means_no_limit() {
        let defaults = QuotaLimits {
            daily_cost: Usd::from_pico(10),
            monthly_cost: Usd::from_pico(100),
            daily_tokens: 5,
            monthly_tokens: 50,
        };
        let mine = defaults.with(QuotaOverrides {
            daily_cost: Some(Usd::from_pico(0)),
            daily_tokens: Some(7),
            ..QuotaOverrides::default()
        });
        assert_eq!(mine.daily_cost, Usd::from_pico(0));
        assert_eq!(mine.monthly_cost, Usd::from_pico(100));
        assert_eq!(mine.daily_tokens, 7);
        assert!(mine.any());
        assert!(!QuotaLimits::default().any());
    }
}
