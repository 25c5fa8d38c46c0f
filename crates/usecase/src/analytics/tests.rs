//! How a report is assembled from the two aggregates (a fake of the repository port; the
//! SQL itself is tested on every backend in infra-db's suite): the window, zero-filled days,
//! totals, models by use, 24 hourly buckets.

use std::sync::Mutex;

use super::*;
use crate::testing::ManualClock;

/// Answers the aggregates with fixed rows and remembers what it was asked.
#[derive(Debug, Default)]
struct Rows {
    days: Vec<DayModelUsage>,
    hours: Vec<HourUsage>,
    asked: Mutex<Vec<(Timestamp, Timestamp, Option<String>)>>,
}

impl AnalyticsRepository for Rows {
    async fn usage_by_day_and_model(
        &self,
        _user: UserId,
        from: Timestamp,
        to: Timestamp,
        model: Option<&str>,
    ) -> Result<Vec<DayModelUsage>, RepoError> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push((from, to, model.map(str::to_owned)));
        }
        Ok(self.days.clone())
    }

    async fn usage_by_hour(
        &self,
        _user: UserId,
        _from: Timestamp,
        _to: Timestamp,
        _model: Option<&str>,
    ) -> Result<Vec<HourUsage>, RepoError> {
        Ok(self.hours.clone())
    }
}

fn usage(day: Timestamp, model: &str, messages: u64, cost_pico: i64) -> DayModelUsage {
    DayModelUsage {
        day,
        model: model.to_owned(),
        messages,
        prompt_tokens: messages * 10,
        completion_tokens: messages * 5,
        total_tokens: messages * 15,
        cost: Usd::from_pico(cost_pico),
    }
}

#[tokio::test]
async fn a_week_has_eight_zero_filled_days_totals_models_by_use_and_24_hours() {
    // Noon, 2027-01-15 UTC.
    let now = Timestamp::from_unix_seconds(1_800_000_000)
        .start_of_utc_day()
        .plus_micros(12 * 3_600 * 1_000_000);
    let today = now.start_of_utc_day();
    let yesterday = today.plus_micros(-Timestamp::MICROS_PER_DAY);
    let repo = Rows {
        days: vec![
            usage(yesterday, "b/model", 2, 2_000),
            usage(today, "a/model", 2, 1_000),
            usage(today, "c/model", 5, 500),
        ],
        hours: vec![HourUsage {
            hour: 13,
            messages: 9,
            total_tokens: 135,
            cost: Usd::from_pico(3_500),
        }],
        asked: Mutex::default(),
    };
    let service = AnalyticsService::new(repo, ManualClock::new(now));
    let report = service
        .report(UserId::from_u128(1), Period::Week, Some("a/model"))
        .await
        .unwrap();

    let asked = service.repo.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let (from, to, model) = &asked[0];
    assert_eq!(
        to.as_unix_micros() - from.as_unix_micros(),
        7 * Timestamp::MICROS_PER_DAY
    );
    assert_eq!(
        model.as_deref(),
        Some("a/model"),
        "the filter reaches the query"
    );

    // Seven days back to today: 8 calendar days, each present, zeros included.
    assert_eq!(report.daily.len(), 8);
    assert_eq!(report.daily.last().map(|(d, _)| *d), Some(today));
    assert_eq!(
        report.daily.iter().filter(|(_, t)| t.messages == 0).count(),
        6
    );
    assert_eq!(report.totals.messages, 9);
    assert_eq!(report.totals.total_tokens, 135);
    assert_eq!(report.totals.cost, Usd::from_pico(3_500));
    // Most used first; ties by name.
    let order: Vec<&str> = report.models.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(order, ["c/model", "a/model", "b/model"]);
    assert_eq!(report.hourly.len(), 24);
    assert_eq!(report.hourly[13].messages, 9);
    assert!(
        report
            .hourly
            .iter()
            .enumerate()
            .all(|(i, h)| h.hour == i as u32)
    );
}
