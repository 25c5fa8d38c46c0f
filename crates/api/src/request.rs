//! The request being served: its id (accepted from `X-Request-Id` when well-formed,
//! generated otherwise) and the preferred language, readable from anywhere while it is
//! served (a task-local set by the `context` middleware). A leaf module: error bodies and
//! log spans read it without depending on the middleware.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;

/// What error bodies need to know about the request being served.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id.
    pub id: String,
    /// Whether the client prefers Japanese.
    pub japanese: bool,
}

tokio::task_local! {
    pub(crate) static CONTEXT: RequestContext;
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
