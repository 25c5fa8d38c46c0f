//! Usage analytics for the caller.

use actix_web::{HttpResponse, web};
use domain::{Timestamp, Usd};
use serde::Deserialize;
use serde_json::{Value, json};
use usecase::analytics::{AnalyticsUseCase, Period, Report, Totals};
use usecase::auth::AuthUseCase;

use crate::auth::CurrentUser;
use crate::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AnalyticsQuery {
    period: Option<String>,
    model: Option<String>,
}

fn date(t: Timestamp) -> String {
    t.to_string()[..10].to_owned()
}

fn totals(t: &Totals) -> Value {
    json!({
        "messages": t.messages,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "total_tokens": t.total_tokens,
        "cost_usd": t.cost.to_string(),
    })
}

/// `part / whole`, as a decimal string with up to 12 places (`0` when `whole` is 0).
fn ratio(part: Usd, whole: u64) -> String {
    if whole == 0 {
        return "0".to_owned();
    }
    Usd::from_pico(part.as_pico() / i64::try_from(whole).unwrap_or(i64::MAX)).to_string()
}

fn overview(r: &Report) -> Value {
    let mut v = totals(&r.totals);
    v["period"] = json!(r.period.as_str());
    v["from"] = json!(r.from.to_string());
    v["to"] = json!(r.to.to_string());
    v
}

fn models(r: &Report) -> Value {
    // Shares of messages in percent, two decimals, adding up to exactly 100.00.
    let counts: Vec<u64> = r.models.iter().map(|(_, t)| t.messages).collect();
    let shares = domain::shares_in_hundredths(&counts);
    json!(
        r.models
            .iter()
            .zip(shares)
            .map(|((model, t), share)| {
                let mut v = totals(t);
                v["model"] = json!(model);
                v["share_percent"] = json!(format!("{}.{:02}", share / 100, share % 100));
                v
            })
            .collect::<Vec<_>>()
    )
}

fn daily(r: &Report) -> Value {
    json!(
        r.daily
            .iter()
            .map(|(day, t)| {
                let mut v = totals(t);
                v["date"] = json!(date(*day));
                v
            })
            .collect::<Vec<_>>()
    )
}

fn hourly(r: &Report) -> Value {
    json!(
        r.hourly
            .iter()
            .map(|h| json!({
                "hour": h.hour,
                "messages": h.messages,
                "total_tokens": h.total_tokens,
                "cost_usd": h.cost.to_string(),
            }))
            .collect::<Vec<_>>()
    )
}

fn costs(r: &Report) -> Value {
    let mut cumulative = Usd::default();
    let days: Vec<Value> = r
        .daily
        .iter()
        .map(|(day, t)| {
            cumulative = cumulative.plus(t.cost);
            json!({"date": date(*day), "cost_usd": t.cost.to_string(), "cumulative_usd": cumulative.to_string()})
        })
        .collect();
    json!({
        "daily": days,
        "total_usd": r.totals.cost.to_string(),
        "average_per_message_usd": ratio(r.totals.cost, r.totals.messages),
        "average_per_token_usd": ratio(r.totals.cost, r.totals.total_tokens),
    })
}

async fn report<A: AuthUseCase, Y: AnalyticsUseCase>(
    caller: &CurrentUser<A>,
    analytics: &Y,
    query: AnalyticsQuery,
) -> Result<Report, ApiError> {
    let period = match query.period.as_deref() {
        None => Period::Month,
        Some(p) => Period::parse(p).ok_or_else(|| ApiError::Validation {
            message: "period must be 1d, 7d, 30d, 90d or 1y".into(),
            field: Some("period".into()),
        })?,
    };
    if query
        .model
        .as_ref()
        .is_some_and(|m| m.chars().count() > domain::limits::MODEL_ID_MAX)
    {
        return Err(ApiError::Validation {
            message: "model is too long".into(),
            field: Some("model".into()),
        });
    }
    analytics
        .report(caller.id(), period, query.model.as_deref())
        .await
        .map_err(ApiError::from_repo)
}

macro_rules! analytics_route {
    ($(#[$doc:meta])* $name:ident, $render:expr) => {
        $(#[$doc])*
        async fn $name<A: AuthUseCase, Y: AnalyticsUseCase>(
            caller: CurrentUser<A>,
            analytics: web::Data<Y>,
            query: web::Query<AnalyticsQuery>,
        ) -> Result<HttpResponse, ApiError> {
            let r = report(&caller, analytics.get_ref(), query.into_inner()).await?;
            Ok(HttpResponse::Ok().json(($render)(&r)))
        }
    };
}

analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/overview", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Totals", body = serde_json::Value)), security(("bearer" = [])))]
    overview_route,
    overview
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/models", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Per model", body = serde_json::Value)), security(("bearer" = [])))]
    models_route,
    models
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/daily", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Per UTC day, zeros included", body = serde_json::Value)), security(("bearer" = [])))]
    daily_route,
    daily
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/hourly", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "24 hourly buckets", body = serde_json::Value)), security(("bearer" = [])))]
    hourly_route,
    hourly
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/costs", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Costs per day and cumulative", body = serde_json::Value)), security(("bearer" = [])))]
    costs_route,
    costs
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Every report at once", body = serde_json::Value)), security(("bearer" = [])))]
    all_route,
    |r: &Report| json!({
        "overview": overview(r),
        "models": models(r),
        "daily": daily(r),
        "hourly": hourly(r),
        "costs": costs(r),
    })
);

/// Registers the analytics routes (inside the `/api/v1` scope).
pub fn routes<A: AuthUseCase, Y: AnalyticsUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/analytics", web::get().to(all_route::<A, Y>))
        .route("/analytics/overview", web::get().to(overview_route::<A, Y>))
        .route("/analytics/models", web::get().to(models_route::<A, Y>))
        .route("/analytics/daily", web::get().to(daily_route::<A, Y>))
        .route("/analytics/hourly", web::get().to(hourly_route::<A, Y>))
        .route("/analytics/costs", web::get().to(costs_route::<A, Y>));
}
