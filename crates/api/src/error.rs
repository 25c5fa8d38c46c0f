//! The error envelope. This module is the only place in Arbor that picks HTTP status codes.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use domain::InvalidInput;
use serde::Serialize;
use serde_json::json;
use usecase::auth::AuthError;

use crate::request;

/// Every error body: `{"error_type", "user_message", "retry_available", "detail"?, "request_id"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error_type: &'static str,
    /// A sentence for people (Japanese when `Accept-Language` prefers it).
    pub user_message: String,
    /// Whether repeating the same request later may succeed.
    pub retry_available: bool,
    /// Structured detail (e.g. which field is invalid), never internals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Correlates the response with the server's logs.
    pub request_id: String,
}

/// Every failure a handler can answer with. Each variant's status is in [`ResponseError::status_code`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed (bad JSON syntax, bad encoding).
    #[error("the request is malformed: {0}")]
    Malformed(String),
    /// 422: well-formed but invalid (wrong type, missing field, a broken limit).
    #[error("the request is invalid: {message}")]
    Validation {
        /// What is wrong, in words.
        message: String,
        /// Which field, when known.
        field: Option<String>,
    },
    /// 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// 403: the resource is visible but not the caller's to change.
    #[error("you are not allowed to do this")]
    Forbidden,
    /// 404: no such route or resource (also: a resource of another user).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: conflicts with existing data.
    #[error("{0}")]
    Conflict(&'static str),
    /// 413: the body exceeds the configured limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415: the body's content type is not accepted here.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// 429 with `Retry-After`.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after_secs: u64,
    },
    /// 502: the language model provider failed.
    #[error("the language model provider failed; try again")]
    BadGateway,
    /// 502, not retryable: the provider refused the request (an unknown model upstream,
    /// parameters it does not take); its reason goes in `detail`.
    #[error("the language model provider refused the request")]
    ProviderRejected(String),
    /// 504: the language model provider did not answer in time.
    #[error("the language model provider timed out; try again")]
    GatewayTimeout,
    /// 503 with `Retry-After`: a dependency (the database) is unavailable.
    #[error("the service is temporarily unavailable")]
    Unavailable {
        /// Seconds until a retry makes sense.
        retry_after_secs: u64,
    },
    /// 500: anything unexpected. The cause is logged where it is mapped, never sent.
    #[error("internal error")]
    Internal,
    /// 403 for a stated reason the client can act on.
    #[error("{}", .0.english())]
    Denied(Denial),
    /// 429 with `Retry-After`: the account's usage quota is used up until `resets_at`.
    #[error("your usage quota ({limit}) is used up until {resets_at}")]
    QuotaExceeded {
        /// Which limit.
        limit: &'static str,
        /// When it frees up (RFC 3339).
        resets_at: String,
        /// Seconds until then.
        retry_after_secs: u64,
    },
}

/// Why a request was refused (403 with its own `error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The account waits for an admin's approval.
    AccountPending,
    /// Registration is closed.
    RegistrationClosed,
    /// Registration needs a valid invite code.
    InviteRequired,
    /// The password given to confirm an action is wrong.
    WrongPassword,
    /// A read-only API key was used to change something.
    ReadOnlyKey,
}

impl Denial {
    const fn error_type(self) -> &'static str {
        match self {
            Self::AccountPending => "account_pending",
            Self::RegistrationClosed => "registration_closed",
            Self::InviteRequired => "invite_required",
            Self::WrongPassword => "wrong_password",
            Self::ReadOnlyKey => "read_only_key",
        }
    }

    const fn english(self) -> &'static str {
        match self {
            Self::AccountPending => "this account is waiting for an administrator's approval",
            Self::RegistrationClosed => "registration is closed",
            Self::InviteRequired => "a valid invite code is required to register",
            Self::WrongPassword => "the password is not correct",
            Self::ReadOnlyKey => "this API key is read-only",
        }
    }

    const fn japanese(self) -> &'static str {
        match self {
            Self::AccountPending => "このアカウントは管理者の承認待ちです。",
            Self::RegistrationClosed => "新規登録は受け付けていません。",
            Self::InviteRequired => "登録には有効な招待コードが必要です。",
            Self::WrongPassword => "パスワードが正しくありません。",
            Self::ReadOnlyKey => "このAPIキーは読み取り専用です。",
        }
    }
}

impl ApiError {
    /// The envelope error for a bare status (used for actix's own error responses).
    #[must_use]
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Malformed("bad request".into()),
            401 => Self::Unauthenticated("authentication required"),
            403 => Self::Forbidden,
            404 => Self::NotFound("route"),
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict("conflict"),
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            422 => Self::Validation {
                message: "invalid request".into(),
                field: None,
            },
            429 => Self::RateLimited {
                retry_after_secs: 60,
            },
            503 => Self::Unavailable {
                retry_after_secs: 5,
            },
            _ => Self::Internal,
        }
    }

    pub(crate) const fn error_type(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_request",
            Self::Validation { .. } => "validation_error",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "service_unavailable",
            Self::BadGateway => "provider_error",
            Self::ProviderRejected(_) => "provider_rejected",
            Self::GatewayTimeout => "provider_timeout",
            Self::Internal => "internal_error",
            Self::Denied(why) => why.error_type(),
            Self::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    pub(crate) const fn retry_available(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Unavailable { .. }
                | Self::Internal
                | Self::BadGateway
                | Self::GatewayTimeout
        )
    }

    pub(crate) fn japanese(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "リクエストの形式が正しくありません。",
            Self::Validation { .. } => "入力データが無効です。",
            Self::Unauthenticated("incorrect username or password") => {
                "ユーザー名またはパスワードが正しくありません。"
            }
            Self::Unauthenticated(_) => "認証が必要です。再度ログインしてください。",
            Self::Forbidden => "この操作は許可されていません。",
            Self::NotFound(_) => "見つかりません。",
            Self::MethodNotAllowed => "このメソッドは使用できません。",
            Self::Conflict(_) => "既存のデータと競合しています。",
            Self::PayloadTooLarge => "リクエストが大きすぎます。",
            Self::UnsupportedMediaType => "サポートされていない形式です。",
            Self::RateLimited { .. } => {
                "リクエストが多すぎます。しばらく待ってから再試行してください。"
            }
            Self::Unavailable { .. } => {
                "サービスが一時的に利用できません。しばらく待ってから再試行してください。"
            }
            Self::Internal => {
                "予期しないエラーが発生しました。問題が続く場合はサポートにお問い合わせください。"
            }
            Self::BadGateway => "言語モデルのエラーが発生しました。もう一度お試しください。",
            Self::ProviderRejected(_) => "言語モデルのプロバイダーがリクエストを拒否しました。",
            Self::GatewayTimeout => "処理がタイムアウトしました。もう一度お試しください。",
            Self::Denied(why) => why.japanese(),
            Self::QuotaExceeded { .. } => {
                "利用上限に達しました。上限がリセットされるまでお待ちください。"
            }
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        match self {
            Self::Validation {
                message,
                field: Some(field),
            } => Some(json!({ "field": field, "problem": message })),
            Self::Validation {
                message,
                field: None,
            }
            | Self::Malformed(message) => Some(json!({ "problem": message })),
            Self::QuotaExceeded {
                limit, resets_at, ..
            } => Some(json!({ "limit": limit, "resets_at": resets_at })),
            Self::ProviderRejected(reason) => Some(json!({ "reason": reason })),
            _ => None,
        }
    }

    /// The envelope for this error in the current request's context.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        let ctx = request::current();
        let japanese = ctx.as_ref().is_some_and(|c| c.japanese);
        ErrorBody {
            error_type: self.error_type(),
            user_message: if japanese {
                self.japanese().to_owned()
            } else {
                self.to_string()
            },
            retry_available: self.retry_available(),
            detail: self.detail(),
            request_id: ctx.map_or_else(|| uuid::Uuid::new_v4().to_string(), |c| c.id),
        }
    }
}

/// An error and every cause under it, `outer: inner: …` — a log line must say what really
/// failed (a top-level "storage failure" alone says nothing).
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        // Some errors repeat their source's text in their own.
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

impl ApiError {
    /// Maps a storage failure (logging its cause here, the one place it is mapped).
    #[must_use]
    pub fn from_repo(e: usecase::RepoError) -> Self {
        match e {
            usecase::RepoError::NotFound(entity) => Self::NotFound(match entity {
                usecase::Entity::User => "user",
                usecase::Entity::Chat => "chat",
                usecase::Entity::Message => "message",
                usecase::Entity::Template => "template",
                usecase::Entity::Preset => "preset",
                usecase::Entity::Model => "model",
                usecase::Entity::Invite => "invite",
            }),
            usecase::RepoError::Unavailable(cause) => {
                tracing::warn!(error = %causes(&*cause), "storage unavailable");
                Self::Unavailable {
                    retry_after_secs: 5,
                }
            }
            other => {
                tracing::error!(error = %causes(&other), "storage failure");
                Self::Internal
            }
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::Validation {
            message: e.to_string(),
            field: Some(e.field.to_owned()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::UsernameTaken => Self::Conflict("username is already taken"),
            AuthError::InvalidCredentials => {
                Self::Unauthenticated("incorrect username or password")
            }
            AuthError::Unauthenticated => Self::Unauthenticated("invalid or expired credentials"),
            AuthError::RefreshTokenReused => {
                Self::Unauthenticated("refresh token reuse detected; please log in again")
            }
            AuthError::ApiKeyNotFound => Self::NotFound("API key"),
            AuthError::UnknownUser => Self::NotFound("user"),
            AuthError::Forbidden => Self::Forbidden,
            AuthError::SelfAdministration => Self::Conflict(
                "administrators cannot change their own role or state, or delete themselves, here",
            ),
            AuthError::AccountPending => Self::Denied(Denial::AccountPending),
            AuthError::RegistrationClosed => Self::Denied(Denial::RegistrationClosed),
            AuthError::InviteRequired => Self::Denied(Denial::InviteRequired),
            AuthError::WrongPassword => Self::Denied(Denial::WrongPassword),
            AuthError::SessionNotFound => Self::NotFound("session"),
            AuthError::ReadOnlyKey => Self::Denied(Denial::ReadOnlyKey),
            AuthError::TooManyApiKeys => {
                Self::Conflict("at most 100 API keys per account: revoke one first")
            }
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %causes(&cause), "storage unavailable");
                Self::Unavailable {
                    retry_after_secs: 5,
                }
            }
            AuthError::Internal(cause) => {
                tracing::error!(error = %causes(&*cause), "auth failure");
                Self::Internal
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway | Self::ProviderRejected(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable { retry_after_secs }
            | Self::RateLimited { retry_after_secs }
            | Self::QuotaExceeded {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, *retry_after_secs));
            }
            Self::Unauthenticated(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            // Sending the same request again cannot help: clients that retry every 5xx (the
            // OpenAI SDKs among them) honour this header.
            Self::ProviderRejected(_) => {
                response.insert_header((SHOULD_RETRY, "false"));
            }
            _ => {}
        }
        response.json(self.body())
    }
}

/// The response header that tells a client whether to send a failed request again.
pub const SHOULD_RETRY: &str = "x-should-retry";

/// Error handler for `web::Json`: syntax → 400, wrong shape → 422, size → 413, type → 415.
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge,
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Deserialize(e) if e.is_data() => ApiError::Validation {
            message: e.to_string(),
            field: None,
        },
        E::Deserialize(e) => ApiError::Malformed(e.to_string()),
        E::Payload(actix_web::error::PayloadError::Overflow) => ApiError::PayloadTooLarge,
        other => ApiError::Malformed(other.to_string()),
    }
    .into()
}

/// Reads an optional JSON body: empty → `T::default()`; otherwise it must parse (400 for
/// bad syntax, 422 for the wrong shape). `Option<web::Json<T>>` would silently drop errors.
///
/// # Errors
/// [`ApiError::Malformed`] or [`ApiError::Validation`].
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(body)
}

/// Parses a JSON body: 400 for bad syntax, 422 for the wrong shape.
///
/// # Errors
/// [`ApiError::Malformed`] or [`ApiError::Validation`].
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Validation {
                message: e.to_string(),
                field: None,
            }
        } else {
            ApiError::Malformed(e.to_string())
        }
    })
}

/// Error handler for `web::Query`: 422.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Validation {
        message: err.to_string(),
        field: None,
    }
    .into()
}

/// Error handler for `web::Path`: 422 (e.g. a malformed UUID).
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::Validation {
        message: err.to_string(),
        field: Some("path".to_owned()),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Driver;

    impl std::fmt::Display for Driver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("no such table: chats")
        }
    }

    impl std::error::Error for Driver {}

    #[test]
    fn a_logged_failure_carries_every_cause() {
        let e = usecase::RepoError::Unexpected(Box::new(Driver));
        assert_eq!(causes(&e), "storage failure: no such table: chats");
        let top = AuthError::Internal(Box::new(e));
        assert_eq!(
            causes(&top),
            "internal failure: storage failure: no such table: chats"
        );
    }

    #[test]
    fn a_wrong_password_is_named_as_such_in_japanese_too() {
        let wrong = ApiError::from(AuthError::InvalidCredentials);
        assert_eq!(wrong.to_string(), "incorrect username or password");
        assert_eq!(
            wrong.japanese(),
            "ユーザー名またはパスワードが正しくありません。"
        );
        assert_eq!(
            ApiError::Unauthenticated("invalid or expired credentials").japanese(),
            "認証が必要です。再度ログインしてください。"
        );
    }
}
