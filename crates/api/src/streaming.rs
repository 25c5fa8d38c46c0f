//! Server-Sent Events: streamed sends and retries, and the routes that watch, cancel and
//! re-attach to a chat's generation. A response only subscribes to the generation's log;
//! the generation itself runs in its own task.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use domain::ChatId;
use serde::Serialize;
use serde_json::json;
use usecase::auth::AuthUseCase;
use usecase::chat::ChatUseCase;
use usecase::generation::{GenerationEvent, GenerationFailure, GenerationStatus, Subscription};

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::path::{Id, MessagePath};
use crate::turns::{EditRequest, SendRequest, provider_error, retry_options, send_input};

/// SSE settings, registered as app data (defaults apply when absent).
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// How often a `: ping` comment goes out.
    pub ping_interval: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// One event of a `text/event-stream` response, as an SSE parser hands it over (for the
/// OpenAPI document). `data` is a JSON object with a `type` of `start`, `chunk`, `final` or
/// `error`, or the literal `[DONE]` last.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ServerSentEvent {
    /// The event's number, from 0 (send it back as `Last-Event-ID` to resume).
    id: Option<String>,
    /// Always the default `message`.
    event: Option<String>,
    /// The JSON payload, or `[DONE]`.
    data: String,
}

/// `(error_type, English, Japanese, retry_available)` of a failure that is not an HTTP error.
pub(crate) fn failure_fields(
    failure: &GenerationFailure,
) -> (&'static str, String, &'static str, bool) {
    match failure {
        GenerationFailure::Provider(cause) => {
            let e = provider_error(cause);
            (
                e.error_type(),
                e.to_string(),
                e.japanese(),
                e.retry_available(),
            )
        }
        GenerationFailure::Cancelled => (
            "cancelled",
            "the generation was stopped; the partial answer was kept".into(),
            "生成を停止しました。途中までの回答は保存されています。",
            true,
        ),
        GenerationFailure::Deadline => (
            "generation_timeout",
            "the answer took too long; the partial answer was kept".into(),
            "回答に時間がかかりすぎました。途中までの回答は保存されています。",
            true,
        ),
        GenerationFailure::ShuttingDown => (
            "service_unavailable",
            "the server is restarting; the partial answer was kept".into(),
            "サーバーが再起動中です。途中までの回答は保存されています。",
            true,
        ),
        GenerationFailure::Storage => (
            "internal_error",
            "the answer could not be saved".into(),
            "回答を保存できませんでした。",
            true,
        ),
        GenerationFailure::Internal => (
            "internal_error",
            "the answer failed unexpectedly".into(),
            "回答の生成中に予期しないエラーが発生しました。",
            true,
        ),
        GenerationFailure::Lost => (
            "service_unavailable",
            "the server writing the answer stopped responding; reload to see what was saved".into(),
            "回答を生成していたサーバーが応答しなくなりました。再読み込みして保存内容を確認してください。",
            true,
        ),
    }
}

/// One event as SSE bytes: `id: <n>` and one `data:` line.
fn encode(id: u64, event: &GenerationEvent, japanese: bool) -> Bytes {
    let data = match event {
        GenerationEvent::Start {
            user_message,
            message,
            model,
        } => json!({
            "type": "start",
            "user_message_uuid": user_message.to_string(),
            "message_uuid": message.to_string(),
            "model": model.as_str(),
        }),
        GenerationEvent::Chunk(delta) => json!({"type": "chunk", "delta": delta}),
        GenerationEvent::Final(f) => json!({
            "type": "final",
            "message_uuid": f.message.to_string(),
            "content": f.content,
            "usage": f.usage.map(|u| json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            })),
            "model": f.model.as_str(),
            "finish_reason": f.finish_reason,
            "generation": f.stats.as_ref().map(crate::turns::AnswerStats::from),
        }),
        GenerationEvent::Error(failure) => {
            let (error_type, english, japanese_text, retry) = failure_fields(failure);
            json!({
                "type": "error",
                "error_type": error_type,
                "message": if japanese { japanese_text.to_owned() } else { english },
                "retry_available": retry,
            })
        }
        GenerationEvent::Done => return Bytes::from(format!("id: {id}\ndata: [DONE]\n\n")),
    };
    Bytes::from(format!("id: {id}\ndata: {data}\n\n"))
}

/// The `text/event-stream` response following `subscription`, with pings.
fn event_stream(req: &HttpRequest, subscription: Subscription) -> HttpResponse {
    let settings = req
        .app_data::<web::Data<StreamSettings>>()
        .map(|s| *s.get_ref())
        .unwrap_or_default();
    let japanese = crate::context::current().is_some_and(|c| c.japanese);
    let period = settings.ping_interval.max(Duration::from_millis(10));
    let ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let body = futures::stream::unfold(
        (subscription, ping, crate::telemetry::OpenStream::open()),
        move |(mut subscription, mut ping, open)| async move {
            let chunk = tokio::select! {
                next = subscription.next() => {
                    let (id, event) = next?;
                    encode(id, &event, japanese)
                }
                _ = ping.tick() => Bytes::from_static(b": ping\n\n"),
            };
            Some((
                Ok::<_, std::convert::Infallible>(chunk),
                (subscription, ping, open),
            ))
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages/stream", summary = "Ask a question and stream the answer (SSE)", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), request_body = SendRequest, responses((status = 200, description = "text/event-stream: `id: <n>` + `data: {\"type\":\"start\"|\"chunk\"|\"final\"|\"error\",…}`, then `data: [DONE]`; `: ping` comments", body = ServerSentEvent, content_type = "text/event-stream"), (status = 409, description = "A generation already runs in this chat", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn send_stream<A: AuthUseCase, S: ChatUseCase>(
    req: HttpRequest,
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let chat = id;
    let input = send_input(body.into_inner())?;
    let subscription = chats.send_stream(caller.id(), chat, input).await?;
    Ok(event_stream(&req, subscription))
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages/{mid}/retry/stream", summary = "Regenerate an answer, streamed (SSE)", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("mid" = uuid::Uuid, Path, description = "The message uuid")), request_body = crate::turns::RetryRequest, responses((status = 200, description = "text/event-stream: `id: <n>` + `data: {\"type\":\"start\"|\"chunk\"|\"final\"|\"error\",…}`, then `data: [DONE]`; `: ping` comments", body = ServerSentEvent, content_type = "text/event-stream"), (status = 409, description = "A generation already runs in this chat", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn retry_stream<A: AuthUseCase, S: ChatUseCase>(
    req: HttpRequest,
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    MessagePath { chat, message }: MessagePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let options = retry_options(&body)?;
    let subscription = chats
        .retry_stream(caller.id(), chat, message, options)
        .await?;
    Ok(event_stream(&req, subscription))
}

#[utoipa::path(patch, path = "/api/v1/chats/{id}/messages/{mid}/stream", summary = "Edit a question and stream the new answer (SSE)", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("mid" = uuid::Uuid, Path, description = "The question to edit")), request_body = EditRequest, responses((status = 200, description = "The edited question is stored as a new sibling (a new branch) and its answer streams: text/event-stream as for a streamed send (`start` names the new question in `user_message_uuid`)", body = ServerSentEvent, content_type = "text/event-stream"), (status = 409, description = "A generation already runs in this chat", body = crate::error::ErrorBody), (status = 422, description = "The message is the root or an answer (only questions are edited and answered again)", body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn edit_stream<A: AuthUseCase, S: ChatUseCase>(
    req: HttpRequest,
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    MessagePath { chat, message }: MessagePath,
    body: web::Json<EditRequest>,
) -> Result<HttpResponse, ApiError> {
    let (content, options) = body.into_inner().into_parts()?;
    let subscription = chats
        .edit_stream(caller.id(), chat, message, content, options)
        .await?;
    Ok(event_stream(&req, subscription))
}

/// A generation as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GenerationResponse {
    running: bool,
    message_uuid: String,
    user_message_uuid: String,
    model: String,
    started_at: String,
    characters: usize,
    /// The id the next event will carry.
    next_event_id: u64,
    /// `complete`, `interrupted` or `failed` once ended.
    outcome: Option<&'static str>,
}

impl From<GenerationStatus> for GenerationResponse {
    fn from(s: GenerationStatus) -> Self {
        Self {
            running: s.running,
            message_uuid: s.message.to_string(),
            user_message_uuid: s.user_message.to_string(),
            model: s.model.as_str().to_owned(),
            started_at: s.started_at.to_string(),
            characters: s.characters,
            next_event_id: s.events,
            outcome: s.outcome,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/generation", summary = "Is an answer being generated in this chat?", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "The chat's generation, running or recently ended (as long as `generation.linger_secs`); 404 when there is none", body = GenerationResponse)), security(("bearer" = [])))]
async fn status<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let status = chats
        .generation(caller.id(), id)
        .await?
        .ok_or(ApiError::NotFound("generation"))?;
    // One shape with the cancel route's answer.
    Ok(HttpResponse::Ok().json(GenerationResponse::from(status)))
}

#[utoipa::path(post, path = "/api/v1/chats/{id}/generation/cancel", summary = "Stop the running answer (its text so far is kept)", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid")), responses((status = 200, description = "Stopped; the partial answer is saved", body = GenerationResponse)), security(("bearer" = [])))]
async fn cancel<A: AuthUseCase, S: ChatUseCase>(
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let status = chats.cancel_generation(caller.id(), id).await?;
    Ok(HttpResponse::Ok().json(GenerationResponse::from(status)))
}

#[utoipa::path(get, path = "/api/v1/chats/{id}/generation/stream", summary = "Re-attach to the running answer (SSE)", tag = "streaming", params(("id" = uuid::Uuid, Path, description = "The chat uuid"), ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")), responses((status = 200, description = "Replay after Last-Event-ID, then live (text/event-stream: `id: <n>` + `data: {\"type\":\"start\"|\"chunk\"|\"final\"|\"error\",…}`, then `data: [DONE]`; `: ping` comments)", body = ServerSentEvent, content_type = "text/event-stream")), security(("bearer" = [])))]
async fn attach<A: AuthUseCase, S: ChatUseCase>(
    req: HttpRequest,
    caller: CurrentUser<A>,
    chats: web::Data<S>,
    Id(id): Id<ChatId>,
) -> Result<HttpResponse, ApiError> {
    let chat = id;
    let after = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::Validation {
                    message: "not an event id".into(),
                    field: Some("Last-Event-ID".into()),
                })?,
        ),
    };
    let subscription = chats.attach(caller.id(), chat, after).await?;
    Ok(event_stream(&req, subscription))
}

/// The streaming routes, relative to the chat's scope (`/chats/{id}`).
pub fn routes<A: AuthUseCase, S: ChatUseCase>(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages/stream", web::post().to(send_stream::<A, S>))
        .route(
            "/messages/{mid}/retry/stream",
            web::post().to(retry_stream::<A, S>),
        )
        .route(
            "/messages/{mid}/stream",
            web::patch().to(edit_stream::<A, S>),
        )
        .route("/generation", web::get().to(status::<A, S>))
        .route("/generation/cancel", web::post().to(cancel::<A, S>))
        .route("/generation/stream", web::get().to(attach::<A, S>));
}

#[cfg(test)]
mod tests {
    use domain::{MessageId, ModelId, TokenUsage};
    use usecase::generation::FinalAnswer;
    use usecase::llm::LlmError;

    use super::*;

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn events_are_numbered_sse_with_one_data_line() {
        let chunk = text(&encode(
            3,
            &GenerationEvent::Chunk("line one\nline two".into()),
            false,
        ));
        assert_eq!(
            chunk,
            "id: 3\ndata: {\"delta\":\"line one\\nline two\",\"type\":\"chunk\"}\n\n"
        );
        let done = text(&encode(9, &GenerationEvent::Done, false));
        assert_eq!(done, "id: 9\ndata: [DONE]\n\n");
        let last = text(&encode(
            8,
            &GenerationEvent::Final(FinalAnswer {
                message: MessageId::from_u128(5),
                content: "Hi there".into(),
                usage: Some(TokenUsage {
                    prompt_tokens: 3,
                    completion_tokens: 2,
                    total_tokens: 5,
                }),
                model: ModelId::parse("m/x").unwrap(),
                finish_reason: Some("stop".into()),
                stats: None,
            }),
            false,
        ));
        let data: serde_json::Value =
            serde_json::from_str(last.trim_start_matches("id: 8\ndata: ").trim()).unwrap();
        assert_eq!(data["type"], "final");
        assert_eq!(data["usage"]["total_tokens"], 5);
    }

    #[test]
    fn errors_carry_the_envelope_fields_in_the_reader_s_language() {
        let decode = |b: Bytes| -> serde_json::Value {
            let t = text(&b);
            serde_json::from_str(t.split_once("data: ").unwrap().1.trim()).unwrap()
        };
        let provider = decode(encode(
            2,
            &GenerationEvent::Error(GenerationFailure::Provider(LlmError::BrokenStream(
                "reset".into(),
            ))),
            false,
        ));
        assert_eq!(provider["error_type"], "provider_error");
        assert_eq!(provider["retry_available"], true);
        let cancelled = decode(encode(
            2,
            &GenerationEvent::Error(GenerationFailure::Cancelled),
            true,
        ));
        assert_eq!(cancelled["error_type"], "cancelled");
        assert!(cancelled["message"].as_str().unwrap().contains("停止"));
    }
}
