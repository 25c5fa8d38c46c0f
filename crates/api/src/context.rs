//! Per-request context: the request id (accepted from `X-Request-Id` when well-formed,
//! generated otherwise, echoed on every response) and the preferred language. Also turns
//! any error response that is not already the JSON envelope (actix's plain-text defaults:
//! 405, 413, …) into the envelope (under `/v1/`, OpenAI's error shape), so clients only ever
//! see one error shape.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::error::ApiError;
use crate::openai::OpenAiError;

use crate::request::CONTEXT;
pub use crate::request::{REQUEST_ID, RequestContext, current, prefers_japanese, request_id_of};

/// The middleware (use with `actix_web::middleware::from_fn`).
///
/// # Errors
/// Never on its own; passes through what the inner service returns.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id_of(&req);
    let japanese = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(prefers_japanese);
    let context = RequestContext {
        id: id.clone(),
        japanese,
    };
    // Handlers and extractors turn their errors into responses themselves; an `Err` here can
    // only come from another middleware and is passed on as it is.
    let mut response = CONTEXT
        .scope(context.clone(), async move { next.call(req).await })
        .await?
        .map_into_boxed_body();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        // The OpenAI-compatible surface answers in OpenAI's error shape, as its SDKs read it.
        let openai = response.request().path().starts_with("/v1/");
        let replacement: HttpResponse = CONTEXT.sync_scope(context, || {
            let error = ApiError::from_status(status);
            if openai {
                OpenAiError::from(error).error_response()
            } else {
                error.error_response()
            }
        });
        let (req, old) = response.into_parts();
        let mut new = replacement;
        for (name, value) in old.headers() {
            if name == header::ALLOW
                || name == header::RETRY_AFTER
                || name == header::WWW_AUTHENTICATE
            {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        response = ServiceResponse::new(req, new);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    Ok(response)
}
