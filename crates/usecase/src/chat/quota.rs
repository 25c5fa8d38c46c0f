//! Quotas: what an account may spend per UTC day and calendar month, checked before a
//! generation takes its slot (so a refused one stores nothing and calls no provider).
//!
//! The check reads what the account's finished generations cost; generations still running
//! are not counted yet. So concurrent sends overshoot a quota by at most what the
//! generations already running when it was checked cost — at most the per-user cap of them.
//!
//! An account's own limits are read once per [`OVERRIDES_TTL_MICROS`] and kept in a bounded
//! cache (a changed quota applies within that time); the usage is read only when a limit
//! applies.

use super::*;
use domain::{PeriodUsage, QuotaLimits, QuotaOverrides, Timestamp, Usd};

/// How long an account's own limits are kept before they are read again.
pub(super) const OVERRIDES_TTL_MICROS: i64 = 1_000_000;
/// Accounts whose limits are kept.
const OVERRIDES_KEPT: usize = 100_000;

/// Accounts' own limits, each with when it was read.
#[derive(Debug)]
pub(super) struct OverridesCache(quick_cache::sync::Cache<UserId, (QuotaOverrides, Timestamp)>);

impl Default for OverridesCache {
    fn default() -> Self {
        Self(quick_cache::sync::Cache::new(OVERRIDES_KEPT))
    }
}

/// An account's limits and usage in the current periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The limits in force (a zero is no limit).
    pub limits: QuotaLimits,
    /// Used today (UTC).
    pub today: PeriodUsage,
    /// Used this month (UTC).
    pub this_month: PeriodUsage,
    /// When today ends.
    pub day_ends: Timestamp,
    /// When this month ends.
    pub month_ends: Timestamp,
}

impl QuotaUsage {
    /// The first limit reached, with when it frees up.
    #[must_use]
    pub fn exceeded(&self) -> Option<(&'static str, Timestamp)> {
        let cost = |used: Usd, limit: Usd| limit.as_pico() > 0 && used >= limit;
        let tokens = |used: u64, limit: u64| limit > 0 && used >= limit;
        let l = &self.limits;
        [
            (
                cost(self.this_month.cost, l.monthly_cost),
                "monthly_cost",
                self.month_ends,
            ),
            (
                tokens(self.this_month.tokens, l.monthly_tokens),
                "monthly_tokens",
                self.month_ends,
            ),
            (
                cost(self.today.cost, l.daily_cost),
                "daily_cost",
                self.day_ends,
            ),
            (
                tokens(self.today.tokens, l.daily_tokens),
                "daily_tokens",
                self.day_ends,
            ),
        ]
        .into_iter()
        .find_map(|(over, limit, resets)| over.then_some((limit, resets)))
    }
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
{
    /// The account's limits and, when any applies, its usage.
    pub(super) async fn quota_of(&self, owner: UserId) -> Result<QuotaUsage, ChatError> {
        let now = self.clock.now();
        let day = now.start_of_utc_day();
        let (month, month_ends) = now.utc_month_bounds();
        let overrides = match self.overrides.0.get(&owner) {
            Some((kept, at))
                if now.as_unix_micros() - at.as_unix_micros() < OVERRIDES_TTL_MICROS =>
            {
                kept
            }
            _ => {
                let read = self
                    .repo
                    .quota_overrides(owner)
                    .await
                    .map_err(ChatError::Storage)?;
                self.overrides.0.insert(owner, (read, now));
                read
            }
        };
        let limits = self.quota.with(overrides);
        let [today, this_month] = if limits.any() {
            self.repo
                .usage_since(owner, [day, month])
                .await
                .map_err(ChatError::Storage)?
        } else {
            [PeriodUsage::default(); 2]
        };
        Ok(QuotaUsage {
            limits,
            today,
            this_month,
            day_ends: day.plus_micros(Timestamp::MICROS_PER_DAY),
            month_ends,
        })
    }

    /// Admits a new generation of `owner`'s: within quota, then a concurrency slot.
    pub(super) async fn admit(&self, owner: UserId) -> Result<Slot, ChatError> {
        let quota = self.quota_of(owner).await;
        self.admit_within(owner, quota).await
    }

    /// [`Self::admit`] with the quota already read (concurrently with other reads).
    pub(super) async fn admit_within(
        &self,
        owner: UserId,
        quota: Result<QuotaUsage, ChatError>,
    ) -> Result<Slot, ChatError> {
        if let Some((limit, resets_at)) = quota?.exceeded() {
            metrics::counter!("arbor_quota_refusals_total", "limit" => limit).increment(1);
            return Err(ChatError::QuotaExceeded { limit, resets_at });
        }
        Ok(self.generations.acquire(owner).await?)
    }
}
