//! The OpenAPI document of the `/v1` surface, served at `/v1/openapi.json` and offered in
//! `/docs` next to Arbor's own. Its shapes are OpenAI's (the handlers build them); the doc
//! structs here exist for the document only.
#![allow(dead_code)]

use utoipa::openapi::path::Operation;
use utoipa::{Modify, OpenApi, ToSchema};

/// The `/v1` surface.
#[derive(OpenApi, Debug)]
#[openapi(
    info(
        title = "Arbor — OpenAI-compatible API",
        description = "OpenAI's chat completions and model list for clients built on the OpenAI SDKs. Authenticate with an Arbor personal API key (or access token) as `Authorization: Bearer`. Errors are OpenAI's `{\"error\": {message, type, param, code}}`. `X-Arbor-Chat: new | <chat uuid>` stores the last user message and the answer in that chat of the caller's; without it only the usage record is kept.",
        license(name = "MIT")
    ),
    paths(super::completions::create, super::list, super::get),
    components(schemas(OpenAiErrorBody)),
    modifiers(&OpenAiConventions),
    tags((name = "openai", description = "The OpenAI-compatible surface"))
)]
pub struct OpenAiDoc;

/// OpenAI's error object.
#[derive(ToSchema)]
pub(crate) struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
pub(crate) struct OpenAiErrorDetail {
    /// In words.
    message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[schema(rename = "type")]
    kind: String,
    /// The offending parameter, when one is.
    param: Option<String>,
    /// `model_not_found`, `invalid_api_key`, `rate_limit_exceeded`, `not_found`, …
    code: Option<String>,
}

/// A chat completion request. Fields not listed are refused with a 400 naming them;
/// `tools`, `tool_choice`, `parallel_tool_calls`, `response_format`, `stop`, `top_p`, `seed`,
/// `presence_penalty`, `frequency_penalty`, `logit_bias`, `logprobs`, `top_logprobs`, `user`,
/// `reasoning` and `reasoning_effort` go to the provider as given; `store`, `metadata`,
/// `service_tier`, `prompt_cache_key` and `safety_identifier` are accepted and ignored.
#[derive(ToSchema)]
pub(crate) struct ChatCompletionRequest {
    /// A model of the catalogue (`GET /v1/models`).
    model: String,
    /// The conversation: `{role, content}` objects (`system`, `developer`, `user`,
    /// `assistant`, `tool`); content is a string or an array of parts.
    messages: Vec<serde_json::Value>,
    /// Stream the answer as `chat.completion.chunk` events.
    stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage and no choices.
    stream_options: Option<serde_json::Value>,
    /// 0–2.
    temperature: Option<f64>,
    /// Answer cap (`max_completion_tokens` is the same).
    max_tokens: Option<u32>,
    /// Answer cap.
    max_completion_tokens: Option<u32>,
    /// Only 1.
    n: Option<u32>,
    /// Function tools (forwarded; not with `X-Arbor-Chat`).
    tools: Option<Vec<serde_json::Value>>,
    /// Forwarded.
    tool_choice: Option<serde_json::Value>,
    /// Forwarded (`{"type": "json_object"}` and the like).
    response_format: Option<serde_json::Value>,
}

/// A blocking chat completion.
#[derive(ToSchema)]
pub(crate) struct ChatCompletion {
    /// `chatcmpl-…`.
    id: String,
    /// `chat.completion`.
    object: String,
    /// Unix seconds.
    created: u64,
    model: String,
    /// Exactly one.
    choices: Vec<Choice>,
    usage: Usage,
}

/// The answer.
#[derive(ToSchema)]
pub(crate) struct Choice {
    index: u32,
    /// `{role: "assistant", content, tool_calls?}`.
    message: serde_json::Value,
    /// `stop`, `length`, `tool_calls`, …
    finish_reason: String,
    logprobs: Option<serde_json::Value>,
}

/// Tokens used.
#[derive(ToSchema)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// One event of a streamed completion: `data: {chat.completion.chunk}` (first with the
/// role, then deltas, then one with the finish reason, then — when asked — one with the usage
/// and no choices), `data: {"error": …}` when the answer fails midway, and `data: [DONE]`.
#[derive(ToSchema)]
pub(crate) struct ChatCompletionChunk {
    /// The same for every chunk of one completion.
    id: String,
    /// `chat.completion.chunk`.
    object: String,
    created: u64,
    model: String,
    /// `{index, delta: {role?, content?, tool_calls?}, finish_reason}`; empty in the usage
    /// chunk.
    choices: Vec<serde_json::Value>,
    usage: Option<Usage>,
}

/// The catalogue in OpenAI's list shape.
#[derive(ToSchema)]
pub(crate) struct ModelList {
    /// `list`.
    object: String,
    data: Vec<OpenAiModelDoc>,
}

/// A model.
#[derive(ToSchema)]
pub(crate) struct OpenAiModelDoc {
    id: String,
    /// `model`.
    object: String,
    created: i64,
    /// The id's prefix (`openai` for `openai/gpt-4o-mini`).
    owned_by: String,
}

struct OpenAiConventions;

fn add_errors(op: &mut Operation) {
    let mut standard = vec![
        ("401", "Missing or invalid API key"),
        (
            "404",
            "No such model or route (another user's chat is 404 too)",
        ),
        ("429", "Rate limited; Retry-After says when to try again"),
        ("500", "Unexpected failure (no internals are exposed)"),
        ("503", "A dependency is unavailable"),
    ];
    if op.request_body.is_some() {
        standard.push(("400", "Invalid or unsupported input (`param` names it)"));
        standard.push(("413", "The body is larger than the configured limit"));
        standard.push(("502", "The provider failed"));
        standard.push(("504", "The provider timed out"));
    }
    crate::openapi::add_error_responses(op, &standard, "OpenAiErrorBody");
}

impl Modify for OpenAiConventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        crate::openapi::with_conventions(openapi, "arb_ API key or access token", |_, op| {
            add_errors(op);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_route_is_documented_with_openai_errors() {
        let json = serde_json::to_value(OpenAiDoc::openapi()).unwrap();
        let paths = json["paths"].as_object().unwrap();
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(
            documented,
            ["/v1/chat/completions", "/v1/models", "/v1/models/{id}"]
        );
        let source = include_str!("../openai.rs");
        for route in [
            "\"/chat/completions\"",
            "\"/models\"",
            "\"/models/{id:.+}\"",
        ] {
            assert!(source.contains(route), "{route} is no longer registered");
        }
        let create = &json["paths"]["/v1/chat/completions"]["post"];
        for code in ["400", "401", "404", "429", "502"] {
            assert_eq!(
                create["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/OpenAiErrorBody",
                "{code}"
            );
        }
        assert!(create["responses"]["200"]["content"]["text/event-stream"].is_object());
        assert!(create["responses"]["200"]["content"]["application/json"].is_object());
    }
}
