//! [`AnalyticsRepository`]: two `GROUP BY` statements over generation records.
//!
//! Days and hours are computed with `%` on integer microseconds, which all three backends
//! evaluate exactly; `SUM` of a `BIGINT` is `NUMERIC`/`DECIMAL` on PostgreSQL and MySQL, so
//! sums are cast back to a 64-bit integer with each backend's own spelling.

use domain::{Timestamp, Usd, UserId};
use sea_orm::{DbBackend, Value};
use usecase::analytics::{AnalyticsRepository, DayModelUsage, HourUsage};
use usecase::ports::RepoError;

use crate::SeaOrmStore;
use crate::convert::{count, uuid};
use crate::error::to_repo_error;

const DAY: i64 = Timestamp::MICROS_PER_DAY;
const HOUR: i64 = 3_600 * Timestamp::MICROS_PER_SECOND;
/// Counts a record as a message unless it wrote a title (titles cost, but are not answers).
const ANSWERS: &str = "CASE WHEN kind = 'title' THEN 0 ELSE 1 END";

fn sum(backend: DbBackend, column: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("CAST(SUM({column}) AS BIGINT)"),
        DbBackend::MySql => format!("CAST(SUM({column}) AS SIGNED)"),
        _ => format!("SUM({column})"),
    }
}

/// `WHERE …` with the backend's placeholders, and its values.
fn filter(
    backend: DbBackend,
    user: UserId,
    from: Timestamp,
    to: Timestamp,
    model: Option<&str>,
) -> (String, Vec<Value>) {
    let p = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let mut sql = format!(
        "user_id = {} AND created_at >= {} AND created_at < {}",
        p(1),
        p(2),
        p(3)
    );
    let mut values: Vec<Value> = vec![
        uuid(user.as_u128()).into(),
        from.as_unix_micros().into(),
        to.as_unix_micros().into(),
    ];
    if let Some(model) = model {
        sql.push_str(&format!(" AND model = {}", p(4)));
        values.push(model.to_owned().into());
    }
    (sql, values)
}

impl AnalyticsRepository for SeaOrmStore {
    async fn usage_by_day_and_model(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
        model: Option<&str>,
    ) -> Result<Vec<DayModelUsage>, RepoError> {
        let b = self.backend;
        let (filter, values) = filter(b, user, from, to, model);
        let sql = format!(
            "SELECT created_at - (created_at % {DAY}) AS day, model, {} AS messages, \
             {} AS prompt, {} AS completion, {} AS total, {} AS cost \
             FROM generations WHERE {filter} \
             GROUP BY created_at - (created_at % {DAY}), model",
            sum(b, ANSWERS),
            sum(b, "prompt_tokens"),
            sum(b, "completion_tokens"),
            sum(b, "total_tokens"),
            sum(b, "cost_pico_usd"),
        );
        let rows = self.read_rows(sql, values).await?;
        rows.into_iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<i64>("", c).map_err(to_repo_error);
                Ok(DayModelUsage {
                    day: Timestamp::from_unix_micros(get("day")?),
                    model: r.try_get::<String>("", "model").map_err(to_repo_error)?,
                    messages: count(get("messages")?),
                    prompt_tokens: count(get("prompt")?),
                    completion_tokens: count(get("completion")?),
                    total_tokens: count(get("total")?),
                    cost: Usd::from_pico(get("cost")?),
                })
            })
            .collect()
    }

    async fn usage_by_hour(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
        model: Option<&str>,
    ) -> Result<Vec<HourUsage>, RepoError> {
        let b = self.backend;
        let (filter, values) = filter(b, user, from, to, model);
        let sql = format!(
            "SELECT (created_at % {DAY}) - (created_at % {HOUR}) AS hour_start, {} AS messages, \
             {} AS total, {} AS cost FROM generations WHERE {filter} \
             GROUP BY (created_at % {DAY}) - (created_at % {HOUR})",
            sum(b, ANSWERS),
            sum(b, "total_tokens"),
            sum(b, "cost_pico_usd"),
        );
        let rows = self.read_rows(sql, values).await?;
        rows.into_iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<i64>("", c).map_err(to_repo_error);
                Ok(HourUsage {
                    hour: u32::try_from(get("hour_start")? / HOUR).unwrap_or(0),
                    messages: count(get("messages")?),
                    total_tokens: count(get("total")?),
                    cost: Usd::from_pico(get("cost")?),
                })
            })
            .collect()
    }
}
