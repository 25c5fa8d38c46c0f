//! Usage analytics for the caller.

use actix_web::{HttpResponse, web};
use domain::{Timestamp, Usd};
use serde::{Deserialize, Serialize};
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

/// Usage over a span of time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TotalsResponse {
    /// Answers (titles are not counted).
    messages: u64,
    /// Input tokens.
    prompt_tokens: u64,
    /// Output tokens.
    completion_tokens: u64,
    /// All tokens.
    total_tokens: u64,
    /// Cost in USD, a decimal string (exact; no float rounding).
    #[schema(example = "0.0042")]
    cost_usd: String,
}

fn totals(t: &Totals) -> TotalsResponse {
    TotalsResponse {
        messages: t.messages,
        prompt_tokens: t.prompt_tokens,
        completion_tokens: t.completion_tokens,
        total_tokens: t.total_tokens,
        cost_usd: t.cost.to_string(),
    }
}

/// `part / whole`, as a decimal string with up to 12 places (`0` when `whole` is 0).
fn ratio(part: Usd, whole: u64) -> String {
    if whole == 0 {
        return "0".to_owned();
    }
    Usd::from_pico(part.as_pico() / i64::try_from(whole).unwrap_or(i64::MAX)).to_string()
}

/// The period's totals.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OverviewResponse {
    #[serde(flatten)]
    totals: TotalsResponse,
    /// The period asked for.
    #[schema(example = "30d")]
    period: &'static str,
    /// Its start (RFC 3339, UTC).
    from: String,
    /// Its end, now (RFC 3339, UTC).
    to: String,
}

fn overview(r: &Report) -> OverviewResponse {
    OverviewResponse {
        totals: totals(&r.totals),
        period: r.period.as_str(),
        from: r.from.to_string(),
        to: r.to.to_string(),
    }
}

/// One model's usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelUsageResponse {
    /// The model id.
    model: String,
    #[serde(flatten)]
    totals: TotalsResponse,
    /// Its share of the answers in percent, two decimals; the shares add up to exactly 100.
    #[schema(example = "66.67")]
    share_percent: String,
}

fn models(r: &Report) -> Vec<ModelUsageResponse> {
    let counts: Vec<u64> = r.models.iter().map(|(_, t)| t.messages).collect();
    let shares = domain::shares_in_hundredths(&counts);
    r.models
        .iter()
        .zip(shares)
        .map(|((model, t), share)| ModelUsageResponse {
            model: model.clone(),
            totals: totals(t),
            share_percent: format!("{}.{:02}", share / 100, share % 100),
        })
        .collect()
}

/// One UTC day's usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DayUsageResponse {
    /// The day (`YYYY-MM-DD`, UTC).
    #[schema(format = Date)]
    date: String,
    #[serde(flatten)]
    totals: TotalsResponse,
}

fn daily(r: &Report) -> Vec<DayUsageResponse> {
    r.daily
        .iter()
        .map(|(day, t)| DayUsageResponse {
            date: date(*day),
            totals: totals(t),
        })
        .collect()
}

/// One hour of the day (UTC) over the whole period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HourUsageResponse {
    /// 0–23.
    #[schema(minimum = 0, maximum = 23)]
    hour: u32,
    /// Answers.
    messages: u64,
    /// All tokens.
    total_tokens: u64,
    /// Cost in USD, a decimal string.
    cost_usd: String,
}

fn hourly(r: &Report) -> Vec<HourUsageResponse> {
    r.hourly
        .iter()
        .map(|h| HourUsageResponse {
            hour: h.hour,
            messages: h.messages,
            total_tokens: h.total_tokens,
            cost_usd: h.cost.to_string(),
        })
        .collect()
}

/// One day's cost and the running total.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DayCostResponse {
    /// The day (`YYYY-MM-DD`, UTC).
    #[schema(format = Date)]
    date: String,
    /// That day's cost in USD.
    cost_usd: String,
    /// The cost from the period's start to the end of that day.
    cumulative_usd: String,
}

/// Costs per day, in all and on average.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CostsResponse {
    daily: Vec<DayCostResponse>,
    /// The period's cost in USD.
    total_usd: String,
    /// Average cost of one answer.
    average_per_message_usd: String,
    /// Average cost of one token.
    average_per_token_usd: String,
}

fn costs(r: &Report) -> CostsResponse {
    let mut cumulative = Usd::default();
    CostsResponse {
        daily: r
            .daily
            .iter()
            .map(|(day, t)| {
                cumulative = cumulative.plus(t.cost);
                DayCostResponse {
                    date: date(*day),
                    cost_usd: t.cost.to_string(),
                    cumulative_usd: cumulative.to_string(),
                }
            })
            .collect(),
        total_usd: r.totals.cost.to_string(),
        average_per_message_usd: ratio(r.totals.cost, r.totals.messages),
        average_per_token_usd: ratio(r.totals.cost, r.totals.total_tokens),
    }
}

/// Every report at once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AnalyticsResponse {
    overview: OverviewResponse,
    models: Vec<ModelUsageResponse>,
    daily: Vec<DayUsageResponse>,
    hourly: Vec<HourUsageResponse>,
    costs: CostsResponse,
}

fn all(r: &Report) -> AnalyticsResponse {
    AnalyticsResponse {
        overview: overview(r),
        models: models(r),
        daily: daily(r),
        hourly: hourly(r),
        costs: costs(r),
    }
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
    #[utoipa::path(get, path = "/api/v1/analytics/overview", summary = "Usage totals of a period", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "The period's totals", body = OverviewResponse)), security(("bearer" = [])))]
    overview_route,
    overview
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/models", summary = "Usage per model with shares", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Per model, most used first", body = Vec<ModelUsageResponse>)), security(("bearer" = [])))]
    models_route,
    models
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/daily", summary = "Usage per UTC day", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Per UTC day, zeros included", body = Vec<DayUsageResponse>)), security(("bearer" = [])))]
    daily_route,
    daily
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/hourly", summary = "Usage per hour of the day", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "24 hourly buckets", body = Vec<HourUsageResponse>)), security(("bearer" = [])))]
    hourly_route,
    hourly
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics/costs", summary = "Costs per day, cumulative and on average", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Costs per day and cumulative", body = CostsResponse)), security(("bearer" = [])))]
    costs_route,
    costs
);
analytics_route!(
    #[utoipa::path(get, path = "/api/v1/analytics", summary = "All usage reports of a period at once", tag = "analytics", params(AnalyticsQuery), responses((status = 200, description = "Every report at once", body = AnalyticsResponse)), security(("bearer" = [])))]
    all_route,
    all
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
