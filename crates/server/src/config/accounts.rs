//! `[accounts]`: who may register, and what each account may spend by default.

use domain::{QuotaLimits, RegistrationPolicy, Usd};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Registration and default quotas.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// `open`, `approval`, `invite` or `closed`; an admin may change it at run time
    /// (`PUT /api/v1/admin/registration`), which then wins over this.
    pub registration: String,
    /// Spend per account per UTC day, in USD (a decimal string); "0" = no limit.
    pub daily_quota_usd: String,
    /// Spend per account per UTC calendar month, in USD; "0" = no limit.
    pub monthly_quota_usd: String,
    /// Tokens per account per UTC day; 0 = no limit.
    pub daily_quota_tokens: u64,
    /// Tokens per account per UTC calendar month; 0 = no limit.
    pub monthly_quota_tokens: u64,
}

impl AccountSettings {
    /// The configured registration policy.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unknown name.
    pub fn registration(&self) -> Result<RegistrationPolicy, ConfigError> {
        self.registration.parse().map_err(|_| ConfigError::Invalid {
            key: "accounts.registration",
            problem: "must be open, approval, invite or closed".into(),
        })
    }

    /// The default quota limits.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an amount that is not a non-negative decimal.
    pub fn quota(&self) -> Result<QuotaLimits, ConfigError> {
        let usd = |key: &'static str, raw: &str| {
            Usd::parse_decimal(raw)
                .ok()
                .filter(|u| u.as_pico() >= 0)
                .ok_or_else(|| ConfigError::Invalid {
                    key,
                    problem: "must be a non-negative decimal amount of USD".into(),
                })
        };
        Ok(QuotaLimits {
            daily_cost: usd("accounts.daily_quota_usd", &self.daily_quota_usd)?,
            monthly_cost: usd("accounts.monthly_quota_usd", &self.monthly_quota_usd)?,
            daily_tokens: self.daily_quota_tokens,
            monthly_tokens: self.monthly_quota_tokens,
        })
    }
}
