//! Prompt template routes: own + public visible, owner-only changes (403 for someone
//! else's public template, 404 for a private one).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use domain::{
    Category, PageRequest, PromptTemplate, SearchQuery, TemplateContent, TemplateDescription,
    TemplateId, TemplateName,
};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::ports::{TemplateQuery, TemplateSort};
use usecase::template::{TemplateError, TemplateInput, TemplateUseCase};

use crate::PageResponse;
use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::path::Id;

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::NotFound => Self::NotFound("template"),
            TemplateError::Forbidden => Self::Forbidden,
            TemplateError::Invalid(e) => e.into(),
            TemplateError::Render(e) => Self::Validation {
                message: e.to_string(),
                field: Some("variables".into()),
            },
            TemplateError::Storage(cause) => Self::from_repo(cause),
        }
    }
}

/// Most variables a render request may carry, and the longest value.
const MAX_RENDER_VALUES: usize = 100;
const MAX_RENDER_VALUE_CHARS: usize = 20_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TemplateRequest {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(max_length = 500)]
    description: Option<String>,
    #[schema(min_length = 1, max_length = 20000)]
    content: String,
    #[schema(max_length = 50)]
    category: Option<String>,
    variables: Option<Vec<String>>,
    #[serde(default)]
    is_public: bool,
    #[serde(default)]
    is_favorite: bool,
}

impl TemplateRequest {
    fn into_input(self) -> Result<TemplateInput, ApiError> {
        if self
            .variables
            .as_ref()
            .is_some_and(|v| v.len() > domain::limits::TEMPLATE_VARIABLES_MAX)
        {
            return Err(ApiError::Validation {
                message: "too many variables".into(),
                field: Some("variables".into()),
            });
        }
        Ok(TemplateInput {
            name: TemplateName::parse(self.name)?,
            description: self
                .description
                .map(TemplateDescription::parse)
                .transpose()?,
            content: TemplateContent::parse(self.content)?,
            category: self.category.map(Category::parse).transpose()?,
            variables: self.variables,
            is_public: self.is_public,
            is_favorite: self.is_favorite,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TemplateResponse {
    uuid: String,
    owner_uuid: String,
    name: String,
    description: Option<String>,
    content: String,
    category: Option<String>,
    variables: Vec<String>,
    is_public: bool,
    is_favorite: bool,
    usage_count: u64,
    created_at: String,
    updated_at: String,
}

impl From<PromptTemplate> for TemplateResponse {
    fn from(t: PromptTemplate) -> Self {
        Self {
            uuid: t.id.to_string(),
            owner_uuid: t.owner.to_string(),
            variables: t.content.variables(),
            name: t.name.into_inner(),
            description: t.description.map(TemplateDescription::into_inner),
            content: t.content.as_str().to_owned(),
            category: t.category.map(Category::into_inner),
            is_public: t.is_public,
            is_favorite: t.is_favorite,
            usage_count: t.usage_count,
            created_at: t.created_at.to_string(),
            updated_at: t.updated_at.to_string(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/templates", operation_id = "create_template", summary = "Create a prompt template", tag = "templates", request_body = TemplateRequest, responses((status = 201, description = "The template", body = TemplateResponse)), security(("bearer" = [])))]
async fn create<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    body: web::Json<TemplateRequest>,
) -> Result<HttpResponse, ApiError> {
    let t = templates
        .create(caller.id(), body.into_inner().into_input()?)
        .await?;
    Ok(HttpResponse::Created().json(TemplateResponse::from(t)))
}

#[utoipa::path(get, path = "/api/v1/templates/{id}", operation_id = "get_template", summary = "One template", tag = "templates", params(("id" = uuid::Uuid, Path, description = "The template uuid")), responses((status = 200, description = "The template", body = TemplateResponse)), security(("bearer" = [])))]
async fn get<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    Id(id): Id<TemplateId>,
) -> Result<HttpResponse, ApiError> {
    let t = templates.get(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(TemplateResponse::from(t)))
}

#[utoipa::path(put, path = "/api/v1/templates/{id}", operation_id = "update_template", summary = "Change a template", tag = "templates", params(("id" = uuid::Uuid, Path, description = "The template uuid")), request_body = TemplateRequest, responses((status = 200, description = "The replaced template", body = TemplateResponse), (status = 403, description = "Someone else's public template", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn update<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    Id(id): Id<TemplateId>,
    body: web::Json<TemplateRequest>,
) -> Result<HttpResponse, ApiError> {
    let t = templates
        .update(caller.id(), id, body.into_inner().into_input()?)
        .await?;
    Ok(HttpResponse::Ok().json(TemplateResponse::from(t)))
}

#[utoipa::path(delete, path = "/api/v1/templates/{id}", operation_id = "delete_template", summary = "Delete a template", tag = "templates", params(("id" = uuid::Uuid, Path, description = "The template uuid")), responses((status = 204, description = "Deleted"), (status = 403, description = "Someone else's public template", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn delete<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    Id(id): Id<TemplateId>,
) -> Result<HttpResponse, ApiError> {
    templates.delete(caller.id(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    q: Option<String>,
    category: Option<String>,
    is_favorite: Option<bool>,
    is_public: Option<bool>,
    #[serde(default)]
    mine: bool,
    sort: Option<String>,
    page: Option<u32>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/templates", operation_id = "list_templates", summary = "List your templates and public ones", tag = "templates", params(ListQuery), responses((status = 200, description = "A page of own and public templates", body = crate::PageResponse<TemplateResponse>)), security(("bearer" = [])))]
async fn list<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let sort = match q.sort.as_deref() {
        None | Some("updated") => TemplateSort::Updated,
        Some("name") => TemplateSort::Name,
        Some("usage") => TemplateSort::Usage,
        Some(_) => {
            return Err(ApiError::Validation {
                message: "sort must be updated, name or usage".into(),
                field: Some("sort".into()),
            });
        }
    };
    let result = templates
        .list(
            caller.id(),
            TemplateQuery {
                search: q.q.map(SearchQuery::parse).transpose()?,
                category: q.category.map(Category::parse).transpose()?,
                is_favorite: q.is_favorite,
                is_public: q.is_public,
                mine_only: q.mine,
                sort,
                page: PageRequest::new(q.page, q.limit)?,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(PageResponse::new(result, TemplateResponse::from)))
}

/// A category and how many templates the caller can see in it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CategoryResponse {
    category: String,
    count: u64,
}

#[utoipa::path(get, path = "/api/v1/templates/categories", summary = "Template categories with counts", tag = "templates", responses((status = 200, description = "Categories with their template counts", body = Vec<CategoryResponse>)), security(("bearer" = [])))]
async fn categories<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
) -> Result<HttpResponse, ApiError> {
    let all = templates.categories(caller.id()).await?;
    Ok(HttpResponse::Ok().json(
        all.into_iter()
            .map(|(category, count)| CategoryResponse { category, count })
            .collect::<Vec<_>>(),
    ))
}

#[utoipa::path(post, path = "/api/v1/templates/{id}/use", operation_id = "use_template", summary = "Count a use of a template", tag = "templates", params(("id" = uuid::Uuid, Path, description = "The template uuid")), responses((status = 200, description = "The new use count", body = crate::presets::UseResponse)), security(("bearer" = [])))]
async fn record_use<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    Id(id): Id<TemplateId>,
) -> Result<HttpResponse, ApiError> {
    let n = templates.record_use(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(crate::presets::UseResponse { usage_count: n }))
}

/// The template's content with every `{{variable}}` replaced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RenderResponse {
    content: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/templates/{id}/render", summary = "Fill a template's variables", tag = "templates", params(("id" = uuid::Uuid, Path, description = "The template uuid")), request_body = RenderRequest, responses((status = 200, description = "The rendered text", body = RenderResponse), (status = 422, description = "A variable is missing or unknown, or the text would be longer than 100,000 characters (`detail.field` names `variables`)", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn render<A: AuthUseCase, T: TemplateUseCase>(
    caller: CurrentUser<A>,
    templates: web::Data<T>,
    Id(id): Id<TemplateId>,
    body: web::Json<RenderRequest>,
) -> Result<HttpResponse, ApiError> {
    let values = body.into_inner().variables;
    if values.len() > MAX_RENDER_VALUES
        || values
            .values()
            .any(|v| v.chars().count() > MAX_RENDER_VALUE_CHARS)
    {
        return Err(ApiError::Validation {
            message: format!(
                "at most {MAX_RENDER_VALUES} variables of at most {MAX_RENDER_VALUE_CHARS} characters"
            ),
            field: Some("variables".into()),
        });
    }
    let content = templates.render(caller.id(), id, values).await?;
    Ok(HttpResponse::Ok().json(RenderResponse { content }))
}

/// Registers the template routes (inside the `/api/v1` scope). `categories` comes before
/// `{id}` so it is never shadowed.
pub fn routes<A: AuthUseCase, T: TemplateUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/templates/categories", web::get().to(categories::<A, T>))
        .route("/templates", web::post().to(create::<A, T>))
        .route("/templates", web::get().to(list::<A, T>))
        .route("/templates/{id}", web::get().to(get::<A, T>))
        .route("/templates/{id}", web::put().to(update::<A, T>))
        .route("/templates/{id}", web::delete().to(delete::<A, T>))
        .route("/templates/{id}/use", web::post().to(record_use::<A, T>))
        .route("/templates/{id}/render", web::post().to(render::<A, T>));
}
