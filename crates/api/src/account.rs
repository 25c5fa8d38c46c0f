//! Self-service for the caller's own account: password, sessions, deletion, and an export
//! of everything it owns.

use actix_web::{HttpResponse, web};
use domain::{PageRequest, Password, TokenId};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::auth::account::{AccountUseCase, Session};
use usecase::catalog::CatalogUseCase;
use usecase::chat::ChatUseCase;
use usecase::ports::{ChatQuery, PresetQuery, TemplateQuery};
use usecase::preset::PresetUseCase;
use usecase::template::TemplateUseCase;

use crate::auth::{CurrentUser, TokenResponse, UserResponse};
use crate::chats::{TreeResponse, tree_response};
use crate::error::ApiError;
use crate::path::Id;
use crate::presets::PresetResponse;
use crate::templates::TemplateResponse;

/// The most chats one export holds (newest first); `truncated` says when there were more.
pub const EXPORT_CHATS_MAX: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[utoipa::path(post, path = "/api/v1/users/me/password", summary = "Change your password (every session ends)", tag = "auth", request_body = PasswordChange, responses((status = 200, description = "Changed; every session ended, and these are the caller's new tokens", body = TokenResponse), (status = 403, description = "`wrong_password`", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn change_password<A: AuthUseCase + AccountUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let current = Password::parse(body.current_password)?;
    let new = Password::parse(body.new_password)?;
    let pair = auth.change_password(&caller.user, current, new).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(pair)))
}

/// A signed-in session (a login and its refreshes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionResponse {
    uuid: String,
    started_at: String,
    last_refreshed_at: String,
    expires_at: String,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            uuid: s.id.to_string(),
            started_at: s.started_at.to_string(),
            last_refreshed_at: s.last_refreshed_at.to_string(),
            expires_at: s.expires_at.to_string(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", summary = "List your sessions (refresh-token families)", tag = "auth", responses((status = 200, description = "The caller's sessions with a live refresh token, most recently refreshed first", body = Vec<SessionResponse>)), security(("bearer" = [])))]
async fn sessions<A: AuthUseCase + AccountUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
) -> Result<HttpResponse, ApiError> {
    let sessions = auth.sessions(caller.id()).await?;
    Ok(HttpResponse::Ok().json(
        sessions
            .into_iter()
            .map(SessionResponse::from)
            .collect::<Vec<_>>(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", summary = "End one of your sessions", tag = "auth", params(("id" = uuid::Uuid, Path, description = "The session uuid")), responses((status = 204, description = "Its refresh token no longer works")), security(("bearer" = [])))]
async fn revoke_session<A: AuthUseCase + AccountUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    Id(session): Id<TokenId>,
) -> Result<HttpResponse, ApiError> {
    auth.revoke_session(caller.id(), session).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    password: String,
}

#[utoipa::path(delete, path = "/api/v1/users/me", summary = "Delete your account and all its data", tag = "auth", request_body = Confirmation, responses((status = 204, description = "The account and everything it owned are gone"), (status = 403, description = "`wrong_password`", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn delete_me<A: AuthUseCase + AccountUseCase>(
    caller: CurrentUser<A>,
    auth: web::Data<A>,
    body: web::Json<Confirmation>,
) -> Result<HttpResponse, ApiError> {
    let password = Password::parse(body.into_inner().password)?;
    auth.delete_own_account(&caller.user, password).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Everything the caller owns.
#[derive(Serialize, utoipa::ToSchema)]
struct ExportResponse {
    exported_at: String,
    user: UserResponse,
    /// The caller's default model.
    default_model_id: Option<String>,
    /// Every chat with its whole tree, newest first.
    chats: Vec<TreeResponse>,
    /// More chats existed than an export holds.
    truncated: bool,
    /// The caller's own templates.
    templates: Vec<TemplateResponse>,
    presets: Vec<PresetResponse>,
}

#[utoipa::path(get, path = "/api/v1/users/me/export", operation_id = "export_my_data", summary = "Download all your data", tag = "auth", responses((status = 200, description = "A JSON download of everything the caller owns", body = ExportResponse)), security(("bearer" = [])))]
async fn export<A, S, T, P, M>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    templates: web::Data<T>,
    presets: web::Data<P>,
    catalog: web::Data<M>,
) -> Result<HttpResponse, ApiError>
where
    A: AuthUseCase,
    S: ChatUseCase,
    T: TemplateUseCase,
    P: PresetUseCase,
    M: CatalogUseCase,
{
    let owner = caller.id();
    let page = |n: u32| PageRequest::new(Some(n), Some(domain::limits::PAGE_SIZE_MAX));
    let mut trees = Vec::new();
    let mut after = None;
    let truncated = loop {
        let list = chats
            .list_chats(
                owner,
                ChatQuery {
                    page: page(1)?,
                    after: after.take(),
                    without_total: true,
                    ..ChatQuery::default()
                },
            )
            .await?;
        for summary in list.items {
            if trees.len() == EXPORT_CHATS_MAX {
                break;
            }
            let t = chats.tree(owner, summary.chat.id).await?;
            trees.push(tree_response(&t));
        }
        match list.next {
            Some(next) if trees.len() < EXPORT_CHATS_MAX => after = Some(next),
            Some(_) => break true,
            None => break false,
        }
    };
    let mut own_templates = Vec::new();
    for n in 1..=domain::limits::PAGE_MAX {
        let got = templates
            .list(
                owner,
                TemplateQuery {
                    mine_only: true,
                    page: page(n)?,
                    ..TemplateQuery::default()
                },
            )
            .await
            .map_err(ApiError::from)?;
        let done =
            got.items.is_empty() || own_templates.len() + got.items.len() >= got.total as usize;
        own_templates.extend(got.items.into_iter().map(TemplateResponse::from));
        if done {
            break;
        }
    }
    let mut own_presets = Vec::new();
    for n in 1..=domain::limits::PAGE_MAX {
        let got = presets
            .list(
                owner,
                PresetQuery {
                    page: page(n)?,
                    ..PresetQuery::default()
                },
            )
            .await
            .map_err(ApiError::from)?;
        let done =
            got.items.is_empty() || own_presets.len() + got.items.len() >= got.total as usize;
        own_presets.extend(got.items.into_iter().map(PresetResponse::from));
        if done {
            break;
        }
    }
    let settings = catalog
        .settings(owner)
        .await
        .map_err(crate::models::catalog_error)?;
    let body = ExportResponse {
        exported_at: now_rfc3339(),
        user: UserResponse::from(&caller.user),
        default_model_id: settings.default_model_id.map(|m| m.as_str().to_owned()),
        chats: trees,
        truncated,
        templates: own_templates,
        presets: own_presets,
    };
    Ok(HttpResponse::Ok()
        .insert_header((
            "content-disposition",
            "attachment; filename=\"arbor-export.json\"",
        ))
        .json(body))
}

fn now_rfc3339() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    domain::Timestamp::from_unix_micros(micros).to_string()
}

/// Registers the self-service routes.
pub fn routes<A, S, T, P, M>(cfg: &mut web::ServiceConfig)
where
    A: AuthUseCase + AccountUseCase,
    S: ChatUseCase,
    T: TemplateUseCase,
    P: PresetUseCase,
    M: CatalogUseCase,
{
    cfg.route("/users/me/password", web::post().to(change_password::<A>))
        .route("/users/me", web::delete().to(delete_me::<A>))
        .route("/users/me/export", web::get().to(export::<A, S, T, P, M>))
        .route("/auth/sessions", web::get().to(sessions::<A>))
        .route("/auth/sessions/{id}", web::delete().to(revoke_session::<A>));
}
