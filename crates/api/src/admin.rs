//! `/api/v1/admin/…`: administration for accounts with the `admin` role. Anonymous callers get
//! 401 and other accounts 403 (the routes' existence is public; what they do is not). Every
//! action lands in the audit log (`GET /admin/audit`). Also `GET /users/me/usage`: the caller's
//! quota limits and usage.

use actix_web::{HttpResponse, web};
use domain::{AccountRole, PageRequest, Password, QuotaOverrides, RegistrationPolicy, Usd, UserId};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::auth::admin::{AccountUpdate, AdminUseCase, AuditEntry, Invite, UserOverview};
use usecase::chat::{ChatUseCase, QuotaUsage};

use crate::PageResponse;
use crate::auth::{CurrentUser, UserResponse};
use crate::error::ApiError;
use crate::path::Id;

/// The caller, who must be an admin (401 without credentials, 403 without the role).
fn admin<A: AuthUseCase>(caller: CurrentUser<A>) -> Result<domain::User, ApiError> {
    if caller.user.role == AccountRole::Admin {
        Ok(caller.user)
    } else {
        Err(ApiError::Forbidden)
    }
}

fn usd(raw: Option<&str>, field: &'static str) -> Result<Option<Usd>, ApiError> {
    raw.map(|r| {
        Usd::parse_decimal(r)
            .ok()
            .filter(|u| u.as_pico() >= 0)
            .ok_or_else(|| ApiError::Validation {
                message: "a non-negative decimal amount of USD".into(),
                field: Some(field.into()),
            })
    })
    .transpose()
}

/// Usage in one period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PeriodResponse {
    cost_usd: String,
    tokens: u64,
}

impl From<domain::PeriodUsage> for PeriodResponse {
    fn from(u: domain::PeriodUsage) -> Self {
        Self {
            cost_usd: u.cost.to_string(),
            tokens: u.tokens,
        }
    }
}

/// An account as an admin sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AdminUserResponse {
    #[serde(flatten)]
    #[schema(inline)]
    user: UserResponse,
    disabled: bool,
    /// The account's own limits (`null`: the server's default; "0"/0: no limit).
    quota: QuotaBody,
    /// Usage since the start of the UTC month.
    this_month: PeriodResponse,
}

impl From<UserOverview> for AdminUserResponse {
    fn from(o: UserOverview) -> Self {
        Self {
            user: UserResponse::from(&o.user),
            disabled: o.user.disabled,
            quota: QuotaBody::from(o.user.quota),
            this_month: o.this_month.into(),
        }
    }
}

/// Quota limits of an account's own; `null` takes the server's default, "0"/0 is no limit.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    daily_usd: Option<String>,
    monthly_usd: Option<String>,
    daily_tokens: Option<u64>,
    monthly_tokens: Option<u64>,
}

impl From<QuotaOverrides> for QuotaBody {
    fn from(q: QuotaOverrides) -> Self {
        Self {
            daily_usd: q.daily_cost.map(|c| c.to_string()),
            monthly_usd: q.monthly_cost.map(|c| c.to_string()),
            daily_tokens: q.daily_tokens,
            monthly_tokens: q.monthly_tokens,
        }
    }
}

/// A page of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct PaginationQuery {
    page: Option<u32>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct SearchQuery {
    /// Part of the name (case-insensitive).
    q: Option<String>,
    page: Option<u32>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/admin/users", summary = "List and search accounts with their usage (admin)", tag = "admin", params(SearchQuery), responses((status = 200, description = "Accounts, oldest first, with this month's usage", body = PageResponse<AdminUserResponse>), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn list_users<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let query = query.into_inner();
    let page = PageRequest::new(query.page, query.limit)?;
    let needle = query
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty() && q.len() <= 64);
    let users = auth.search_users(&actor, needle, page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::new(users, AdminUserResponse::from)))
}

/// An admin's change to an account.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    /// Disable (sessions end at once) or enable.
    disabled: Option<bool>,
    /// `user` or `admin`.
    role: Option<String>,
    /// `true` approves a pending account.
    #[serde(default)]
    approve: bool,
}

fn admin_view(user: domain::User) -> AdminUserResponse {
    AdminUserResponse::from(UserOverview {
        user,
        this_month: domain::PeriodUsage::default(),
    })
}

#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", summary = "Disable, enable, approve or change the role of an account (admin)", tag = "admin", params(("id" = uuid::Uuid, Path, description = "The account uuid")), request_body = PatchUser, responses((status = 200, description = "The account (its usage is not recomputed: 0)", body = AdminUserResponse), (status = 403, description = "Not an admin", body = crate::error::ErrorBody), (status = 409, description = "An admin's own role or state", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn patch_user<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    Id(target): Id<UserId>,
    body: web::Json<PatchUser>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let body = body.into_inner();
    let role = body
        .role
        .map(|r| {
            r.parse::<AccountRole>().map_err(|_| ApiError::Validation {
                message: "must be user or admin".into(),
                field: Some("role".into()),
            })
        })
        .transpose()?;
    let update = AccountUpdate {
        disabled: body.disabled,
        role,
        approve: body.approve,
    };
    let user = auth.update_account(&actor, target, update).await?;
    Ok(HttpResponse::Ok().json(admin_view(user)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/password", summary = "Set an account's password and end its sessions (admin)", tag = "admin", params(("id" = uuid::Uuid, Path, description = "The account uuid")), request_body = NewPassword, responses((status = 204, description = "Set; every session of the account ended"), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn reset_password<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    Id(target): Id<UserId>,
    body: web::Json<NewPassword>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let password = Password::parse(body.into_inner().password)?;
    auth.reset_password(&actor, target, password).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/api/v1/admin/users/{id}/quota", summary = "Set an account's quota overrides (admin)", tag = "admin", params(("id" = uuid::Uuid, Path, description = "The account uuid")), request_body = QuotaBody, responses((status = 200, description = "The account with its new limits", body = AdminUserResponse), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn put_quota<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    Id(target): Id<UserId>,
    body: web::Json<QuotaBody>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let body = body.into_inner();
    let quota = QuotaOverrides {
        daily_cost: usd(body.daily_usd.as_deref(), "daily_usd")?,
        monthly_cost: usd(body.monthly_usd.as_deref(), "monthly_usd")?,
        daily_tokens: body.daily_tokens,
        monthly_tokens: body.monthly_tokens,
    };
    let user = auth.set_quota(&actor, target, quota).await?;
    Ok(HttpResponse::Ok().json(admin_view(user)))
}

#[utoipa::path(delete, path = "/api/v1/admin/users/{id}", summary = "Delete an account and all its data (admin)", tag = "admin", params(("id" = uuid::Uuid, Path, description = "The account uuid")), responses((status = 204, description = "The account and everything it owned are gone"), (status = 403, description = "Not an admin", body = crate::error::ErrorBody), (status = 409, description = "An admin's own account", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn delete_user<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    Id(target): Id<UserId>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    auth.delete_account(&actor, target).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditResponse {
    uuid: String,
    /// `null`: the command line, or a deleted account.
    actor_uuid: Option<String>,
    actor_name: String,
    action: String,
    target_uuid: Option<String>,
    target_name: Option<String>,
    detail: String,
    created_at: String,
}

impl From<AuditEntry> for AuditResponse {
    fn from(e: AuditEntry) -> Self {
        Self {
            uuid: uuid::Uuid::from_u128(e.id).to_string(),
            actor_uuid: e.actor.map(|a| a.to_string()),
            actor_name: e.actor_name,
            action: e.action,
            target_uuid: e.target.map(|t| t.to_string()),
            target_name: e.target_name,
            detail: e.detail,
            created_at: e.at.to_string(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/admin/audit", summary = "Read the audit log (admin)", tag = "admin", params(PaginationQuery), responses((status = 200, description = "The audit log, newest first", body = PageResponse<AuditResponse>), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn audit<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    query: web::Query<PaginationQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let page = PageRequest::new(query.page, query.limit)?;
    let entries = auth.audit_log(&actor, page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::new(entries, AuditResponse::from)))
}

/// The registration policy.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// `open`, `approval`, `invite` or `closed`.
    policy: String,
}

#[utoipa::path(get, path = "/api/v1/admin/registration", summary = "Show the registration policy (admin)", tag = "admin", responses((status = 200, description = "The policy in force", body = PolicyBody), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn get_policy<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
) -> Result<HttpResponse, ApiError> {
    admin(caller)?;
    let policy = auth.registration_policy().await?;
    Ok(HttpResponse::Ok().json(PolicyBody {
        policy: policy.as_str().to_owned(),
    }))
}

#[utoipa::path(put, path = "/api/v1/admin/registration", summary = "Change the registration policy (admin)", tag = "admin", request_body = PolicyBody, responses((status = 200, description = "The policy now in force (on every replica)", body = PolicyBody), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn put_policy<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    body: web::Json<PolicyBody>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let policy: RegistrationPolicy = body.policy.parse().map_err(|_| ApiError::Validation {
        message: "must be open, approval, invite or closed".into(),
        field: Some("policy".into()),
    })?;
    auth.set_registration_policy(&actor, policy).await?;
    Ok(HttpResponse::Ok().json(PolicyBody {
        policy: policy.as_str().to_owned(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInvite {
    /// Hours it stays valid (1–2160; default 72).
    expires_in_hours: Option<u32>,
}

/// An invite; `code` only in the answer that made it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct InviteResponse {
    uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    created_at: String,
    expires_at: String,
    used_at: Option<String>,
    used_by: Option<String>,
}

fn invite_response(invite: Invite, code: Option<String>) -> InviteResponse {
    InviteResponse {
        uuid: uuid::Uuid::from_u128(invite.id).to_string(),
        code,
        created_at: invite.created_at.to_string(),
        expires_at: invite.expires_at.to_string(),
        used_at: invite.used.map(|(at, _)| at.to_string()),
        used_by: invite.used.and_then(|(_, by)| by).map(|by| by.to_string()),
    }
}

#[utoipa::path(post, path = "/api/v1/admin/invites", summary = "Create a single-use invite code (admin)", tag = "admin", request_body = NewInvite, responses((status = 201, description = "The invite, with its code (shown once)", body = InviteResponse), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn create_invite<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    body: web::Json<NewInvite>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let hours = body.expires_in_hours.unwrap_or(72);
    if !(1..=usecase::auth::admin::INVITE_TTL_MAX_HOURS).contains(&hours) {
        return Err(ApiError::Validation {
            message: format!(
                "between 1 and {} hours",
                usecase::auth::admin::INVITE_TTL_MAX_HOURS
            ),
            field: Some("expires_in_hours".into()),
        });
    }
    let issued = auth.create_invite(&actor, hours).await?;
    Ok(HttpResponse::Created().json(invite_response(issued.invite, Some(issued.code))))
}

#[utoipa::path(get, path = "/api/v1/admin/invites", summary = "List invite codes (admin)", tag = "admin", params(PaginationQuery), responses((status = 200, description = "Invites, newest first (no codes)", body = PageResponse<InviteResponse>), (status = 403, description = "Not an admin", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn list_invites<A: AuthUseCase + AdminUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    query: web::Query<PaginationQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin(caller)?;
    let page = PageRequest::new(query.page, query.limit)?;
    let invites = auth.list_invites(&actor, page).await?;
    Ok(HttpResponse::Ok().json(PageResponse::new(invites, |i| invite_response(i, None))))
}

/// A limit and what was used against it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct QuotaPeriod {
    /// Spent so far.
    cost_usd: String,
    /// Tokens so far.
    tokens: u64,
    /// The cost limit ("0": none).
    limit_usd: String,
    /// The token limit (0: none).
    limit_tokens: u64,
    /// When the period ends (and its usage starts again from 0).
    resets_at: String,
}

/// The caller's quota limits and usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct QuotaUsageResponse {
    day: QuotaPeriod,
    month: QuotaPeriod,
    /// Whether a new generation would be refused now.
    exceeded: bool,
}

impl From<QuotaUsage> for QuotaUsageResponse {
    fn from(q: QuotaUsage) -> Self {
        Self {
            exceeded: q.exceeded().is_some(),
            day: QuotaPeriod {
                cost_usd: q.today.cost.to_string(),
                tokens: q.today.tokens,
                limit_usd: q.limits.daily_cost.to_string(),
                limit_tokens: q.limits.daily_tokens,
                resets_at: q.day_ends.to_string(),
            },
            month: QuotaPeriod {
                cost_usd: q.this_month.cost.to_string(),
                tokens: q.this_month.tokens,
                limit_usd: q.limits.monthly_cost.to_string(),
                limit_tokens: q.limits.monthly_tokens,
                resets_at: q.month_ends.to_string(),
            },
        }
    }
}

#[utoipa::path(get, path = "/api/v1/users/me/usage", summary = "Your quota and usage today and this month", tag = "auth", responses((status = 200, description = "The caller's quota limits and usage in the current UTC day and month", body = QuotaUsageResponse)), security(("bearer" = [])))]
async fn my_usage<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
) -> Result<HttpResponse, ApiError> {
    let usage = chats.quota_usage(caller.id()).await?;
    Ok(HttpResponse::Ok().json(QuotaUsageResponse::from(usage)))
}

/// Registers the admin routes and `/users/me/usage`.
pub fn routes<A: AuthUseCase + AdminUseCase, S: ChatUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/users", web::get().to(list_users::<A>))
        .route("/admin/users/{id}", web::patch().to(patch_user::<A>))
        .route("/admin/users/{id}", web::delete().to(delete_user::<A>))
        .route(
            "/admin/users/{id}/password",
            web::post().to(reset_password::<A>),
        )
        .route("/admin/users/{id}/quota", web::put().to(put_quota::<A>))
        .route("/admin/audit", web::get().to(audit::<A>))
        .route("/admin/registration", web::get().to(get_policy::<A>))
        .route("/admin/registration", web::put().to(put_policy::<A>))
        .route("/admin/invites", web::post().to(create_invite::<A>))
        .route("/admin/invites", web::get().to(list_invites::<A>))
        .route("/users/me/usage", web::get().to(my_usage::<A, S>));
}
