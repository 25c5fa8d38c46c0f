//! The two usage aggregates analytics reports are made of.

use domain::{Timestamp, Usd, UserId};

use super::RepoError;

/// Usage of one model on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayModelUsage {
    /// Start of the UTC day.
    pub day: Timestamp,
    /// Model id.
    pub model: String,
    /// Answers.
    pub messages: u64,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// All tokens.
    pub total_tokens: u64,
    /// Cost.
    pub cost: Usd,
}

/// Usage in one hour of the (UTC) day, over the whole period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourUsage {
    /// 0–23.
    pub hour: u32,
    /// Answers.
    pub messages: u64,
    /// All tokens.
    pub total_tokens: u64,
    /// Cost.
    pub cost: Usd,
}

/// Aggregates over generation records.
pub trait AnalyticsRepository: Send + Sync + 'static {
    /// `GROUP BY` UTC day and model over `[from, to)`, optionally one model only.
    ///
    /// # Errors
    /// Storage failures.
    fn usage_by_day_and_model(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
        model: Option<&str>,
    ) -> impl Future<Output = Result<Vec<DayModelUsage>, RepoError>> + Send;

    /// `GROUP BY` hour of the UTC day over `[from, to)`, optionally one model only.
    ///
    /// # Errors
    /// Storage failures.
    fn usage_by_hour(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
        model: Option<&str>,
    ) -> impl Future<Output = Result<Vec<HourUsage>, RepoError>> + Send;
}
