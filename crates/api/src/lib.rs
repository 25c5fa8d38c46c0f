//! # api
//!
//! The actix-web adapter: routes, request/response DTOs and the error envelope. Handlers are
//! generic over the use-case ports they need, so tests can drive them with fakes; this crate
//! never names a database or provider type.

pub mod error;
pub mod health;

use actix_web::web;
use usecase::ports::HealthCheck;

pub use error::{ApiError, ErrorBody};

/// Registers every route under `/api/v1`.
pub fn configure<H: HealthCheck>(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/health", web::get().to(health::health))
            .route("/ready", web::get().to(health::ready::<H>)),
    );
}

/// Answers unknown routes with the 404 envelope instead of actix's empty body.
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
                .configure(configure::<InMemoryStore>),
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
    async fn unknown_routes_get_the_json_envelope() {
        let app = test::init_service(App::new().default_service(web::to(not_found))).await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
        assert_eq!(response.status(), 404);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["error_type"], "not_found");
        assert_eq!(body["retry_available"], false);
        assert!(body["request_id"].is_string());
    }
}
