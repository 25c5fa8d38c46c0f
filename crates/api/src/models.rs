//! The model catalogue and per-user settings routes.

use actix_web::{HttpResponse, web};
use domain::{ModelId, ModelInfo, PageRequest};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::catalog::{CatalogError, CatalogUseCase, UserSettings};

use crate::PageResponse;
use crate::auth::CurrentUser;
use crate::error::ApiError;

#[derive(Serialize, utoipa::ToSchema)]
struct PricingResponse {
    prompt: String,
    completion: String,
}

/// A catalogue entry. Prices are USD per token, as decimal strings.
#[derive(Serialize, utoipa::ToSchema)]
struct ModelResponse {
    id: String,
    name: String,
    description: Option<String>,
    context_length: Option<u32>,
    pricing: PricingResponse,
    input_modalities: Vec<String>,
    output_modalities: Vec<String>,
    created: Option<i64>,
}

impl From<ModelInfo> for ModelResponse {
    fn from(m: ModelInfo) -> Self {
        Self {
            id: m.id.as_str().to_owned(),
            name: m.name,
            description: m.description,
            context_length: m.context_length,
            pricing: PricingResponse {
                prompt: m.pricing.prompt.to_string(),
                completion: m.pricing.completion.to_string(),
            },
            input_modalities: m.input_modalities,
            output_modalities: m.output_modalities,
            created: m.created,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct ModelListResponse {
    #[serde(flatten)]
    page: PageResponse<ModelResponse>,
    /// True when the provider could not be reached and the cached list was served.
    stale: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    q: Option<String>,
    page: Option<u32>,
    limit: Option<u32>,
}

pub(crate) fn catalog_error(e: CatalogError) -> ApiError {
    match e {
        CatalogError::UnknownModel(_) => ApiError::NotFound("model"),
        CatalogError::Unavailable(cause) => {
            tracing::warn!(error = %crate::error::causes(&cause), "model catalogue unavailable");
            ApiError::Unavailable {
                retry_after_secs: 30,
            }
        }
        CatalogError::Storage(cause) => ApiError::from_repo(cause),
    }
}

fn with_stale(
    mut response: actix_web::HttpResponseBuilder,
    stale: bool,
) -> actix_web::HttpResponseBuilder {
    if stale {
        response.insert_header(("x-catalog-stale", "true"));
    }
    response
}

#[utoipa::path(get, path = "/api/v1/models", operation_id = "list_models", summary = "The model catalogue (search, pages)", tag = "models", params(ListQuery), responses((status = 200, description = "The catalogue (X-Catalog-Stale: true when served stale)", body = ModelListResponse)), security(("bearer" = [])))]
async fn list<A: AuthUseCase, M: CatalogUseCase>(
    _caller: CurrentUser<A>,
    catalog: web::Data<M>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = PageRequest::new(query.page, query.limit)?;
    let q = query.q.filter(|q| !q.trim().is_empty());
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > domain::limits::SEARCH_QUERY_MAX)
    {
        return Err(ApiError::Validation {
            message: format!(
                "q has more than {} characters",
                domain::limits::SEARCH_QUERY_MAX
            ),
            field: Some("q".into()),
        });
    }
    let result = catalog.list_models(q, page).await.map_err(catalog_error)?;
    Ok(
        with_stale(HttpResponse::Ok(), result.stale).json(ModelListResponse {
            page: PageResponse::new(result.page, ModelResponse::from),
            stale: result.stale,
        }),
    )
}

/// Ids contain slashes: `openai/gpt-4o-mini`.
#[utoipa::path(get, path = "/api/v1/models/{id}", operation_id = "get_model", summary = "One model of the catalogue", tag = "models", params(("id" = String, Path, description = "The model id, e.g. openai/gpt-4o-mini")), responses((status = 200, description = "One model", body = ModelResponse)), security(("bearer" = [])))]
async fn get<A: AuthUseCase, M: CatalogUseCase>(
    _caller: CurrentUser<A>,
    catalog: web::Data<M>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = ModelId::parse(id.into_inner())?;
    let (model, stale) = catalog.get_model(&id).await.map_err(catalog_error)?;
    Ok(with_stale(HttpResponse::Ok(), stale).json(ModelResponse::from(model)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    default_model_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/users/me/settings", summary = "Your settings (default model)", tag = "models", responses((status = 200, description = "The caller's settings", body = SettingsBody)), security(("bearer" = [])))]
async fn get_settings<A: AuthUseCase, M: CatalogUseCase>(
    caller: CurrentUser<A>,
    catalog: web::Data<M>,
) -> Result<HttpResponse, ApiError> {
    let settings = catalog.settings(caller.id()).await.map_err(catalog_error)?;
    Ok(HttpResponse::Ok().json(SettingsBody {
        default_model_id: settings.default_model_id.map(|m| m.as_str().to_owned()),
    }))
}

/// The default model must be in the catalogue (422 if not).
#[utoipa::path(put, path = "/api/v1/users/me/settings", summary = "Change your default model", tag = "models", request_body = SettingsBody, responses((status = 200, description = "The new settings", body = SettingsBody)), security(("bearer" = [])))]
async fn put_settings<A: AuthUseCase, M: CatalogUseCase>(
    caller: CurrentUser<A>,
    catalog: web::Data<M>,
    body: web::Json<SettingsBody>,
) -> Result<HttpResponse, ApiError> {
    let default_model_id = body
        .into_inner()
        .default_model_id
        .map(ModelId::parse)
        .transpose()?;
    let saved = catalog
        .update_settings(caller.id(), UserSettings { default_model_id })
        .await
        .map_err(|e| match e {
            CatalogError::UnknownModel(id) => ApiError::Validation {
                message: format!("model {id} is not in the catalogue"),
                field: Some("default_model_id".into()),
            },
            other => catalog_error(other),
        })?;
    Ok(HttpResponse::Ok().json(SettingsBody {
        default_model_id: saved.default_model_id.map(|m| m.as_str().to_owned()),
    }))
}

/// Registers the catalogue routes (inside the `/api/v1` scope).
pub fn routes<A: AuthUseCase, M: CatalogUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/models", web::get().to(list::<A, M>))
        .route("/models/{id:.+}", web::get().to(get::<A, M>))
        .route("/users/me/settings", web::get().to(get_settings::<A, M>))
        .route("/users/me/settings", web::put().to(put_settings::<A, M>));
}
