//! Message search: in one chat or across all of the caller's chats.

use actix_web::{HttpResponse, web};
use domain::{ChatId, ChatTitle, PageRequest, SearchQuery};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::chat::ChatUseCase;

use super::MessageResponse;
use crate::PageResponse;
use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::path::Id;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    /// The text to find, case-insensitively (2–200 characters). A query of 3 characters or
    /// more searches every message in scope through an index; a 2-character query reads only
    /// the newest 10,000 messages in scope (`searched_all` says whether that was all).
    q: String,
    page: Option<u32>,
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SearchHitResponse {
    chat_uuid: String,
    chat_title: String,
    message: MessageResponse,
}

/// One page of hits, newest first: the list shape, whose `total` counts at most 1,000
/// matches (see `total_exact`).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SearchPageResponse {
    #[serde(flatten)]
    page: PageResponse<SearchHitResponse>,
    /// False when there are more than 1,000 matches: `total` and `pages` then count only the
    /// first 1,000, and later pages are still served.
    total_exact: bool,
    /// False when a 2-character query searched only the newest 10,000 messages in scope.
    searched_all: bool,
}

async fn run_search<A: AuthUseCase, S: ChatUseCase>(
    caller: &CurrentUser<A>,
    chats: &S,
    chat: Option<ChatId>,
    params: SearchParams,
) -> Result<HttpResponse, ApiError> {
    let query = SearchQuery::parse(params.q)?;
    let request = PageRequest::new(params.page, params.limit)?;
    let found = chats.search(caller.id(), chat, query, request).await?;
    Ok(HttpResponse::Ok().json(SearchPageResponse {
        page: PageResponse::new(found.page, |h| SearchHitResponse {
            chat_uuid: h.message.chat_id.to_string(),
            chat_title: h
                .chat_title
                .as_ref()
                .map_or(domain::UNTITLED_CHAT, ChatTitle::as_str)
                .to_owned(),
            message: MessageResponse::from(&h.message),
        }),
        total_exact: found.total_exact,
        searched_all: found.searched_all,
    }))
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/search", summary = "Search the messages of one chat", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), SearchParams), responses((status = 200, description = "Messages of this chat", body = SearchPageResponse)), security(("bearer" = [])))]
pub(crate) async fn search_chat<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let chat = id;
    run_search(&caller, chats.get_ref(), Some(chat), params.into_inner()).await
}

#[utoipa::path(get, path = "/api/v1/search", summary = "Search the messages of all your chats", tag = "chats", params(SearchParams), responses((status = 200, description = "Messages of all the caller's chats", body = SearchPageResponse)), security(("bearer" = [])))]
pub(crate) async fn search_all<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    run_search(&caller, chats.get_ref(), None, params.into_inner()).await
}
