//! Preset routes (owner-only).

use actix_web::{HttpResponse, web};
use domain::{
    ModelId, PageRequest, Preset, PresetDescription, PresetId, PresetName, SearchQuery,
    SystemPrompt, Temperature,
};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::ports::PresetQuery;
use usecase::preset::{PresetError, PresetInput, PresetUseCase};

use crate::PageResponse;
use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::path::Id;

impl From<PresetError> for ApiError {
    fn from(e: PresetError) -> Self {
        match e {
            PresetError::NotFound => Self::NotFound("preset"),
            PresetError::UnknownModel(id) => Self::Validation {
                message: format!("model {id} is not in the catalogue"),
                field: Some("model_id".into()),
            },
            PresetError::Invalid(e) => e.into(),
            PresetError::Catalog(cause) => {
                tracing::warn!(error = %crate::error::causes(&cause), "catalogue unavailable");
                Self::Unavailable {
                    retry_after_secs: 30,
                }
            }
            PresetError::Storage(cause) => Self::from_repo(cause),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PresetRequest {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(max_length = 500)]
    description: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<String>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f64>,
    #[schema(minimum = 1, maximum = 1000000)]
    max_tokens: Option<i64>,
    #[schema(max_length = 8000)]
    system_prompt: Option<String>,
    #[serde(default)]
    is_favorite: bool,
}

impl PresetRequest {
    fn into_input(self) -> Result<PresetInput, ApiError> {
        Ok(PresetInput {
            name: PresetName::parse(self.name)?,
            description: self.description.map(PresetDescription::parse).transpose()?,
            model_id: self.model_id.map(ModelId::parse).transpose()?,
            temperature: self.temperature.map(Temperature::new).transpose()?,
            max_tokens: self.max_tokens,
            system_prompt: self.system_prompt.map(SystemPrompt::parse).transpose()?,
            is_favorite: self.is_favorite,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PresetResponse {
    uuid: String,
    name: String,
    description: Option<String>,
    model_id: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    system_prompt: Option<String>,
    is_favorite: bool,
    usage_count: u64,
    created_at: String,
    updated_at: String,
}

impl From<Preset> for PresetResponse {
    fn from(p: Preset) -> Self {
        Self {
            uuid: p.id.to_string(),
            name: p.name.into_inner(),
            description: p.description.map(PresetDescription::into_inner),
            model_id: p.model_id.map(|m| m.as_str().to_owned()),
            temperature: p.temperature.map(Temperature::value),
            max_tokens: p.max_tokens.map(domain::MaxTokens::value),
            system_prompt: p.system_prompt.map(SystemPrompt::into_inner),
            is_favorite: p.is_favorite,
            usage_count: p.usage_count,
            created_at: p.created_at.to_string(),
            updated_at: p.updated_at.to_string(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/presets", operation_id = "create_preset", summary = "Create a preset", tag = "presets", request_body = PresetRequest, responses((status = 201, description = "The preset", body = PresetResponse)), security(("bearer" = [])))]
async fn create<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    body: web::Json<PresetRequest>,
) -> Result<HttpResponse, ApiError> {
    let preset = presets
        .create(caller.id(), body.into_inner().into_input()?)
        .await?;
    Ok(HttpResponse::Created().json(PresetResponse::from(preset)))
}

#[utoipa::path(get, path = "/api/v1/presets/{id}", operation_id = "get_preset", summary = "One of your presets", tag = "presets", params(("id" = uuid::Uuid, Path, description = "The preset uuid")), responses((status = 200, description = "The preset", body = PresetResponse)), security(("bearer" = [])))]
async fn get<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    Id(id): Id<PresetId>,
) -> Result<HttpResponse, ApiError> {
    let preset = presets.get(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(PresetResponse::from(preset)))
}

#[utoipa::path(put, path = "/api/v1/presets/{id}", operation_id = "update_preset", summary = "Change a preset", tag = "presets", params(("id" = uuid::Uuid, Path, description = "The preset uuid")), request_body = PresetRequest, responses((status = 200, description = "The replaced preset", body = PresetResponse)), security(("bearer" = [])))]
async fn update<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    Id(id): Id<PresetId>,
    body: web::Json<PresetRequest>,
) -> Result<HttpResponse, ApiError> {
    let preset = presets
        .update(caller.id(), id, body.into_inner().into_input()?)
        .await?;
    Ok(HttpResponse::Ok().json(PresetResponse::from(preset)))
}

#[utoipa::path(delete, path = "/api/v1/presets/{id}", operation_id = "delete_preset", summary = "Delete a preset", tag = "presets", params(("id" = uuid::Uuid, Path, description = "The preset uuid")), responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
async fn delete<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    Id(id): Id<PresetId>,
) -> Result<HttpResponse, ApiError> {
    presets.delete(caller.id(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    q: Option<String>,
    #[serde(default)]
    favorites: bool,
    page: Option<u32>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/presets", operation_id = "list_presets", summary = "List your presets", tag = "presets", params(ListQuery), responses((status = 200, description = "A page of the caller's presets", body = crate::PageResponse<PresetResponse>)), security(("bearer" = [])))]
async fn list<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = PageRequest::new(q.page, q.limit)?;
    let result = presets
        .list(
            caller.id(),
            PresetQuery {
                search: q.q.map(SearchQuery::parse).transpose()?,
                favorites_only: q.favorites,
                page,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::new(result, PresetResponse::from)))
}

/// The new use count of a preset or template.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UseResponse {
    /// How often it has been used, this use included.
    pub(crate) usage_count: u64,
}

#[utoipa::path(post, path = "/api/v1/presets/{id}/use", operation_id = "use_preset", summary = "Count a use of a preset", tag = "presets", params(("id" = uuid::Uuid, Path, description = "The preset uuid")), responses((status = 200, description = "The new use count", body = UseResponse)), security(("bearer" = [])))]
async fn record_use<A: AuthUseCase, P: PresetUseCase>(
    caller: CurrentUser<A>,
    presets: web::Data<P>,
    Id(id): Id<PresetId>,
) -> Result<HttpResponse, ApiError> {
    let usage_count = presets.record_use(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(UseResponse { usage_count }))
}

/// Registers the preset routes (inside the `/api/v1` scope).
pub fn routes<A: AuthUseCase, P: PresetUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/presets", web::post().to(create::<A, P>))
        .route("/presets", web::get().to(list::<A, P>))
        .route("/presets/{id}", web::get().to(get::<A, P>))
        .route("/presets/{id}", web::put().to(update::<A, P>))
        .route("/presets/{id}", web::delete().to(delete::<A, P>))
        .route("/presets/{id}/use", web::post().to(record_use::<A, P>));
}
