//! `POST /v1/chat/completions`: OpenAI's chat completions, blocking or streamed in OpenAI's
//! chunk format, for the caller's own key. Fields we forward unread (tools, response formats,
//! sampling options) go to the provider as given; fields we do not support are refused with
//! a 400 naming them. The header `X-Arbor-Chat: new | <chat uuid>` stores the request's last
//! (user) message and the answer in that chat's tree; without it only the generation record
//! is kept.

use actix_web::http::header::{self, HeaderName};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use domain::{ChatId, MessageContent, ModelId, Role, TokenUsage};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use usecase::auth::AuthUseCase;
use usecase::chat::{
    ChatError, ChatTarget, CompletionEvent, CompletionInput, CompletionStream, CompletionsUseCase,
    GivenPrompt, StoreIn,
};
use usecase::llm::{PromptMessage, RawJson};

use super::OpenAiError;
use crate::auth::CurrentUser;
use crate::error::ApiError;

/// The header naming the chat a completion is stored in (`new` for a new chat).
pub const CHAT_HEADER: &str = "x-arbor-chat";
/// The header of a stored completion's answer id.
pub const MESSAGE_HEADER: &str = "x-arbor-message";
/// The most messages one request may carry.
pub const MESSAGES_MAX: usize = 2_000;

/// Fields forwarded to the provider as given.
const FORWARDED: &[&str] = &[
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "parallel_tool_calls",
    "presence_penalty",
    "reasoning",
    "reasoning_effort",
    "response_format",
    "seed",
    "stop",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
];
/// Fields accepted and ignored (they describe OpenAI's own storage and billing).
const IGNORED: &[&str] = &[
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "store",
];
/// Forwarded fields that make an answer something a chat's tree cannot hold.
const TOOL_FIELDS: &[&str] = &["tools", "tool_choice", "parallel_tool_calls"];

#[derive(Debug, Deserialize)]
struct Request {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    #[serde(default)]
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    n: Option<i64>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn invalid(field: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError::from(ApiError::Validation {
        message: message.into(),
        field: Some(field.to_owned()),
    })
}

/// The text of a message's `content`: a string, or the text parts of an array; `None` when
/// the content holds more than text (images, audio).
fn text_of(content: Option<&Value>) -> Result<Option<String>, OpenAiError> {
    match content {
        None | Some(Value::Null) => Ok(Some(String::new())),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some(_), _) => return Ok(None),
                    (None, _) => {
                        return Err(invalid("messages", "a content part needs a type"));
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(invalid(
            "messages",
            "content must be a string or an array of parts",
        )),
    }
}

/// The conversation: its text (what a chat stores, and what is sent when it is all there
/// is), and whether the messages must go to the provider as given (tool calls, images).
fn conversation(messages: &[Value]) -> Result<(Vec<PromptMessage>, bool), OpenAiError> {
    if messages.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    if messages.len() > MESSAGES_MAX {
        return Err(invalid(
            "messages",
            format!("at most {MESSAGES_MAX} messages are accepted"),
        ));
    }
    let mut text = Vec::with_capacity(messages.len());
    let mut as_given = false;
    for message in messages {
        let Some(object) = message.as_object() else {
            return Err(invalid("messages", "each message must be an object"));
        };
        let role = match object.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Some(Role::System),
            Some("user") => Some(Role::User),
            Some("assistant") => Some(Role::Assistant),
            Some("tool") => None,
            _ => {
                return Err(invalid(
                    "messages",
                    "a message's role must be system, developer, user, assistant or tool",
                ));
            }
        };
        let content = text_of(object.get("content"))?;
        as_given |= role.is_none()
            || content.is_none()
            || object.keys().any(|k| k != "role" && k != "content");
        if let Some(role) = role {
            text.push(PromptMessage {
                role,
                content: content.unwrap_or_default(),
            });
        }
    }
    Ok((text, as_given))
}

/// Where to store the exchange, from `X-Arbor-Chat`.
fn store_in(
    req: &HttpRequest,
    text: &[PromptMessage],
    forwarded: &Map<String, Value>,
) -> Result<Option<StoreIn>, OpenAiError> {
    let Some(value) = req.headers().get(CHAT_HEADER) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let chat = if value.eq_ignore_ascii_case("new") {
        ChatTarget::New
    } else {
        ChatTarget::Existing(
            value
                .parse::<ChatId>()
                .map_err(|_| invalid(CHAT_HEADER, "X-Arbor-Chat must be `new` or a chat uuid"))?,
        )
    };
    if let Some(field) = TOOL_FIELDS.iter().find(|f| forwarded.contains_key(**f)) {
        return Err(invalid(
            field,
            format!("`{field}` cannot be used with X-Arbor-Chat: a chat stores text answers"),
        ));
    }
    let question = match text.last() {
        Some(m) if m.role == Role::User => m.content.clone(),
        _ => {
            return Err(invalid(
                "messages",
                "with X-Arbor-Chat the last message must be the user's",
            ));
        }
    };
    Ok(Some(StoreIn {
        chat,
        question: MessageContent::parse(question).map_err(ApiError::from)?,
    }))
}

/// The use case's input, whether to stream, and whether to report usage in the stream.
fn input(req: &HttpRequest, body: &[u8]) -> Result<(CompletionInput, bool, bool), OpenAiError> {
    let body: Request = serde_json::from_slice(body)
        .map_err(|e| OpenAiError::from(ApiError::Malformed(format!("invalid JSON body: {e}"))))?;
    let model = body
        .model
        .ok_or_else(|| invalid("model", "`model` is required"))?;
    let model = ModelId::parse(model).map_err(ApiError::from)?;
    if body.n.is_some_and(|n| n != 1) {
        return Err(invalid("n", "only n = 1 is supported"));
    }
    let messages = body
        .messages
        .ok_or_else(|| invalid("messages", "`messages` is required"))?;
    let (text, as_given) = conversation(&messages)?;
    let mut forwarded = Map::new();
    for (name, value) in body.rest {
        if value.is_null() || IGNORED.contains(&name.as_str()) {
            continue;
        }
        if !FORWARDED.contains(&name.as_str()) {
            return Err(invalid(&name, format!("unsupported parameter: `{name}`")));
        }
        forwarded.insert(name, value);
    }
    let store = store_in(req, &text, &forwarded)?;
    if as_given {
        forwarded.insert("messages".into(), Value::Array(messages));
    }
    let (temperature, max_tokens) = crate::turns::generation_settings(
        body.temperature,
        body.max_completion_tokens.or(body.max_tokens),
    )?;
    let stream = body.stream.unwrap_or(false);
    let include_usage = body
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok((
        CompletionInput {
            model,
            prompt: GivenPrompt {
                messages: text,
                passthrough: (!forwarded.is_empty())
                    .then(|| RawJson::new(Value::Object(forwarded).to_string())),
            },
            temperature,
            max_tokens,
            store,
        },
        stream,
        include_usage,
    ))
}

/// Chat errors as OpenAI reports them: an unknown model is a 404 (`model_not_found`).
fn chat_error(e: ChatError) -> OpenAiError {
    match e {
        ChatError::UnknownModel(_) => OpenAiError::from(ApiError::NotFound("model")),
        other => OpenAiError::from(ApiError::from(other)),
    }
}

fn usage_json(u: TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// A completion id, `chatcmpl-` and a fresh uuid.
fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Adds the members of a provider's JSON object (`extra`) to `object`.
fn merge(object: &mut Value, extra: Option<&RawJson>) {
    if let (Some(Value::Object(fields)), Value::Object(target)) = (
        extra.and_then(|e| serde_json::from_str::<Value>(e.as_str()).ok()),
        object,
    ) {
        target.extend(fields);
    }
}

/// `X-Arbor-Chat` and `X-Arbor-Message` of a stored completion.
fn stored_headers(
    response: &mut actix_web::HttpResponseBuilder,
    stored: Option<(ChatId, domain::MessageId)>,
) {
    if let Some((chat, message)) = stored {
        response
            .insert_header((HeaderName::from_static(CHAT_HEADER), chat.to_string()))
            .insert_header((HeaderName::from_static(MESSAGE_HEADER), message.to_string()));
    }
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", params(("X-Arbor-Chat" = Option<String>, Header, description = "`new`, or the uuid of a chat of the caller's: the last (user) message and the answer are stored in it (the response then names the chat and the answer in `X-Arbor-Chat` and `X-Arbor-Message`)")), request_body = super::document::ChatCompletionRequest, responses((status = 200, description = "The answer; with `stream: true`, `text/event-stream` of `data: {chat.completion.chunk}` events and `data: [DONE]`", content((super::document::ChatCompletion = "application/json"), (super::document::ChatCompletionChunk = "text/event-stream")))), security(("bearer" = [])))]
pub(super) async fn create<A: AuthUseCase, S: CompletionsUseCase>(
    req: HttpRequest,
    caller: Result<CurrentUser<A>, ApiError>,
    completions: web::Data<S>,
    body: Bytes,
) -> Result<HttpResponse, OpenAiError> {
    let caller = caller?;
    let (input, stream, include_usage) = input(&req, &body)?;
    if stream {
        let events = completions
            .complete_stream(caller.id(), input)
            .await
            .map_err(chat_error)?;
        return Ok(event_stream(events, include_usage));
    }
    let reply = completions
        .complete(caller.id(), input)
        .await
        .map_err(chat_error)?;
    let c = reply.completion;
    let mut message = json!({"role": "assistant", "content": c.content});
    merge(&mut message, c.extra.as_ref());
    let mut response = HttpResponse::Ok();
    stored_headers(&mut response, reply.stored);
    Ok(response.json(json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_now(),
        "model": reply.model.as_str(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": c.finish_reason.unwrap_or_else(|| "stop".into()),
        }],
        "usage": usage_json(c.usage.unwrap_or_default()),
    })))
}

/// The chunks of one streamed completion.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn data(value: &Value) -> Bytes {
        Bytes::from(format!("data: {value}\n\n"))
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        Self::data(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        }))
    }

    /// The bytes of one event.
    fn encode(&self, event: CompletionEvent) -> Vec<Bytes> {
        match event {
            CompletionEvent::Delta(text) => vec![self.chunk(json!({"content": text}), None)],
            CompletionEvent::Extra(extra) => {
                let mut delta = json!({});
                merge(&mut delta, Some(&extra));
                vec![self.chunk(delta, None)]
            }
            CompletionEvent::End {
                finish_reason,
                usage,
            } => {
                let mut out =
                    vec![self.chunk(json!({}), Some(finish_reason.as_deref().unwrap_or("stop")))];
                if self.include_usage {
                    out.push(Self::data(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage_json(usage.unwrap_or_default()),
                    })));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                out
            }
            CompletionEvent::Failed(failure) => {
                let (code, message, _, _) = crate::streaming::failure_fields(&failure);
                vec![
                    Self::data(&json!({"error": {
                        "message": message,
                        "type": "server_error",
                        "param": null,
                        "code": code,
                    }})),
                    Bytes::from_static(b"data: [DONE]\n\n"),
                ]
            }
        }
    }
}

/// The `text/event-stream` response of a streamed completion: a first chunk with the role,
/// the deltas, a last chunk with the finish reason (and one with the usage when asked),
/// then `data: [DONE]`; an error object instead when the answer fails midway.
fn event_stream(events: CompletionStream, include_usage: bool) -> HttpResponse {
    let chunks = Chunks {
        id: completion_id(),
        created: unix_now(),
        model: events.model.as_str().to_owned(),
        include_usage,
    };
    let first = chunks.chunk(json!({"role": "assistant", "content": ""}), None);
    let stored = events.stored;
    let body = futures::stream::unfold(
        (
            Some(first),
            events,
            chunks,
            crate::telemetry::OpenStream::open(),
        ),
        |(first, mut events, chunks, open)| async move {
            if let Some(first) = first {
                return Some((vec![first], (None, events, chunks, open)));
            }
            let event = events.next().await?;
            Some((chunks.encode(event), (None, events, chunks, open)))
        },
    )
    .map(|parts| Ok::<_, std::convert::Infallible>(Bytes::from(parts.concat())));
    let mut response = HttpResponse::Ok();
    stored_headers(&mut response, stored);
    response
        .content_type("text/event-stream; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
