//! # fake-provider
//!
//! A real HTTP server that speaks the OpenAI / OpenRouter chat protocol: `POST
//! …/chat/completions` (blocking and SSE streaming) and `GET …/models`. Tests, benchmarks
//! and demos use it instead of a paid provider.
//!
//! Behaviour is scripted **per request through the model id**: `fake/any?tokens=20&token_ms=5`.
//! Keys (all optional):
//!
//! | key | effect |
//! |---|---|
//! | `ttft_ms` | delay before the first token |
//! | `token_ms` | delay between tokens |
//! | `ping_ms` | while streaming, an SSE comment every N ms of those delays (as a provider keeps a connection alive while its model thinks) |
//! | `tokens` | number of tokens (`word0 word1 …`), default 8 |
//! | `content` | the exact reply (split into tokens at spaces) |
//! | `status` | answer with this HTTP error status instead (OpenAI-shaped error body) |
//! | `retry_after` | `Retry-After` seconds sent with `status` |
//! | `fail_times` | apply `status` only to the first N requests with this exact model id |
//! | `error_after` | after N tokens, send an in-stream error chunk and end the stream |
//! | `reset_after` | after N tokens, cut the connection (no terminating chunk) |
//! | `end_after` | after N tokens, end the response cleanly with neither a finish reason nor `[DONE]` (a proxy that lost its upstream) |
//! | `garbage` | add SSE comment lines, unknown fields and empty deltas |
//! | `no_usage` | omit the usage block |
//! | `cost` | report this call cost (USD, a decimal) in `usage.cost` (default 0, as a proxy that does not know it) |
//! | `tool_call` | when the request offers tools, answer with a call of the first one (arguments `{"city":"Paris"}`, finish reason `tool_calls`) |
//!
//! It speaks HTTP/1.1 and HTTP/2 over plain TCP (h2c with prior knowledge) on the same port,
//! so a client can carry many streams on one connection.
//!
//! `GET /_stats` reports open connections, in-flight requests (and their peak) and request
//! counts (and how many chat requests came over HTTP/2); `POST /_stats/reset` zeroes the
//! counters; `GET /_requests` returns the chat request bodies received. The model list can be replaced and made to fail from the library API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Counters a test reads to prove connections and requests were released.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections currently open.
    pub open_connections: i64,
    /// Chat requests whose response is not finished (or dropped) yet.
    pub in_flight: i64,
    /// The highest `in_flight` seen since the last reset.
    pub max_in_flight: i64,
    /// Chat completion requests received.
    pub chat_requests: u64,
    /// `/models` requests received.
    pub model_requests: u64,
    /// Chat completion requests that came over HTTP/2.
    #[serde(default)]
    pub http2_chat_requests: u64,
}

#[derive(Debug, Default)]
struct State {
    open_connections: AtomicI64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    chat_requests: AtomicU64,
    model_requests: AtomicU64,
    http2_chat_requests: AtomicU64,
    fail_models: AtomicBool,
    /// When not 0: every chat request answers this HTTP status (the provider is down).
    fail_chats: std::sync::atomic::AtomicU16,
    models: Mutex<Vec<Value>>,
    attempts: Mutex<HashMap<String, u32>>,
    requests: Mutex<Vec<Value>>,
}

/// HTTP/2 streams one connection may carry at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 100_000;

/// Requests remembered for `/_requests`.
const REMEMBERED_REQUESTS: usize = 1_000;

impl State {
    fn stats(&self) -> Stats {
        Stats {
            open_connections: self.open_connections.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            chat_requests: self.chat_requests.load(Ordering::SeqCst),
            model_requests: self.model_requests.load(Ordering::SeqCst),
            http2_chat_requests: self.http2_chat_requests.load(Ordering::SeqCst),
        }
    }
}

/// Decrements `in_flight` when the response is finished or dropped.
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: &Arc<State>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How one request should be answered (parsed from the model id's query part).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Script {
    /// Delay before the first token.
    #[serde(default)]
    pub ttft_ms: u64,
    /// Delay between tokens.
    #[serde(default)]
    pub token_ms: u64,
    /// Number of tokens.
    pub tokens: Option<usize>,
    /// The exact reply.
    pub content: Option<String>,
    /// HTTP error status to answer with.
    pub status: Option<u16>,
    /// `Retry-After` seconds with `status`.
    pub retry_after: Option<u64>,
    /// Apply `status` only to the first N attempts.
    pub fail_times: Option<u32>,
    /// In-stream error after N tokens.
    pub error_after: Option<usize>,
    /// Connection reset after N tokens.
    pub reset_after: Option<usize>,
    /// A clean end of the response, with no finish, after N tokens.
    pub end_after: Option<usize>,
    /// Comments every N ms while a stream waits.
    pub ping_ms: Option<u64>,
    /// Comment lines, unknown fields, empty deltas.
    #[serde(default, deserialize_with = "flag")]
    pub garbage: bool,
    /// Omit usage.
    #[serde(default, deserialize_with = "flag")]
    pub no_usage: bool,
    /// Call the request's first tool instead of answering.
    #[serde(default, deserialize_with = "flag")]
    pub tool_call: bool,
    /// The cost reported in `usage.cost`, as sent (a decimal).
    pub cost: Option<String>,
}

/// `1`, `true` or `yes` (query strings have no booleans).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    Ok(matches!(text.as_str(), "1" | "true" | "yes"))
}

impl Script {
    /// Reads the script from a model id such as `fake/x?tokens=3`.
    #[must_use]
    pub fn from_model(model: &str) -> Self {
        model
            .split_once('?')
            .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default()
    }

    fn tokens(&self) -> Vec<String> {
        match &self.content {
            Some(text) => {
                let mut out = Vec::new();
                let mut first = true;
                for word in text.split(' ') {
                    out.push(if first {
                        word.to_owned()
                    } else {
                        format!(" {word}")
                    });
                    first = false;
                }
                out
            }
            None => (0..self.tokens.unwrap_or(8))
                .map(|i| {
                    if i == 0 {
                        format!("word{i}")
                    } else {
                        format!(" word{i}")
                    }
                })
                .collect(),
        }
    }
}

/// A local port free at the time of asking (nothing listens on it once this returns).
///
/// # Errors
/// When the machine has no free local port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A provider base URL nothing listens on: a provider that is down.
///
/// # Errors
/// When the machine has no free local port.
pub fn unreachable_base_url() -> std::io::Result<String> {
    Ok(format!("http://127.0.0.1:{}/v1", free_port()?))
}

/// The default catalogue: three models with OpenRouter-shaped entries.
#[must_use]
pub fn default_models() -> Vec<Value> {
    vec![
        model_entry("fake/small", "Fake Small", "0.0000001", "0.0000002", 8_192),
        model_entry("fake/large", "Fake Large", "0.000003", "0.000015", 128_000),
        model_entry(
            "openai/gpt-4o-mini",
            "GPT-4o mini (fake)",
            "0.00000015",
            "0.0000006",
            128_000,
        ),
    ]
}

/// One OpenRouter-shaped model entry.
#[must_use]
pub fn model_entry(id: &str, name: &str, prompt: &str, completion: &str, context: u32) -> Value {
    json!({
        "id": id,
        "canonical_slug": id,
        "name": name,
        "created": 1_700_000_000,
        "description": format!("{name}, served by the fake provider."),
        "context_length": context,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": null
        },
        "pricing": {"prompt": prompt, "completion": completion, "request": "0", "image": "0"},
        "top_provider": {"context_length": context, "max_completion_tokens": null, "is_moderated": false},
        "per_request_limits": null,
        "supported_parameters": ["temperature", "max_tokens"]
    })
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn prompt_tokens(request: &Value) -> u64 {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| m["content"].as_str())
                .map(|c| c.split_whitespace().count() as u64)
                .sum()
        })
        .unwrap_or(0)
}

async fn chat(state: Arc<State>, request: Value) -> Response<Body> {
    state.chat_requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut requests = state.requests.lock().unwrap_or_else(|e| e.into_inner());
        if requests.len() >= REMEMBERED_REQUESTS {
            requests.remove(0);
        }
        requests.push(request.clone());
    }
    let guard = InFlight::new(&state);
    let model = request["model"]
        .as_str()
        .unwrap_or("fake/default")
        .to_owned();
    let script = Script::from_model(&model);
    let down = state.fail_chats.load(Ordering::SeqCst);
    if down != 0 {
        let status = StatusCode::from_u16(down).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return full(
            status,
            json!({"error": {"code": down, "message": format!("provider down ({down})")}}),
        );
    }
    if let Some(status) = script.status {
        let attempt = {
            let mut attempts = state.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(model.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if script.fail_times.is_none_or(|times| attempt <= times) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = full(
                status,
                json!({"error": {"code": status.as_u16(), "message": format!("scripted failure {}", status.as_u16())}}),
            );
            if let Some(secs) = script.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from(secs));
            }
            return response;
        }
    }
    let tokens = script.tokens();
    let prompt = prompt_tokens(&request);
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": tokens.len(),
        "total_tokens": prompt + tokens.len() as u64,
        "cost": script
            .cost
            .as_deref()
            .and_then(|c| serde_json::from_str::<serde_json::Number>(c).ok())
            .map_or(json!(0.0), Value::Number)
    });
    let id = format!("gen-{}", state.chat_requests.load(Ordering::SeqCst));
    if let Some(tool) = request["tools"][0]["function"]["name"]
        .as_str()
        .filter(|_| script.tool_call)
    {
        return tool_call(guard, &request, (&id, &model, tool), usage);
    }
    if request["stream"].as_bool() != Some(true) {
        tokio::time::sleep(Duration::from_millis(
            script.ttft_ms + script.token_ms * tokens.len().saturating_sub(1) as u64,
        ))
        .await;
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": tokens.concat()}, "finish_reason": "stop"}],
        });
        if !script.no_usage {
            body["usage"] = usage;
        }
        if script.garbage {
            body["provider"] = json!("FakeUpstream");
            body["choices"][0]["native_finish_reason"] = json!("stop");
        }
        drop(guard);
        return full(StatusCode::OK, body);
    }
    stream_response(guard, script, tokens, id, model, usage)
}

/// A call of `tool` (blocking, or streamed as OpenAI streams tool calls: the id and name
/// first, then the arguments).
fn tool_call(
    guard: InFlight,
    request: &Value,
    (id, model, tool): (&str, &str, &str),
    usage: Value,
) -> Response<Body> {
    const ARGUMENTS: &str = r#"{"city":"Paris"}"#;
    let call = json!({"id": "call_0", "type": "function", "function": {"name": tool, "arguments": ARGUMENTS}});
    if request["stream"].as_bool() != Some(true) {
        drop(guard);
        return full(
            StatusCode::OK,
            json!({
                "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": "tool_calls"}],
                "usage": usage,
            }),
        );
    }
    let opening = json!({"tool_calls": [{"index": 0, "id": "call_0", "type": "function", "function": {"name": tool, "arguments": ""}}]});
    let arguments = json!({"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS}}]});
    let mut last = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    });
    last["usage"] = usage;
    let steps = vec![
        Step::Send(chunk(
            id,
            model,
            &json!({"role": "assistant", "content": null}),
            None,
            false,
        )),
        Step::Send(chunk(id, model, &opening, None, false)),
        Step::Send(chunk(id, model, &arguments, None, false)),
        Step::Send(format!("data: {last}\n\n")),
        Step::Send("data: [DONE]\n\n".into()),
    ];
    sse(guard, steps)
}

enum Step {
    Wait(Duration),
    Send(String),
    Reset,
}

fn chunk(id: &str, model: &str, delta: &Value, finish: Option<&str>, garbage: bool) -> String {
    let mut c = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    if garbage {
        c["provider"] = json!("FakeUpstream");
        c["choices"][0]["native_finish_reason"] = json!(finish);
        c["choices"][0]["logprobs"] = Value::Null;
    }
    format!("data: {c}\n\n")
}

fn stream_response(
    guard: InFlight,
    script: Script,
    tokens: Vec<String>,
    id: String,
    model: String,
    usage: Value,
) -> Response<Body> {
    let mut steps = Vec::new();
    if script.garbage {
        steps.push(Step::Send(": OPENROUTER PROCESSING\n\n".into()));
    }
    wait(&mut steps, script.ttft_ms, script.ping_ms);
    steps.push(Step::Send(chunk(
        &id,
        &model,
        &json!({"role": "assistant", "content": ""}),
        None,
        script.garbage,
    )));
    for (i, token) in tokens.iter().enumerate() {
        if script.error_after == Some(i) {
            let mut c = json!({
                "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                "error": {"code": 502, "message": "scripted upstream error"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            });
            c["provider"] = json!("FakeUpstream");
            steps.push(Step::Send(format!("data: {c}\n\n")));
            return sse(guard, steps);
        }
        if script.reset_after == Some(i) {
            // Let what was sent so far reach the client first: a reset *mid*-stream.
            steps.push(Step::Wait(Duration::from_millis(50)));
            steps.push(Step::Reset);
            return sse(guard, steps);
        }
        if script.end_after == Some(i) {
            return sse(guard, steps);
        }
        if i > 0 {
            wait(&mut steps, script.token_ms, script.ping_ms);
        }
        if script.garbage && i == 1 {
            steps.push(Step::Send(": keep-alive comment\n\n".into()));
            steps.push(Step::Send(chunk(&id, &model, &json!({}), None, true)));
        }
        steps.push(Step::Send(chunk(
            &id,
            &model,
            &json!({"content": token}),
            None,
            script.garbage,
        )));
    }
    let mut last = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
    });
    if !script.no_usage {
        last["usage"] = usage;
    }
    steps.push(Step::Send(format!("data: {last}\n\n")));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    sse(guard, steps)
}

/// Waits `ms`, sending an SSE comment every `ping` ms meanwhile when asked.
fn wait(steps: &mut Vec<Step>, ms: u64, ping: Option<u64>) {
    let mut left = ms;
    if let Some(every) = ping.filter(|p| *p > 0) {
        while left > every {
            steps.push(Step::Wait(Duration::from_millis(every)));
            steps.push(Step::Send(": PROCESSING\n\n".into()));
            left -= every;
        }
    }
    steps.push(Step::Wait(Duration::from_millis(left)));
}

fn sse(guard: InFlight, steps: Vec<Step>) -> Response<Body> {
    let stream = futures::stream::unfold(
        (steps.into_iter(), Some(guard)),
        |(mut steps, mut guard)| async move {
            loop {
                match steps.next() {
                    Some(Step::Wait(d)) => {
                        if !d.is_zero() {
                            tokio::time::sleep(d).await;
                        }
                    }
                    Some(Step::Send(text)) => {
                        return Some((Ok(Frame::data(Bytes::from(text))), (steps, guard)));
                    }
                    Some(Step::Reset) => {
                        guard.take();
                        return Some((
                            Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "scripted reset",
                            )),
                            (steps, None),
                        ));
                    }
                    None => {
                        guard.take();
                        return None;
                    }
                }
            }
        },
    );
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    response
}

async fn route(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let response = if method == Method::POST && path.ends_with("/chat/completions") {
        if request.version() == hyper::Version::HTTP_2 {
            state.http2_chat_requests.fetch_add(1, Ordering::SeqCst);
        }
        match request.into_body().collect().await {
            Ok(body) => match serde_json::from_slice::<Value>(&body.to_bytes()) {
                Ok(json) => chat(state, json).await,
                Err(e) => full(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"code": 400, "message": e.to_string()}}),
                ),
            },
            Err(e) => full(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": 400, "message": e.to_string()}}),
            ),
        }
    } else if method == Method::GET && path.ends_with("/models") {
        state.model_requests.fetch_add(1, Ordering::SeqCst);
        if state.fail_models.load(Ordering::SeqCst) {
            full(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": {"code": 500, "message": "models unavailable"}}),
            )
        } else {
            let models = state
                .models
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            full(StatusCode::OK, json!({"data": models}))
        }
    } else if method == Method::GET && path == "/_stats" {
        full(StatusCode::OK, json!(state.stats()))
    } else if method == Method::POST && path == "/_stats/reset" {
        state.chat_requests.store(0, Ordering::SeqCst);
        state.model_requests.store(0, Ordering::SeqCst);
        state.http2_chat_requests.store(0, Ordering::SeqCst);
        state
            .max_in_flight
            .store(state.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        full(StatusCode::OK, json!(state.stats()))
    } else if method == Method::GET && path == "/_requests" {
        let requests = state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        full(StatusCode::OK, json!(requests))
    } else {
        full(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": 404, "message": "not found"}}),
        )
    };
    Ok(response)
}

/// Reads a running provider's counters (see [`FakeProvider::stats_probe`]).
#[derive(Debug, Clone)]
pub struct StatsProbe(Arc<State>);

impl StatsProbe {
    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }
}

/// A running fake provider.
#[derive(Debug)]
pub struct FakeProvider {
    address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Starts on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts on `address`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(address: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State::default());
        *state.models.lock().unwrap_or_else(|e| e.into_inner()) = default_models();
        let accept_state = Arc::clone(&state);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true);
        // Enough streams per connection for the benchmarks' ten thousand.
        builder
            .http2()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&accept_state);
                state.open_connections.fetch_add(1, Ordering::SeqCst);
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service_state = Arc::clone(&state);
                    let service = service_fn(move |req| route(Arc::clone(&service_state), req));
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    state.open_connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    /// The address it listens on.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL to configure as the provider (`http://127.0.0.1:PORT/api/v1`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.address)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// A handle that reads the counters from anywhere, also from synchronous code.
    #[must_use]
    pub fn stats_probe(&self) -> StatsProbe {
        StatsProbe(Arc::clone(&self.state))
    }

    /// The chat request bodies received, oldest first (at most the last 1,000).
    #[must_use]
    pub fn requests(&self) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the model list served by `/models`.
    pub fn set_models(&self, models: Vec<Value>) {
        *self.state.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
    }

    /// Makes every chat request answer `status` (or, with `None`, serve again).
    pub fn fail_chats(&self, status: Option<u16>) {
        self.state
            .fail_chats
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Makes `/models` answer 500 (or recover).
    pub fn fail_models(&self, fail: bool) {
        self.state.fail_models.store(fail, Ordering::SeqCst);
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}
