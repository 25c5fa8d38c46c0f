//! Chat and message routes.

use actix_web::{HttpResponse, web};
use domain::{
    Chat, ChatId, ChatTitle, Message, MessageId, ModelId, PageRequest, SearchQuery, SystemPrompt,
    limits,
};
use serde::{Deserialize, Serialize};
use usecase::auth::AuthUseCase;
use usecase::chat::{ChatError, ChatUseCase, NewChatInput, Reply};
use usecase::ports::{ChatCursor, ChatPatch, ChatQuery, ChatSort, CursorKey};

pub(crate) mod export;
mod list;
mod search;

pub(crate) use list::{__path_list_chats, list_chats};
pub(crate) use search::{__path_search_all, __path_search_chat, search_all, search_chat};

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::path::{Id, MessagePath, parse_id};
use crate::turns::{
    AnswerStats, EditRequest, RetryRequest, SendRequest, provider_error, retry_options, send_input,
};

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::ChatNotFound => Self::NotFound("chat"),
            ChatError::MessageNotFound => Self::NotFound("message"),
            ChatError::UnknownModel(id) => Self::Validation {
                message: format!("model {id} is not in the catalogue"),
                field: Some("model_id".into()),
            },
            ChatError::UnknownPreset => Self::Validation {
                message: "no such preset".into(),
                field: Some("preset_id".into()),
            },
            ChatError::InvalidTarget(why) => Self::Validation {
                message: why.to_owned(),
                field: None,
            },
            ChatError::Invalid(e) => Self::from(e),
            ChatError::Llm(cause) => {
                tracing::warn!(error = %crate::error::causes(&cause), "provider call failed");
                provider_error(&cause)
            }
            ChatError::Busy { retry_after } => Self::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            },
            ChatError::GenerationRunning => {
                Self::Conflict("a generation is already running in this chat")
            }
            ChatError::NoGeneration => Self::NotFound("generation"),
            ChatError::ShuttingDown => Self::Unavailable {
                retry_after_secs: 5,
            },
            ChatError::Catalog(cause) => {
                tracing::warn!(error = %crate::error::causes(&cause), "catalogue unavailable");
                Self::Unavailable {
                    retry_after_secs: 30,
                }
            }
            ChatError::Storage(cause) => Self::from_repo(cause),
            ChatError::QuotaExceeded { limit, resets_at } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let reset = u64::try_from(resets_at.as_unix_seconds()).unwrap_or(0);
                Self::QuotaExceeded {
                    limit,
                    resets_at: resets_at.to_string(),
                    retry_after_secs: reset.saturating_sub(now).max(1),
                }
            }
        }
    }
}

/// A chat as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatResponse {
    uuid: String,
    title: String,
    system_prompt: Option<String>,
    model_id: Option<String>,
    /// The preset whose settings apply to this chat's answers.
    preset_id: Option<String>,
    root_message_uuid: String,
    current_leaf_uuid: String,
    message_count: u64,
    created_at: String,
    updated_at: String,
}

impl From<&Chat> for ChatResponse {
    fn from(c: &Chat) -> Self {
        Self {
            uuid: c.id.to_string(),
            title: c.display_title().to_owned(),
            system_prompt: c.system_prompt.as_ref().map(|p| p.as_str().to_owned()),
            model_id: c.model_id.as_ref().map(|m| m.as_str().to_owned()),
            preset_id: c.preset_id.map(|p| p.to_string()),
            root_message_uuid: c.root_id.to_string(),
            current_leaf_uuid: c.current_leaf_id.to_string(),
            message_count: c.message_count,
            created_at: c.created_at.to_string(),
            updated_at: c.updated_at.to_string(),
        }
    }
}

/// A message as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse {
    uuid: String,
    parent_uuid: Option<String>,
    role: &'static str,
    content: String,
    status: &'static str,
    created_at: String,
    /// For an answer that ended (complete, failed or interrupted): what it used and cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<AnswerStats>,
}

impl From<&Message> for MessageResponse {
    fn from(m: &Message) -> Self {
        Self {
            uuid: m.id.to_string(),
            parent_uuid: m.parent_id.map(|p| p.to_string()),
            role: m.role.as_str(),
            content: m.content.clone(),
            status: m.status.as_str(),
            created_at: m.created_at.to_string(),
            generation: m.generation.as_deref().map(AnswerStats::from),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateChatRequest {
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    #[schema(format = Uuid)]
    preset_id: Option<String>,
    #[schema(max_length = 8000)]
    system_prompt: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<String>,
    #[schema(min_length = 1, max_length = 8000)]
    initial_message: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/chats", summary = "Start a chat", tag = "chats", request_body = CreateChatRequest, responses((status = 201, description = "The chat with its root message", body = ChatResponse)), security(("bearer" = [])))]
async fn create_chat<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    body: web::Json<CreateChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if let Some(m) = &b.initial_message
        && m.chars().count() > limits::SYSTEM_PROMPT_MAX
    {
        return Err(ApiError::Validation {
            message: format!(
                "initial_message has more than {} characters",
                limits::SYSTEM_PROMPT_MAX
            ),
            field: Some("initial_message".into()),
        });
    }
    let input = NewChatInput {
        title: b.title.map(ChatTitle::parse).transpose()?,
        system_prompt: b.system_prompt.map(SystemPrompt::parse).transpose()?,
        model_id: b.model_id.map(ModelId::parse).transpose()?,
        initial_message: b.initial_message,
        preset_id: b
            .preset_id
            .as_deref()
            .map(|p| parse_id(p, "preset_id"))
            .transpose()?,
    };
    let chat = chats.create_chat(caller.id(), input).await?;
    Ok(HttpResponse::Created().json(ChatResponse::from(&chat)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChatListItem {
    #[serde(flatten)]
    chat: ChatResponse,
    preview: String,
}

impl From<&usecase::ports::ChatSummary> for ChatListItem {
    fn from(s: &usecase::ports::ChatSummary) -> Self {
        Self {
            chat: ChatResponse::from(&s.chat),
            preview: s.preview.chars().take(PREVIEW_CHARS).collect(),
        }
    }
}

/// Characters of the current leaf shown as a preview.
const PREVIEW_CHARS: usize = 100;

#[utoipa::path(get, path = "/api/v1/chats/{id}", summary = "A chat's metadata", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "The chat", body = ChatResponse)), security(("bearer" = [])))]
async fn get_chat<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let chat = chats.get_chat(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(ChatResponse::from(&chat)))
}

#[utoipa::path(delete, path = "/api/v1/chats/{id}", summary = "Delete a chat with every branch", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 204, description = "Deleted with everything in it")), security(("bearer" = [])))]
async fn delete_chat<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    chats.delete_chat(caller.id(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/messages", summary = "The current branch, root to leaf", tag = "messages", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "The current branch, root to leaf", body = Vec<MessageResponse>)), security(("bearer" = [])))]
async fn current_branch<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    // Kept serialised with the chat's version: an unchanged branch is sent as stored bytes.
    let body = chats
        .current_branch_rendered(caller.id(), id, "branch.json", |path| {
            serde_json::to_vec(&path.iter().map(MessageResponse::from).collect::<Vec<_>>())
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a branch could not be serialised");
                    b"[]".to_vec()
                })
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(web::Bytes::from_owner(SharedBytes(body))))
}

/// Bytes shared with the cache, sent without a copy.
struct SharedBytes(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct TreeNode {
    #[serde(flatten)]
    message: MessageResponse,
    children: Vec<String>,
}

/// The tree as a flat node list (a 10,000-deep chain would overflow nested JSON).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TreeResponse {
    chat: ChatResponse,
    root_uuid: String,
    current_leaf_uuid: String,
    nodes: Vec<TreeNode>,
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/tree", summary = "The whole conversation tree", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "Every message as a flat node list", body = TreeResponse)), security(("bearer" = [])))]
async fn tree<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let t = chats.tree(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(tree_response(&t)))
}

pub(crate) fn tree_response(t: &usecase::chat::ChatWithTree) -> TreeResponse {
    let mut nodes = Vec::with_capacity(t.tree.len());
    for id in t.tree.subtree_ids(t.tree.root().id) {
        if let (Some(m), Ok(children)) = (t.tree.get(id), t.tree.children(id)) {
            nodes.push(TreeNode {
                message: MessageResponse::from(m),
                children: children.iter().map(|c| c.id.to_string()).collect(),
            });
        }
    }
    TreeResponse {
        root_uuid: t.chat.root_id.to_string(),
        current_leaf_uuid: t.chat.current_leaf_id.to_string(),
        chat: ChatResponse::from(&t.chat),
        nodes,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SelectRequest {
    #[schema(format = Uuid)]
    message_uuid: String,
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/select", summary = "Switch the chat to another branch", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), request_body = SelectRequest, responses((status = 200, description = "The chat with its new current leaf", body = ChatResponse)), security(("bearer" = [])))]
async fn select<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    body: web::Json<SelectRequest>,
) -> Result<HttpResponse, ApiError> {
    let chat = chats
        .select(
            caller.id(),
            id,
            parse_id::<MessageId>(&body.message_uuid, "message_uuid")?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ChatResponse::from(&chat)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct UsageResponse {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SendResponse {
    message_uuid: String,
    user_message_uuid: String,
    content: String,
    parent_message_uuid: String,
    current_path: Vec<String>,
    usage: Option<UsageResponse>,
    model: String,
    /// What the answer used and cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<AnswerStats>,
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages", summary = "Ask a question and wait for the answer", tag = "messages", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), request_body = SendRequest, responses((status = 201, description = "The question and its answer", body = SendResponse), (status = 502, description = "The provider failed", body = crate::error::ErrorBody), (status = 504, description = "The provider timed out", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn send<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let chat = id;
    let input = send_input(body.into_inner())?;
    let reply = chats.send(caller.id(), chat, input).await?;
    Ok(HttpResponse::Created().json(reply_response(reply)))
}

#[utoipa::path(delete, path = "/api/v1/chats/{id}/messages/{mid}", summary = "Delete a message and everything under it", tag = "messages", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("mid" = uuid::Uuid, Path, description = "The message uuid")), responses((status = 204, description = "The message and its subtree are gone")), security(("bearer" = [])))]
async fn delete_message<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    MessagePath { chat, message }: MessagePath,
) -> Result<HttpResponse, ApiError> {
    chats.delete_message(caller.id(), chat, message).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchChatRequest {
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 8000)]
    system_prompt: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(min_length = 1, max_length = 200)]
    model_id: Option<Option<String>>,
    /// One of the caller's presets; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(format = Uuid)]
    preset_id: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/api/v1/chats/{id}", summary = "Rename a chat or change its model, preset or system prompt", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), request_body = PatchChatRequest, responses((status = 200, description = "The changed chat", body = ChatResponse)), security(("bearer" = [])))]
async fn patch_chat<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    body: web::Json<PatchChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let patch = ChatPatch {
        title: b.title.map(ChatTitle::parse).transpose()?,
        system_prompt: b
            .system_prompt
            .map(|p| p.map(SystemPrompt::parse).transpose())
            .transpose()?,
        model_id: b
            .model_id
            .map(|m| m.map(ModelId::parse).transpose())
            .transpose()?,
        preset_id: b
            .preset_id
            .map(|p| p.map(|p| parse_id(&p, "preset_id")).transpose())
            .transpose()?,
    };
    let chat = chats.update_chat(caller.id(), id, patch).await?;
    Ok(HttpResponse::Ok().json(ChatResponse::from(&chat)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RecentQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/chats/recent", summary = "Your most recently changed chats", tag = "chats", params(RecentQuery), responses((status = 200, description = "The most recently changed chats", body = Vec<ChatListItem>)), security(("bearer" = [])))]
async fn recent<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    query: web::Query<RecentQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::new(Some(1), Some(query.limit.unwrap_or(10)))?;
    let result = chats
        .list_chats(
            caller.id(),
            ChatQuery {
                title: None,
                sort: ChatSort::UpdatedDesc,
                page,
                after: None,
                without_total: true,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(
        result
            .items
            .iter()
            .map(ChatListItem::from)
            .collect::<Vec<_>>(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct CompleteResponse {
    #[serde(flatten)]
    tree: TreeResponse,
    /// The current branch, root → leaf.
    messages: Vec<MessageResponse>,
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/complete", summary = "A chat with its current branch and whole tree", tag = "chats", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "The chat, its current branch and its whole tree", body = CompleteResponse)), security(("bearer" = [])))]
async fn complete<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let t = chats.tree(caller.id(), id).await?;
    let messages = t
        .tree
        .path_to(t.chat.current_leaf_id)
        .map(|p| p.into_iter().map(MessageResponse::from).collect())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(CompleteResponse {
        tree: tree_response(&t),
        messages,
    }))
}

fn reply_response(reply: Reply) -> SendResponse {
    SendResponse {
        message_uuid: reply.answer.id.to_string(),
        user_message_uuid: reply.user_message.id.to_string(),
        content: reply.answer.content,
        parent_message_uuid: reply.user_message.id.to_string(),
        current_path: reply.path.iter().map(ToString::to_string).collect(),
        usage: reply.usage.map(|u| UsageResponse {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        model: reply.model.as_str().to_owned(),
        generation: reply.answer.generation.as_deref().map(AnswerStats::from),
    }
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages/{mid}/retry", summary = "Regenerate an answer (a new sibling)", tag = "messages", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("mid" = uuid::Uuid, Path, description = "The message uuid")), request_body = RetryRequest, responses((status = 201, description = "A new answer, a sibling of the old one", body = SendResponse), (status = 502, description = "The provider failed", body = crate::error::ErrorBody), (status = 504, description = "The provider timed out", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn retry<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    MessagePath { chat, message }: MessagePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let options = retry_options(&body)?;
    let reply = chats.retry(caller.id(), chat, message, options).await?;
    Ok(HttpResponse::Created().json(reply_response(reply)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EditQuery {
    #[serde(default)]
    regenerate: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EditResponse {
    message: MessageResponse,
    reply: Option<SendResponse>,
}

#[utoipa::path(patch, path = "/api/v1/chats/{id}/messages/{mid}", summary = "Edit a message: a new sibling branch", tag = "messages", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("mid" = uuid::Uuid, Path, description = "The message uuid"), EditQuery), request_body = EditRequest, responses((status = 201, description = "The new sibling (and its answer with regenerate=true)", body = EditResponse), (status = 502, description = "The provider failed", body = crate::error::ErrorBody), (status = 504, description = "The provider timed out", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn edit<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    MessagePath { chat, message }: MessagePath,
    query: web::Query<EditQuery>,
    body: web::Json<EditRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.asks_for_an_answer() && !query.regenerate {
        return Err(ApiError::Validation {
            message: "model_id, preset_id, temperature and max_tokens apply to the answer: \
                      add regenerate=true"
                .into(),
            field: Some("regenerate".into()),
        });
    }
    let (content, options) = body.into_parts()?;
    let edited = chats
        .edit(
            caller.id(),
            chat,
            message,
            content,
            query.regenerate.then_some(options),
        )
        .await?;
    Ok(HttpResponse::Created().json(EditResponse {
        message: MessageResponse::from(&edited.message),
        reply: edited.reply.map(reply_response),
    }))
}

/// Registers the chat routes (inside the `/api/v1` scope).
pub fn routes<A: AuthUseCase, S: ChatUseCase>(cfg: &mut web::ServiceConfig) {
    // One scope per chat: a request is matched (and its pattern found again by the metrics
    // and the rate limiter) with one regular expression instead of one per route; the
    // hottest routes first.
    cfg.route("/chats", web::post().to(create_chat::<A, S>))
        .route("/chats", web::get().to(list_chats::<A, S>))
        .route("/chats/recent", web::get().to(recent::<A, S>))
        .route("/search", web::get().to(search_all::<A, S>))
        .service(
            web::scope("/chats/{id}")
                .route("/messages", web::get().to(current_branch::<A, S>))
                .route("/messages", web::post().to(send::<A, S>))
                .configure(crate::streaming::routes::<A, S>)
                .route("", web::get().to(get_chat::<A, S>))
                .route("", web::patch().to(patch_chat::<A, S>))
                .route("", web::delete().to(delete_chat::<A, S>))
                .route("/complete", web::get().to(complete::<A, S>))
                .route("/search", web::get().to(search_chat::<A, S>))
                .route("/export", web::get().to(export::export::<A, S>))
                .route("/tree", web::get().to(tree::<A, S>))
                .route("/select", web::post().to(select::<A, S>))
                .route("/messages/{mid}/retry", web::post().to(retry::<A, S>))
                .route("/messages/{mid}", web::patch().to(edit::<A, S>))
                .route("/messages/{mid}", web::delete().to(delete_message::<A, S>)),
        );
}
