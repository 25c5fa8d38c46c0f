//! Liveness and readiness probes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
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

/// The process is up. Never touches the database.
#[utoipa::path(get, path = "/api/v1/health", summary = "Liveness: the process is up", tag = "operations", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Set when the process starts shutting down: readiness answers 503 and every response asks
/// its client to close the connection, so load balancers and keep-alive clients move to the
/// other replicas while this one finishes what runs.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    /// Shutdown has begun.
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

fn draining(req: &HttpRequest) -> bool {
    req.app_data::<web::Data<Draining>>()
        .is_some_and(|d| d.is_draining())
}

/// Middleware: once draining, every response closes its connection.
///
/// # Errors
/// Never on its own.
pub async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    if draining(res.request()) {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    status: &'static str,
    database: &'static str,
}

/// 200 when the database answers (and its schema is in place), 503
/// with `Retry-After` when not, or once the process is shutting down.
#[utoipa::path(get, path = "/api/v1/ready", summary = "Readiness: the database answers", tag = "operations", responses((status = 200, description = "The database answers and the schema is current", body = Ready)))]
pub async fn ready<H: HealthCheck>(
    req: HttpRequest,
    check: web::Data<H>,
) -> Result<HttpResponse, ApiError> {
    if draining(&req) {
        return Err(ApiError::Unavailable {
            retry_after_secs: 5,
        });
    }
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
