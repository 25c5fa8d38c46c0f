//! Liveness and readiness probes.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use usecase::ports::HealthCheck;

use crate::error::ApiError;

/// How long readiness waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// `GET /api/v1/health`: the process is up. Never touches the database.
#[utoipa::path(get, path = "/api/v1/health", tag = "operations", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    status: &'static str,
    database: &'static str,
}

/// `GET /api/v1/ready`: 200 when the database answers (and its schema is in place), 503
/// with `Retry-After` when not.
#[utoipa::path(get, path = "/api/v1/ready", tag = "operations", responses((status = 200, description = "The database answers and the schema is current", body = Ready)))]
pub async fn ready<H: HealthCheck>(check: web::Data<H>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, check.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Ready {
            status: "ready",
            database: "ok",
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database not ready");
            Err(ApiError::Unavailable {
                retry_after_secs: 5,
            })
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer in time");
            Err(ApiError::Unavailable {
                retry_after_secs: 5,
            })
        }
    }
}
