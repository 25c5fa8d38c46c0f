//! # api
//!
//! The actix-web adapter: routes, request/response DTOs and the error envelope. Handlers are
//! generic over the use-case ports they need, so tests can drive them with fakes; this crate
//! never names a database or provider type.

pub mod account;
pub mod admin;
pub mod analytics;
pub mod auth;
pub mod chats;
pub mod client;
pub mod context;
pub mod error;
pub mod health;
pub mod import;
pub mod keyed;
pub mod limits;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod path;
pub mod presets;
pub mod request;
pub mod security;
pub mod streaming;
pub mod telemetry;
pub mod templates;
pub mod turns;

use actix_web::web;
use usecase::analytics::AnalyticsUseCase;
use usecase::auth::AuthUseCase;
use usecase::catalog::CatalogUseCase;
use usecase::chat::{ChatUseCase, CompletionsUseCase};
use usecase::ports::HealthCheck;
use usecase::preset::PresetUseCase;
use usecase::template::TemplateUseCase;

pub use auth::AuthRateLimits;
pub use error::{ApiError, ErrorBody};

/// One page of a list, the shape every list route answers with.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PageResponse<T> {
    items: Vec<T>,
    total: u64,
    page: u32,
    limit: u32,
    pages: u64,
}

impl<T> PageResponse<T> {
    /// Maps each item of a domain page into its DTO.
    pub(crate) fn new<U>(page: domain::Page<U>, map: impl FnMut(U) -> T) -> Self {
        Self {
            pages: page.request.pages_for(page.total),
            total: page.total,
            page: page.request.page(),
            limit: page.request.limit(),
            items: page.items.into_iter().map(map).collect(),
        }
    }
}

/// Extractor configuration that turns every malformed input into the error envelope.
pub fn extractor_config(
    body_limit: usize,
) -> (
    web::JsonConfig,
    web::QueryConfig,
    web::PathConfig,
    web::PayloadConfig,
) {
    (
        web::JsonConfig::default()
            .limit(body_limit)
            .error_handler(error::json_error),
        web::QueryConfig::default().error_handler(error::query_error),
        web::PathConfig::default().error_handler(error::path_error),
        web::PayloadConfig::new(body_limit),
    )
}

/// Registers every route under `/api/v1`.
pub fn configure<H, A, M, S, P, T, Y, I>(cfg: &mut web::ServiceConfig)
where
    I: usecase::import::ImportUseCase,
    Y: AnalyticsUseCase,
    T: TemplateUseCase,
    H: HealthCheck,
    A: AuthUseCase + usecase::auth::admin::AdminUseCase + usecase::auth::account::AccountUseCase,
    M: CatalogUseCase,
    S: ChatUseCase + CompletionsUseCase,
    P: PresetUseCase,
{
    cfg.route("/metrics", web::get().to(telemetry::scrape));
    cfg.configure(client::routes);
    openapi::routes(cfg);
    cfg.service(
        web::scope("/api/v1")
            .route("/health", web::get().to(health::health))
            .route("/ready", web::get().to(health::ready::<H>))
            .configure(chats::routes::<A, S>)
            .configure(auth::routes::<A>)
            .configure(models::routes::<A, M>)
            .configure(presets::routes::<A, P>)
            .configure(templates::routes::<A, T>)
            .configure(analytics::routes::<A, Y>)
            .configure(admin::routes::<A, S>)
            .configure(account::routes::<A, S, T, P, M>)
            .configure(import::routes::<A, I>),
    );
    cfg.service(web::scope("/v1").configure(openai::routes::<A, M, S>));
}

/// Answers unknown routes with the 404 envelope instead of actix's empty body.
///
/// # Errors
/// Always: [`ApiError::NotFound`].
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test, web};
    use usecase::testing::InMemoryStore;

    use super::*;

    #[actix_web::test]
    async fn health_answers_with_the_version() {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(InMemoryStore::new()))
                .route("/api/v1/health", web::get().to(health::health)),
        )
        .await;
        let body: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get().uri("/api/v1/health").to_request(),
        )
        .await;
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }

    #[actix_web::test]
    async fn unknown_routes_get_the_json_envelope_with_the_request_id() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(context::request_context))
                .default_service(web::to(not_found)),
        )
        .await;
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/nope")
                .insert_header(("x-request-id", "trace-42"))
                .insert_header(("accept-language", "ja,en;q=0.5"))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers().get("x-request-id").unwrap(), "trace-42");
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["error_type"], "not_found");
        assert_eq!(body["retry_available"], false);
        assert_eq!(body["request_id"], "trace-42");
        assert_eq!(body["user_message"], "見つかりません。");
    }
}
