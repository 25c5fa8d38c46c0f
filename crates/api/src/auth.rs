//! Accounts and authentication routes, the bearer extractor, and login/register rate limits.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use domain::{ApiKeyId, Password, User, UserId, Username, limits};

use crate::keyed::{BoundedLimiter, KEYS_MAX};

use crate::limits::RateLimits;
use serde::{Deserialize, Serialize};
use usecase::auth::{ApiKeyRecord, AuthUseCase, TokenPair};

use crate::error::ApiError;
use crate::path::Id;

/// The authenticated caller. Generic over the auth use case so tests can plug a fake.
#[derive(Debug)]
pub struct CurrentUser<A> {
    /// Who is calling.
    pub user: User,
    marker: PhantomData<fn() -> A>,
}

impl<A> CurrentUser<A> {
    /// The caller's id.
    #[must_use]
    pub const fn id(&self) -> UserId {
        self.user.id
    }
}

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated("not authenticated"))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("invalid or expired credentials"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthenticated("invalid or expired credentials"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 4_096 {
        return Err(ApiError::Unauthenticated("invalid or expired credentials"));
    }
    Ok(token.to_owned())
}

impl<A: AuthUseCase> FromRequest for CurrentUser<A> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = bearer(req);
        let auth = req.app_data::<web::Data<A>>().cloned();
        let limits = req.app_data::<web::Data<RateLimits>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let token = token?;
            let auth = auth.ok_or_else(|| {
                tracing::error!("auth use case not registered");
                ApiError::Internal
            })?;
            let write = !matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            );
            let user = match auth.authenticate(&token, write).await {
                Ok(user) => user,
                Err(e) => {
                    // Failed credentials spend the client's anonymous budget.
                    if let Some(limits) = &limits {
                        limits.check_anonymous(&req).await?;
                    }
                    return Err(e.into());
                }
            };
            if let Some(limits) = &limits {
                limits.check_user(&req, user.id).await?;
            }
            Ok(Self {
                user,
                marker: PhantomData,
            })
        })
    }
}

/// Limits on how often anonymous clients may log in and register.
#[derive(Debug, Clone)]
pub struct AuthRateLimits {
    login: Arc<BoundedLimiter>,
    register: Arc<BoundedLimiter>,
}

impl AuthRateLimits {
    /// `login` attempts per client IP and username, `register` attempts per client IP, each
    /// per `window`; shared with the other replicas through `shared` when given.
    #[must_use]
    pub fn new(
        login: u32,
        register: u32,
        window: Duration,
        shared: Option<&Arc<dyn usecase::cluster::Coordination>>,
    ) -> Self {
        let limiter =
            |n, name| Arc::new(BoundedLimiter::new(n, window, KEYS_MAX).shared(shared, name));
        Self {
            login: limiter(login, "login"),
            register: limiter(register, "register"),
        }
    }
}

fn client_ip(req: &HttpRequest) -> String {
    crate::limits::client_ip(req).to_string()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Credentials {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]+$")]
    username: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// A registration: credentials, and the invite code under the `invite` policy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Registration {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]+$")]
    username: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// Required under the `invite` registration policy (single use).
    #[serde(default)]
    #[schema(max_length = 256)]
    invite_code: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct FormCredentials {
    username: String,
    password: String,
    #[serde(default)]
    grant_type: Option<String>,
}

/// `{uuid, username, created_at}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserResponse {
    uuid: String,
    username: String,
    /// `user` or `admin`.
    role: &'static str,
    /// Waiting for an admin's approval (cannot log in yet).
    pending: bool,
    created_at: String,
}

impl From<&User> for UserResponse {
    fn from(u: &User) -> Self {
        Self {
            uuid: u.id.to_string(),
            username: u.username.as_str().to_owned(),
            role: u.role.as_str(),
            pending: u.pending,
            created_at: u.created_at.to_string(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    /// Absent when it was delivered as an HttpOnly cookie (`X-Arbor-Refresh-Cookie: 1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access.token,
            token_type: "bearer",
            expires_in: p.access.expires_in,
            refresh_token: Some(p.refresh_token),
        }
    }
}

/// The request header with which a browser asks for its refresh token as a cookie
/// (`X-Arbor-Refresh-Cookie: 1`) on login, refresh and logout. Being a custom header, it
/// cannot be sent cross-site without a CORS preflight, which is one more guard on top of
/// the cookie's `SameSite=Strict`.
pub const REFRESH_COOKIE_HEADER: &str = "x-arbor-refresh-cookie";
/// The refresh token's cookie: HttpOnly (scripts never see it), `SameSite=Strict`, and sent
/// only to `/api/v1/auth` (login, refresh, logout).
pub const REFRESH_COOKIE: &str = "arbor_refresh";
const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";

/// How long the refresh cookie lives: the refresh token's own lifetime (app data; 30 days
/// when absent).
#[derive(Debug, Clone, Copy)]
pub struct RefreshCookie {
    /// Seconds, as `auth.refresh_token_ttl_secs`.
    pub max_age_secs: u64,
}

fn cookie_mode(req: &HttpRequest) -> bool {
    req.headers()
        .get(REFRESH_COOKIE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// The refresh cookie carrying `value` for `max_age` seconds (0 removes it). `Secure` when
/// the request came over HTTPS (as seen by the server or a trusted proxy's header).
fn refresh_cookie(req: &HttpRequest, value: String, max_age: u64) -> Cookie<'static> {
    let secure = req.connection_info().scheme() == "https";
    Cookie::build(REFRESH_COOKIE, value)
        .path(REFRESH_COOKIE_PATH)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .finish()
}

/// The refresh token the browser's cookie holds, in cookie mode.
fn cookie_token(req: &HttpRequest) -> Option<String> {
    if !cookie_mode(req) {
        return None;
    }
    req.cookie(REFRESH_COOKIE).map(|c| c.value().to_owned())
}

/// A token pair as the answer: in the body, or in cookie mode the refresh token as the
/// HttpOnly cookie and only the access token in the body.
fn token_reply(req: &HttpRequest, tokens: TokenPair) -> HttpResponse {
    let mut body = TokenResponse::from(tokens);
    let mut response = HttpResponse::Ok();
    if cookie_mode(req) {
        let max_age = req
            .app_data::<web::Data<RefreshCookie>>()
            .map_or(30 * 86_400, |c| c.max_age_secs);
        if let Some(token) = body.refresh_token.take() {
            response.cookie(refresh_cookie(req, token, max_age));
        }
        response.insert_header((header::CACHE_CONTROL, "no-store"));
    }
    response.json(body)
}

fn parse_credentials(username: String, password: String) -> Result<(Username, Password), ApiError> {
    Ok((Username::parse(username)?, Password::parse(password)?))
}

#[utoipa::path(post, path = "/api/v1/users", summary = "Register an account", tag = "auth", request_body = Registration, responses((status = 201, description = "The new account (under the `approval` policy: `pending` until an admin approves it)", body = UserResponse), (status = 403, description = "`registration_closed`, or `invite_required` (no valid invite code under the `invite` policy)", body = crate::error::ErrorBody), (status = 409, description = "The name is taken", body = crate::error::ErrorBody)))]
async fn register<A: AuthUseCase>(
    req: HttpRequest,
    auth: web::Data<A>,
    limits: web::Data<AuthRateLimits>,
    body: web::Json<Registration>,
) -> Result<HttpResponse, ApiError> {
    limits.register.check(client_ip(&req)).await?;
    let body = body.into_inner();
    let (username, password) = parse_credentials(body.username, body.password)?;
    let invite = body.invite_code.filter(|c| !c.is_empty() && c.len() <= 256);
    let user = auth.register(username, password, invite).await?;
    Ok(HttpResponse::Created().json(UserResponse::from(&user)))
}

/// JSON `{username, password}` or the OAuth2 password form.
#[utoipa::path(post, path = "/api/v1/auth/login", summary = "Log in: an access and a refresh token", tag = "auth", request_body = Credentials, responses((status = 200, description = "An access and a refresh token", body = TokenResponse), (status = 403, description = "`account_pending`: the password is right but an admin has not approved the account yet", body = crate::error::ErrorBody)))]
async fn login<A: AuthUseCase>(
    req: HttpRequest,
    auth: web::Data<A>,
    limits: web::Data<AuthRateLimits>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (username, password) = if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: FormCredentials =
            serde_urlencoded::from_bytes(&body).map_err(|e| ApiError::Validation {
                message: e.to_string(),
                field: None,
            })?;
        if form.grant_type.as_deref().is_some_and(|g| g != "password") {
            return Err(ApiError::Validation {
                message: "grant_type must be \"password\"".into(),
                field: Some("grant_type".into()),
            });
        }
        (form.username, form.password)
    } else if content_type.starts_with("application/json") {
        let json: Credentials = crate::error::json_body(&body)?;
        (json.username, json.password)
    } else {
        return Err(ApiError::UnsupportedMediaType);
    };
    // Checked before parsing, so a flood of malformed names is limited too.
    let key = format!(
        "{}|{}",
        client_ip(&req),
        username
            .chars()
            .take(limits::USERNAME_MAX + 1)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    limits.login.check(key).await?;
    // Names and passwords that break the rules cannot belong to anyone: same 401 as a
    // wrong password, so the rules do not leak which accounts exist.
    let Ok((username, password)) = parse_credentials(username, password) else {
        return Err(ApiError::Unauthenticated("incorrect username or password"));
    };
    let tokens = auth.login(username, password).await?;
    Ok(token_reply(&req, tokens))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    /// Required unless the request is in cookie mode (`X-Arbor-Refresh-Cookie: 1`), where
    /// the `arbor_refresh` cookie carries it.
    #[serde(default)]
    refresh_token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", summary = "Exchange a refresh token for a new token pair", tag = "auth", request_body = RefreshRequest, responses((status = 200, description = "A new token pair (the old refresh token is spent)", body = TokenResponse)))]
async fn refresh<A: AuthUseCase>(
    req: HttpRequest,
    auth: web::Data<A>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: RefreshRequest = crate::error::optional_json(&body)?;
    let token = body
        .refresh_token
        .or_else(|| cookie_token(&req))
        .unwrap_or_default();
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::Unauthenticated("invalid or expired credentials"));
    }
    let tokens = auth.refresh(&token).await?;
    Ok(token_reply(&req, tokens))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Revokes the given refresh token (in cookie mode: the
/// cookie's, and the cookie is removed), or all with `{"all": true}`.
#[utoipa::path(post, path = "/api/v1/auth/logout", summary = "Log out: revoke a refresh token, or all of them", tag = "auth", request_body = LogoutRequest, responses((status = 204, description = "Signed out")), security(("bearer" = [])))]
async fn logout<A: AuthUseCase>(
    req: HttpRequest,
    auth: web::Data<A>,
    caller: CurrentUser<A>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mut body: LogoutRequest = crate::error::optional_json(&body)?;
    if body.refresh_token.is_none() {
        body.refresh_token = cookie_token(&req);
    }
    if !body.all && body.refresh_token.is_none() {
        return Err(ApiError::Validation {
            message: "give refresh_token, or all: true".into(),
            field: Some("refresh_token".into()),
        });
    }
    auth.logout(caller.id(), body.refresh_token.as_deref(), body.all)
        .await?;
    let mut response = HttpResponse::NoContent();
    if cookie_mode(&req) {
        response.cookie(refresh_cookie(&req, String::new(), 0));
    }
    Ok(response.finish())
}

#[utoipa::path(get, path = "/api/v1/auth/me", summary = "Who am I: the authenticated account", tag = "auth", responses((status = 200, description = "The caller", body = UserResponse)), security(("bearer" = [])))]
async fn me<A: AuthUseCase>(caller: CurrentUser<A>) -> HttpResponse {
    HttpResponse::Ok().json(UserResponse::from(&caller.user))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Days the key stays valid (1–3650); without it, until revoked.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
    /// Reads (`GET`, `HEAD`) only: anything else answers 403 `read_only_key`.
    #[serde(default)]
    read_only: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ApiKeyResponse {
    id: String,
    name: String,
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
    /// Refused from then on (`null`: until revoked).
    expires_at: Option<String>,
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl ApiKeyResponse {
    fn new(r: ApiKeyRecord, key: Option<String>) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at.to_string(),
            last_used_at: r.last_used_at.map(|t| t.to_string()),
            expires_at: r.expires_at.map(|t| t.to_string()),
            read_only: r.read_only,
            key,
        }
    }
}

/// The full key is in this response only.
#[utoipa::path(post, path = "/api/v1/auth/api-keys", summary = "Create an API key (shown once)", tag = "auth", request_body = NewApiKey, responses((status = 201, description = "The key (its secret is shown once)", body = ApiKeyResponse), (status = 409, description = "The account already holds 100 unrevoked keys", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn create_api_key<A: AuthUseCase>(
    auth: web::Data<A>,
    caller: CurrentUser<A>,
    body: web::Json<NewApiKey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = body.name;
    if body
        .expires_in_days
        .is_some_and(|d| !(1..=3_650).contains(&d))
    {
        return Err(ApiError::Validation {
            message: "between 1 and 3650 days".into(),
            field: Some("expires_in_days".into()),
        });
    }
    let len = name.chars().count();
    if name.trim().is_empty()
        || len > limits::API_KEY_NAME_MAX
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::Validation {
            message: format!(
                "name must be 1–{} printable characters",
                limits::API_KEY_NAME_MAX
            ),
            field: Some("name".into()),
        });
    }
    let options = usecase::auth::ApiKeyOptions {
        valid_days: body.expires_in_days,
        read_only: body.read_only,
    };
    let issued = auth.create_api_key(caller.id(), name, options).await?;
    Ok(HttpResponse::Created().json(ApiKeyResponse::new(issued.record, Some(issued.key))))
}

#[utoipa::path(get, path = "/api/v1/auth/api-keys", summary = "List your API keys (never their secrets)", tag = "auth", responses((status = 200, description = "The caller's keys (no secrets)", body = Vec<ApiKeyResponse>)), security(("bearer" = [])))]
async fn list_api_keys<A: AuthUseCase>(
    auth: web::Data<A>,
    caller: CurrentUser<A>,
) -> Result<HttpResponse, ApiError> {
    let keys = auth.list_api_keys(caller.id()).await?;
    Ok(HttpResponse::Ok().json(
        keys.into_iter()
            .map(|k| ApiKeyResponse::new(k, None))
            .collect::<Vec<_>>(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/auth/api-keys/{id}", summary = "Revoke an API key", tag = "auth", params(("id" = uuid::Uuid, Path, description = "The key id")), responses((status = 204, description = "Revoked")), security(("bearer" = [])))]
async fn revoke_api_key<A: AuthUseCase>(
    auth: web::Data<A>,
    caller: CurrentUser<A>,
    Id(id): Id<ApiKeyId>,
) -> Result<HttpResponse, ApiError> {
    auth.revoke_api_key(caller.id(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the account routes (inside the `/api/v1` scope).
pub fn routes<A: AuthUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::post().to(register::<A>))
        .route("/auth/login", web::post().to(login::<A>))
        .route("/auth/refresh", web::post().to(refresh::<A>))
        .route("/auth/logout", web::post().to(logout::<A>))
        .route("/auth/me", web::get().to(me::<A>))
        .route("/auth/api-keys", web::post().to(create_api_key::<A>))
        .route("/auth/api-keys", web::get().to(list_api_keys::<A>))
        .route("/auth/api-keys/{id}", web::delete().to(revoke_api_key::<A>));
}
