//! Prometheus metrics: HTTP requests and latency by route and status (middleware), open SSE
//! streams, and `GET /metrics` (optionally behind a bearer token) rendering whatever the
//! process recorded.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

/// What `GET /metrics` serves, registered as app data.
#[derive(Clone)]
pub struct MetricsEndpoint {
    render: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    token: Option<String>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("protected", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// `render` produces the Prometheus text format; with a `token`, scrapers must send
    /// `Authorization: Bearer <token>`.
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static, token: Option<String>) -> Self {
        Self {
            render: Some(Arc::new(render)),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// `/metrics` answers 404.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            render: None,
            token: None,
        }
    }
}

///
/// # Errors
/// 401 without the configured token; 404 when metrics are off.
#[utoipa::path(get, path = "/metrics", summary = "Prometheus metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn scrape(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let endpoint = req
        .app_data::<web::Data<MetricsEndpoint>>()
        .ok_or(ApiError::NotFound("route"))?;
    let render = endpoint
        .render
        .as_ref()
        .ok_or(ApiError::NotFound("route"))?;
    if let Some(expected) = &endpoint.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::Unauthenticated("a metrics token is required"));
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render()))
}

/// Middleware: counts every request and its latency by method, matched route pattern (never
/// the raw path, so ids do not explode the series) and status.
///
/// # Errors
/// Passes through what the inner service returns.
pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "arbor_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "arbor_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Counts an open SSE stream for as long as it lives.
#[derive(Debug)]
pub struct OpenStream(());

impl OpenStream {
    /// One more open stream.
    #[must_use]
    pub fn open() -> Self {
        metrics::gauge!("arbor_sse_streams_open").increment(1.0);
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("arbor_sse_streams_open").decrement(1.0);
    }
}

/// The root span of every request (for `tracing_actix_web::TracingLogger`): method, route
/// pattern, target and status as tracing-actix-web records them, and `request_id` — the id
/// the client sees in `X-Request-Id`, not a second one. Work a request starts in the
/// background (its generation, its title) runs inside this span too, so every log line of a
/// request carries one id.
#[derive(Debug)]
pub struct RequestSpan;

impl tracing_actix_web::RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let id = crate::context::request_id_of(request);
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %request.uri().path(),
            http.status_code = tracing::field::Empty,
            request_id = %id,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
