//! The OpenAI-compatible surface under `/v1`, for clients built on the OpenAI SDKs: the same
//! bearer credentials as `/api/v1` (a personal API key or an access token), OpenAI's shapes,
//! and OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`) instead of
//! Arbor's envelope, so the SDKs raise their usual exceptions.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError, web};
use domain::{ModelId, ModelInfo, PageRequest};
use serde::Serialize;
use serde_json::json;
use usecase::auth::AuthUseCase;
use usecase::catalog::CatalogUseCase;
use usecase::chat::CompletionsUseCase;

use crate::auth::CurrentUser;
use crate::error::ApiError;

mod completions;
mod document;

pub use document::OpenAiDoc;

pub use completions::{CHAT_HEADER, MESSAGE_HEADER, MESSAGES_MAX};

/// An [`ApiError`] in OpenAI's error shape.
#[derive(Debug)]
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for OpenAiError {
    /// As Arbor's, except that invalid input is a 400 (OpenAI has no 422).
    fn status_code(&self) -> StatusCode {
        match self.0.status_code() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let inner = self.0.error_response();
        let status = self.status_code();
        let body = self.0.body();
        let (kind, code) = match (status.as_u16(), &self.0) {
            (401, _) => ("invalid_request_error", "invalid_api_key"),
            (403, _) => ("invalid_request_error", "permission_denied"),
            (404, ApiError::NotFound("model")) => ("invalid_request_error", "model_not_found"),
            (404, _) => ("invalid_request_error", "not_found"),
            (429, _) => ("rate_limit_error", "rate_limit_exceeded"),
            (500..=599, _) => ("server_error", body.error_type),
            _ => ("invalid_request_error", body.error_type),
        };
        let mut response = HttpResponse::build(status);
        for name in [
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static(crate::error::SHOULD_RETRY),
        ] {
            if let Some(value) = inner.headers().get(&name) {
                response.insert_header((name, value.clone()));
            }
        }
        response.json(json!({
            "error": {
                "message": body.user_message,
                "type": kind,
                "param": match &self.0 {
                    ApiError::Validation { field, .. } => field.as_deref(),
                    _ => None,
                },
                "code": code,
            }
        }))
    }
}

/// A model as OpenAI lists it.
#[derive(Serialize)]
struct OpenAiModel {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
}

impl From<ModelInfo> for OpenAiModel {
    fn from(m: ModelInfo) -> Self {
        let owned_by =
            m.id.as_str()
                .split_once('/')
                .map_or("arbor", |(owner, _)| owner)
                .to_owned();
        Self {
            id: m.id.as_str().to_owned(),
            object: "model",
            created: m.created.unwrap_or(0),
            owned_by,
        }
    }
}

fn catalog_error(e: usecase::catalog::CatalogError) -> OpenAiError {
    OpenAiError(crate::models::catalog_error(e))
}

/// `GET /v1/models`: every model of the catalogue, in OpenAI's list shape.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "Every model of the catalogue", body = document::ModelList)), security(("bearer" = [])))]
async fn list<A: AuthUseCase, M: CatalogUseCase>(
    caller: Result<CurrentUser<A>, ApiError>,
    catalog: web::Data<M>,
) -> Result<HttpResponse, OpenAiError> {
    caller?;
    let mut data = Vec::new();
    let mut page = 1;
    loop {
        let request = PageRequest::new(Some(page), Some(domain::limits::PAGE_SIZE_MAX))
            .map_err(ApiError::from)?;
        let result = catalog
            .list_models(None, request)
            .await
            .map_err(catalog_error)?;
        let total = result.page.total;
        data.extend(result.page.items.into_iter().map(OpenAiModel::from));
        if data.len() as u64 >= total || page >= domain::limits::PAGE_MAX {
            break;
        }
        page += 1;
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{id}`: one model (ids contain `/`).
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", params(("id" = String, Path, description = "The model id (it contains `/`)")), responses((status = 200, description = "The model", body = document::OpenAiModelDoc)), security(("bearer" = [])))]
async fn get<A: AuthUseCase, M: CatalogUseCase>(
    caller: Result<CurrentUser<A>, ApiError>,
    catalog: web::Data<M>,
    id: web::Path<String>,
) -> Result<HttpResponse, OpenAiError> {
    caller?;
    let id = ModelId::parse(id.into_inner()).map_err(ApiError::from)?;
    let (model, _) = catalog.get_model(&id).await.map_err(catalog_error)?;
    Ok(HttpResponse::Ok().json(OpenAiModel::from(model)))
}

/// Registers the `/v1` routes.
pub fn routes<A: AuthUseCase, M: CatalogUseCase, S: CompletionsUseCase>(
    cfg: &mut web::ServiceConfig,
) {
    cfg.route(
        "/chat/completions",
        web::post().to(completions::create::<A, S>),
    )
    .route("/models", web::get().to(list::<A, M>))
    .route("/models/{id:.+}", web::get().to(get::<A, M>))
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(OpenAiError(ApiError::NotFound("route")))
    }));
}
