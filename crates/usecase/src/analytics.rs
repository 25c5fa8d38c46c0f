//! Usage analytics for the caller: totals, per model, per UTC day (zeros included), per
//! hour of day, and costs — from two SQL aggregates per call.

use std::collections::BTreeMap;

use domain::{Timestamp, Usd, UserId};

use crate::ports::{Clock, RepoError};

pub use crate::ports::analytics::{AnalyticsRepository, DayModelUsage, HourUsage};

/// A reporting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The last day.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days.
    Month,
    /// The last 90 days.
    Quarter,
    /// The last 365 days.
    Year,
}

impl Period {
    /// Reads `1d`, `7d`, `30d`, `90d` or `1y`.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "1d" => Self::Day,
            "7d" => Self::Week,
            "30d" => Self::Month,
            "90d" => Self::Quarter,
            "1y" => Self::Year,
            _ => return None,
        })
    }

    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "1d",
            Self::Week => "7d",
            Self::Month => "30d",
            Self::Quarter => "90d",
            Self::Year => "1y",
        }
    }

    const fn days(self) -> i64 {
        match self {
            Self::Day => 1,
            Self::Week => 7,
            Self::Month => 30,
            Self::Quarter => 90,
            Self::Year => 365,
        }
    }
}

/// Totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
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

impl Totals {
    fn add(&mut self, u: &DayModelUsage) {
        self.messages += u.messages;
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.total_tokens += u.total_tokens;
        self.cost = self.cost.plus(u.cost);
    }
}

/// Everything the analytics routes show.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The period.
    pub period: Period,
    /// Start (inclusive).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// Totals.
    pub totals: Totals,
    /// Per model, most messages first.
    pub models: Vec<(String, Totals)>,
    /// One entry per UTC day from the day of `from` to the day of `to`, zeros included.
    pub daily: Vec<(Timestamp, Totals)>,
    /// 24 entries.
    pub hourly: Vec<HourUsage>,
}

/// The analytics service.
#[derive(Debug)]
pub struct AnalyticsService<R, C> {
    repo: R,
    clock: C,
}

impl<R, C> AnalyticsService<R, C> {
    /// Wires the service.
    pub const fn new(repo: R, clock: C) -> Self {
        Self { repo, clock }
    }
}

/// Inbound port of the analytics capability.
pub trait AnalyticsUseCase: Send + Sync + 'static {
    /// The caller's report for `period`, optionally for one model.
    ///
    /// # Errors
    /// Storage failures.
    fn report(
        &self,
        user: UserId,
        period: Period,
        model: Option<&str>,
    ) -> impl Future<Output = Result<Report, RepoError>> + Send;
}

impl<R: AnalyticsRepository, C: Clock> AnalyticsUseCase for AnalyticsService<R, C> {
    async fn report(
        &self,
        user: UserId,
        period: Period,
        model: Option<&str>,
    ) -> Result<Report, RepoError> {
        let to = self.clock.now();
        let from = to.plus_micros(-period.days() * Timestamp::MICROS_PER_DAY);
        let rows = self
            .repo
            .usage_by_day_and_model(user, from, to, model)
            .await?;
        let hours = self.repo.usage_by_hour(user, from, to, model).await?;

        let mut totals = Totals::default();
        let mut per_model: BTreeMap<String, Totals> = BTreeMap::new();
        let mut per_day: BTreeMap<Timestamp, Totals> = BTreeMap::new();
        let mut day = from.start_of_utc_day();
        while day <= to.start_of_utc_day() {
            per_day.insert(day, Totals::default());
            day = day.plus_micros(Timestamp::MICROS_PER_DAY);
        }
        for row in &rows {
            totals.add(row);
            per_model.entry(row.model.clone()).or_default().add(row);
            per_day.entry(row.day).or_default().add(row);
        }
        let mut models: Vec<(String, Totals)> = per_model.into_iter().collect();
        models.sort_by(|a, b| b.1.messages.cmp(&a.1.messages).then(a.0.cmp(&b.0)));
        let mut hourly: Vec<HourUsage> = (0..24)
            .map(|hour| HourUsage {
                hour,
                ..HourUsage::default()
            })
            .collect();
        for h in hours {
            if let Some(slot) = hourly.get_mut(h.hour as usize) {
                *slot = h;
            }
        }
        Ok(Report {
            period,
            from,
            to,
            totals,
            models,
            daily: per_day.into_iter().collect(),
            hourly,
        })
    }
}

#[cfg(test)]
mod tests;
