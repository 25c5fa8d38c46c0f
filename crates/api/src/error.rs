//! The error envelope. This module is the only place in Arbor that picks HTTP status codes.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Every error body: `{"error_type", "user_message", "retry_available", "detail"?, "request_id"}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error_type: &'static str,
    /// A sentence for people.
    pub user_message: String,
    /// Whether repeating the same request later may succeed.
    pub retry_available: bool,
    /// Structured detail (e.g. which field is invalid), never internals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Correlates the response with the server's logs.
    pub request_id: String,
}

/// Every failure a handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no such route or resource (also: a resource of another user).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 503: the database does not answer; `Retry-After` says when to try again.
    #[error("the service is temporarily unavailable")]
    Unavailable {
        /// Seconds until a retry makes sense.
        retry_after_secs: u64,
    },
    /// 500: anything unexpected. The cause is logged here, never sent.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    const fn error_type(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Unavailable { .. } => "service_unavailable",
            Self::Internal => "internal_error",
        }
    }

    const fn retry_available(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Internal)
    }

    /// The envelope for this error.
    #[must_use]
    pub fn body(&self, request_id: String) -> ErrorBody {
        ErrorBody {
            error_type: self.error_type(),
            user_message: self.to_string(),
            retry_available: self.retry_available(),
            detail: None,
            request_id,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Unavailable { retry_after_secs } = self {
            response.insert_header((header::RETRY_AFTER, *retry_after_secs));
        }
        response.json(self.body(uuid_like_request_id()))
    }
}

/// A request id for responses produced outside a request scope. Replaced by the request-id
/// middleware's value in issue 2/8.
fn uuid_like_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("req-{:016x}", N.fetch_add(1, Ordering::Relaxed))
}
