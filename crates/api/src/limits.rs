//! Request rate limits per route family: per user once authenticated, per client IP for
//! anonymous requests. The client IP comes from `X-Forwarded-For` only when the connection
//! comes from a configured trusted proxy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};
use domain::UserId;
use usecase::cluster::Coordination;

use crate::error::ApiError;
use crate::keyed::{BoundedLimiter, KEYS_MAX};

/// Requests per minute for each route family.
#[derive(Debug, Clone, Copy)]
pub struct RoutePerMinute {
    /// Sending a message (blocking or streamed).
    pub send: u32,
    /// Creating a chat.
    pub create_chat: u32,
    /// Reading a conversation (branch, tree, complete, lists).
    pub history: u32,
    /// Answering again.
    pub retry: u32,
    /// Every other authenticated request.
    pub general: u32,
    /// Requests without credentials (and failed authentications), per client IP.
    pub anonymous: u32,
}

/// A family of routes sharing one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `POST …/messages`, `POST …/messages/stream`, edits (`PATCH …/messages/{mid}`, which
    /// answer with `regenerate=true`, and `PATCH …/messages/{mid}/stream`),
    /// `POST /v1/chat/completions`.
    Send,
    /// `POST /chats`.
    CreateChat,
    /// Reads of conversations.
    History,
    /// `POST …/retry`, `POST …/retry/stream`.
    Retry,
    /// Everything else that is authenticated.
    General,
    /// Unauthenticated requests.
    Anonymous,
}

impl Family {
    /// The family of a route, by method and matched pattern.
    #[must_use]
    pub fn of(method: &Method, pattern: &str) -> Self {
        let path = pattern.strip_prefix("/api/v1").unwrap_or(pattern);
        match (method.as_str(), path) {
            (
                "POST",
                "/chats/{id}/messages" | "/chats/{id}/messages/stream" | "/v1/chat/completions",
            )
            | ("PATCH", "/chats/{id}/messages/{mid}" | "/chats/{id}/messages/{mid}/stream") => {
                Self::Send
            }
            ("POST", "/chats") => Self::CreateChat,
            (
                "POST",
                "/chats/{id}/messages/{mid}/retry" | "/chats/{id}/messages/{mid}/retry/stream",
            ) => Self::Retry,
            (
                "GET",
                "/chats"
                | "/chats/recent"
                | "/chats/{id}/messages"
                | "/chats/{id}/tree"
                | "/chats/{id}/complete",
            ) => Self::History,
            _ => Self::General,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The limiters and the proxies whose `X-Forwarded-For` is believed. Clones share state.
#[derive(Debug, Clone)]
pub struct RateLimits {
    limiters: Arc<[BoundedLimiter; 6]>,
    trusted_proxies: Arc<Vec<IpAddr>>,
    enabled: bool,
}

impl RateLimits {
    /// Limits as configured; `enabled = false` lets everything through. With `shared`, each
    /// family's budget is shared with the other replicas.
    #[must_use]
    pub fn new(
        per: RoutePerMinute,
        trusted_proxies: Vec<IpAddr>,
        enabled: bool,
        shared: Option<&Arc<dyn Coordination>>,
    ) -> Self {
        let keyed = |n, name| {
            BoundedLimiter::new(n, Duration::from_secs(60), KEYS_MAX).shared(shared, name)
        };
        Self {
            limiters: Arc::new([
                keyed(per.send, "send"),
                keyed(per.create_chat, "create_chat"),
                keyed(per.history, "history"),
                keyed(per.retry, "retry"),
                keyed(per.general, "general"),
                keyed(per.anonymous, "anonymous"),
            ]),
            trusted_proxies: Arc::new(trusted_proxies.into_iter().map(normalise).collect()),
            enabled,
        }
    }

    async fn check(&self, family: Family, key: String) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        self.limiters[family.index()].check(key).await
    }

    /// Spends one request of `user` in the family of the matched route.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] with the time until the next request is allowed.
    pub async fn check_user(&self, req: &HttpRequest, user: UserId) -> Result<(), ApiError> {
        let family = Family::of(req.method(), req.match_pattern().as_deref().unwrap_or(""));
        self.check(family, user.to_string()).await
    }

    /// Spends one anonymous request of the client's IP.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`].
    pub async fn check_anonymous(&self, req: &HttpRequest) -> Result<(), ApiError> {
        self.check(Family::Anonymous, self.client_ip(req).to_string())
            .await
    }

    /// The client's address: the connection's peer, or — when the peer is a trusted proxy —
    /// the nearest address in `X-Forwarded-For` that is not a trusted proxy.
    #[must_use]
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| normalise(a.ip()));
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .map(normalise)
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .or_else(|| forwarded.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// The client's address as [`RateLimits::client_ip`] sees it (the peer when no limits are
/// registered).
#[must_use]
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    req.app_data::<web::Data<RateLimits>>().map_or_else(
        || {
            req.peer_addr()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| normalise(a.ip()))
        },
        |limits| limits.client_ip(req),
    )
}

fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Routes that are never limited (probes and scrapes).
fn exempt(path: &str) -> bool {
    matches!(path, "/api/v1/health" | "/api/v1/ready" | "/metrics")
}

/// Routes that never read the `Authorization` header (they take a password or a refresh
/// token instead): an `Authorization` header on them must not exempt the request from the
/// per-IP limit, as no extractor would charge a failed credential to anyone.
fn credential_free(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/users" | "/api/v1/auth/login" | "/api/v1/auth/refresh"
    )
}

/// Middleware: limits requests that carry no credentials, and every request to a
/// [`credential_free`] route, per client IP (authenticated requests are limited per user by
/// the `CurrentUser` extractor, which also charges a failed credential to the IP).
///
/// # Errors
/// Never on its own.
pub async fn anonymous_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path();
    let anonymous = !exempt(path)
        && (!req.headers().contains_key(header::AUTHORIZATION) || credential_free(path));
    if anonymous
        && let Some(limits) = req.app_data::<web::Data<RateLimits>>()
        && let Err(e) = limits.check_anonymous(req.request()).await
    {
        let response = e.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn routes_fall_into_their_families() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            Family::of(&post, "/api/v1/chats/{id}/messages"),
            Family::Send
        );
        assert_eq!(
            Family::of(&post, "/api/v1/chats/{id}/messages/stream"),
            Family::Send
        );
        assert_eq!(Family::of(&post, "/api/v1/chats"), Family::CreateChat);
        let patch = Method::PATCH;
        assert_eq!(
            Family::of(&patch, "/api/v1/chats/{id}/messages/{mid}"),
            Family::Send
        );
        assert_eq!(
            Family::of(&patch, "/api/v1/chats/{id}/messages/{mid}/stream"),
            Family::Send
        );
        assert_eq!(Family::of(&patch, "/api/v1/chats/{id}"), Family::General);
        assert_eq!(Family::of(&get, "/api/v1/chats"), Family::History);
        assert_eq!(Family::of(&get, "/api/v1/chats/{id}/tree"), Family::History);
        assert_eq!(
            Family::of(&post, "/api/v1/chats/{id}/messages/{mid}/retry/stream"),
            Family::Retry
        );
        assert_eq!(Family::of(&get, "/api/v1/templates"), Family::General);
    }

    #[actix_web::test]
    async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let per = RoutePerMinute {
            send: 1,
            create_chat: 1,
            history: 1,
            retry: 1,
            general: 1,
            anonymous: 1,
        };
        let trusting = RateLimits::new(per, vec![proxy], true, None);
        let from = |peer: &str, xff: &str| {
            TestRequest::default()
                .peer_addr(format!("{peer}:5000").parse().unwrap())
                .insert_header(("x-forwarded-for", xff))
                .to_http_request()
        };
        // Spoofed entries to the left of the real client are ignored.
        let req = from("10.0.0.1", "1.1.1.1, 203.0.113.7");
        assert_eq!(
            trusting.client_ip(&req),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let req = from("198.51.100.2", "203.0.113.7");
        assert_eq!(
            trusting.client_ip(&req),
            "198.51.100.2".parse::<IpAddr>().unwrap(),
            "an untrusted peer's header is ignored"
        );
        let req = from("10.0.0.1", "garbage");
        assert_eq!(trusting.client_ip(&req), proxy);
        assert!(
            trusting
                .check_anonymous(&from("10.0.0.1", "203.0.113.7"))
                .await
                .is_ok()
        );
        assert!(
            trusting
                .check_anonymous(&from("10.0.0.1", "203.0.113.7"))
                .await
                .is_err()
        );
        assert!(
            trusting
                .check_anonymous(&from("10.0.0.1", "203.0.113.8"))
                .await
                .is_ok()
        );
        let off = RateLimits::new(per, vec![], false, None);
        for _ in 0..5 {
            assert!(off.check_anonymous(&from("1.2.3.4", "")).await.is_ok());
        }
    }
}
