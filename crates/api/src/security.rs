//! Response hardening: security headers on every response and CORS from configuration.

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;

/// A Content-Security-Policy that still lets the bundled API docs (`/docs`, same-origin
/// scripts and styles only) work; API responses are JSON and need nothing more.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, the CSP, and HSTS when
/// `hsts_max_age_secs` is not zero (serve HTTPS in front of Arbor before turning it on).
#[must_use]
pub fn security_headers(hsts_max_age_secs: u64) -> DefaultHeaders {
    let headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add(("Cross-Origin-Opener-Policy", "same-origin"));
    if hsts_max_age_secs > 0 {
        headers.add((
            header::STRICT_TRANSPORT_SECURITY,
            format!("max-age={hsts_max_age_secs}; includeSubDomains"),
        ))
    } else {
        headers
    }
}

/// CORS for exactly `origins` (`*` = any origin, never with credentials; empty = no
/// cross-origin access at all).
pub fn cors(origins: &[String], allow_credentials: bool) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::ACCEPT_LANGUAGE,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static(crate::auth::REFRESH_COOKIE_HEADER),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(600);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
        if allow_credentials {
            cors = cors.supports_credentials();
        }
    }
    cors
}
