//! Per-request context: the request id (accepted from `X-Request-Id` when well-formed,
//! generated otherwise, echoed on every response) and the preferred language. Also turns
//! any error response that is not already the JSON envelope (actix's plain-text defaults:
//! 405, 413, …) into the envelope, so clients only ever see one error shape.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::error::ApiError;

/// What error bodies need to know about the request being served.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id.
    pub id: String,
    /// Whether the client prefers Japanese.
    pub japanese: bool,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The current request's context, if called while serving one.
#[must_use]
pub fn current() -> Option<RequestContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// `X-Request-Id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn well_formed(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether the highest-weighted language in `Accept-Language` is Japanese.
#[must_use]
pub fn prefers_japanese(accept_language: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for part in accept_language.split(',') {
        let mut pieces = part.trim().split(';');
        let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        if tag.is_empty() {
            continue;
        }
        let q = pieces
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        let is_ja = tag == "ja" || tag.starts_with("ja-");
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, is_ja));
        }
    }
    best.is_some_and(|(_, ja)| ja)
}

/// The request's id as stored in its extensions.
#[derive(Debug, Clone)]
struct RequestIdValue(String);

/// The id of `req`: the client's `X-Request-Id` when well-formed, else a new UUID. Decided
/// once per request (whoever asks first, the log span or the context middleware) and kept
/// in its extensions, so logs and responses name the same id.
#[must_use]
pub fn request_id_of(req: &ServiceRequest) -> String {
    use actix_web::HttpMessage as _;
    if let Some(RequestIdValue(id)) = req.extensions().get::<RequestIdValue>() {
        return id.clone();
    }
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestIdValue(id.clone()));
    id
}

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
        let replacement: HttpResponse =
            CONTEXT.sync_scope(context, || ApiError::from_status(status).error_response());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_is_chosen_only_when_it_weighs_most() {
        assert!(prefers_japanese("ja"));
        assert!(prefers_japanese("ja-JP,en;q=0.8"));
        assert!(prefers_japanese("en;q=0.5, ja;q=0.9"));
        assert!(!prefers_japanese("en-US,ja;q=0.9"));
        assert!(!prefers_japanese(""));
    }

    #[test]
    fn request_ids_from_clients_must_be_short_and_plain() {
        assert!(well_formed("abc-123_X.y"));
        assert!(!well_formed(""));
        assert!(!well_formed(&"a".repeat(65)));
        assert!(!well_formed("a b"));
        assert!(!well_formed("<script>"));
    }
}
