//! Streamed answers over SSE, the generation registry (status, cancel, re-attach, caps,
//! deadline), the disconnect policies and background titles, on every backend.

use infra_db::{on_every_backend, or_skip};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use infra_db::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, generation_of, test_settings};

/// Scripts `model`, then registers alice and opens a chat of hers: her token and the chat.
async fn alice_chat(app: &TestApp, model: &str) -> (String, String) {
    app.script_models(&[model]);
    let token = app.user_token("alice").await;
    let chat = app.new_chat(&token).await;
    (token, chat)
}

/// Asks `question` of `model` in `chat`, streamed.
async fn ask_streamed(
    app: &TestApp,
    token: &str,
    chat: &str,
    question: &str,
    model: &str,
) -> reqwest::Response {
    open_stream(
        app,
        token,
        chat,
        json!({"content": question, "model_id": model}),
    )
    .await
}

async fn open_stream(app: &TestApp, token: &str, chat: &str, body: Value) -> reqwest::Response {
    app.post_json_as(
        &format!("/api/v1/chats/{chat}/messages/stream"),
        token,
        &body,
    )
    .await
}

/// Every event of a finished stream, and its raw text (comments included).
async fn read_all(response: reqwest::Response) -> (Vec<Event>, String) {
    let raw = response.text().await.unwrap();
    let bytes = raw.clone().into_bytes();
    let events = futures::stream::iter([Ok::<_, std::io::Error>(bytes)])
        .eventsource()
        .map(|e| e.unwrap())
        .collect()
        .await;
    (events, raw)
}

fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).unwrap_or(Value::Null)
}

fn deltas(events: &[Event]) -> String {
    events
        .iter()
        .map(data)
        .filter(|d| d["type"] == "chunk")
        .map(|d| d["delta"].as_str().unwrap().to_owned())
        .collect()
}

/// The stored messages of a chat, by uuid.
async fn message(app: &TestApp, token: &str, chat: &str, uuid: &str) -> Value {
    let tree: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/complete"), token)
        .await;
    tree["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["uuid"] == uuid)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A blocking send that must succeed.
async fn send_ok(app: &TestApp, token: &str, chat: &str, body: Value) {
    assert_eq!(app.send_message(chat, token, &body).await.status(), 201);
}

/// `token` sees none of `chat`'s generation routes: status, re-attach and cancel are 404.
async fn generation_routes_answer_404(app: &TestApp, chat: &str, token: &str) {
    for path in ["generation", "generation/stream"] {
        let r = app
            .get_as(&format!("/api/v1/chats/{chat}/{path}"), token)
            .await;
        crate::helpers::assert_envelope(r, 404, "not_found").await;
    }
    let r = app.cancel_generation(chat, token).await;
    crate::helpers::assert_envelope(r, 404, "not_found").await;
}

async fn a_streamed_answer_arrives_in_order_and_is_stored(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/stream?tokens=12&token_ms=20";
    let (token, chat) = alice_chat(&app, model).await;

    let response = ask_streamed(&app, &token, &chat, "Tell me a story", model).await;
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    let (events, _) = read_all(response).await;

    let ids: Vec<u64> = events.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!(
        ids,
        (0..events.len() as u64).collect::<Vec<_>>(),
        "ids 0, 1, 2, …"
    );
    let types: Vec<Value> = events.iter().map(|e| data(e)["type"].clone()).collect();
    // Deltas that arrive together share a chunk (the first ones may arrive while the
    // question is still being committed); with 20 ms between tokens most do not.
    let n = events.len();
    assert_eq!(types[0], "start");
    assert!(n >= 2 + 2, "start, chunks, final, [DONE]: {types:?}");
    assert!(types[1..n - 2].iter().all(|t| t == "chunk"), "{types:?}");
    assert_eq!(types[n - 2], "final");
    assert_eq!(events[n - 1].data, "[DONE]");

    let start = data(&events[0]);
    let last = data(&events[n - 2]);
    assert_eq!(start["message_uuid"], last["message_uuid"]);
    assert_eq!(last["model"], model);
    assert_eq!(last["finish_reason"], "stop");
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let text = deltas(&events);
    assert_eq!(
        text, last["content"],
        "deltas concatenate to the final content"
    );
    assert!(
        text.starts_with("word0 word1"),
        "deltas, not accumulated text: {text}"
    );

    let answer_uuid = last["message_uuid"].as_str().unwrap();
    let stored = message(&app, &token, &chat, answer_uuid).await;
    assert_eq!(stored["content"], last["content"]);
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["parent_uuid"], start["user_message_uuid"]);
    let question = message(
        &app,
        &token,
        &chat,
        start["user_message_uuid"].as_str().unwrap(),
    )
    .await;
    assert_eq!(question["content"], "Tell me a story");
    let branch: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/messages"), &token)
        .await;
    let branch = branch.as_array().unwrap().clone();
    assert_eq!(
        branch.last().unwrap()["uuid"],
        answer_uuid,
        "the answer is the current leaf"
    );
    let (prompt, completion, cost, finish) = generation_of(&app, &last["message_uuid"]).await;
    assert_eq!(
        (prompt + completion) as u64,
        last["usage"]["total_tokens"].as_u64().unwrap()
    );
    assert!(cost > 0, "cost from the catalogue's prices");
    assert_eq!(finish.as_deref(), Some("stop"));

    // A streamed retry answers the same question again, as a sibling.
    let retry = app
        .client
        .post(app.url(&format!(
            "/api/v1/chats/{chat}/messages/{answer_uuid}/retry/stream"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    let (events, _) = read_all(retry).await;
    let again = data(&events[events.len() - 2]);
    assert_eq!(again["type"], "final");
    let sibling = message(&app, &token, &chat, again["message_uuid"].as_str().unwrap()).await;
    assert_eq!(sibling["parent_uuid"], start["user_message_uuid"]);
    app.finish().await;
}

/// `PATCH …/messages/{mid}/stream`: the edited question is a new branch and its answer
/// streams, with the request's model.
async fn an_edited_question_streams_its_answer_on_a_new_branch(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("editor").await;
    let chat = app.new_chat(&token).await;
    send_ok(&app, &token, &chat, json!({"content": "first try"})).await;
    let tree = app
        .get_json_as(&format!("/api/v1/chats/{chat}/tree"), &token)
        .await;
    let nodes = tree["nodes"].as_array().unwrap();
    let question = nodes.iter().find(|n| n["role"] == "user").unwrap().clone();
    let answer = nodes
        .iter()
        .find(|n| n["role"] == "assistant")
        .unwrap()
        .clone();
    let q = question["uuid"].as_str().unwrap();

    let response = app
        .patch_json_as(
            &format!("/api/v1/chats/{chat}/messages/{q}/stream"),
            &token,
            &json!({"content": "second try", "model_id": "fake/large"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (events, _) = read_all(response).await;
    let start = data(&events[0]);
    assert_eq!(start["type"], "start");
    let new_question = start["user_message_uuid"].as_str().unwrap().to_owned();
    assert_ne!(new_question, q);
    assert_eq!(start["model"], "fake/large");
    assert_eq!(
        deltas(&events),
        "word0 word1 word2 word3 word4 word5 word6 word7"
    );
    assert_eq!(app.last_answer_request()["model"], "fake/large");

    let stored = message(&app, &token, &chat, &new_question).await;
    assert_eq!(stored["content"], "second try");
    assert_eq!(stored["parent_uuid"], question["parent_uuid"], "a sibling");
    let tree = app
        .get_json_as(&format!("/api/v1/chats/{chat}/tree"), &token)
        .await;
    assert_eq!(tree["current_leaf_uuid"], start["message_uuid"]);
    assert_eq!(
        tree["nodes"].as_array().unwrap().len(),
        5,
        "both branches kept"
    );

    // Only questions are edited and answered again; other users' chats are not found.
    let a = answer["uuid"].as_str().unwrap();
    let on_answer = app
        .patch_json_as(
            &format!("/api/v1/chats/{chat}/messages/{a}/stream"),
            &token,
            &json!({"content": "no"}),
        )
        .await;
    assert_eq!(on_answer.status(), 422);
    let stranger = app.user_token("stranger").await;
    let foreign = app
        .patch_json_as(
            &format!("/api/v1/chats/{chat}/messages/{q}/stream"),
            &stranger,
            &json!({"content": "mine now"}),
        )
        .await;
    assert_eq!(foreign.status(), 404);
    app.finish().await;
}

/// An in-stream error, or a response that just stops (no finish, no `[DONE]`), keeps the
/// partial answer as failed.
async fn a_provider_error_mid_stream_keeps_the_partial_answer_as_failed(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let models = [
        "fake/breaks?tokens=10&error_after=4",
        "fake/stops?tokens=10&end_after=4",
    ];
    app.script_models(&models);
    let token = app.user_token("alice").await;
    for model in models {
        let chat = app.new_chat(&token).await;
        let response = ask_streamed(&app, &token, &chat, "hi", model).await;
        assert_eq!(response.status(), 200);
        let (events, _) = read_all(response).await;
        let types: Vec<Value> = events.iter().map(|e| data(e)["type"].clone()).collect();
        let n = events.len();
        assert_eq!(types[0], "start");
        assert!(n >= 4, "{types:?}");
        assert!(types[1..n - 2].iter().all(|t| t == "chunk"), "{types:?}");
        let error = data(&events[n - 2]);
        assert_eq!(error["type"], "error");
        assert_eq!(error["error_type"], "provider_error", "{model}");
        assert_eq!(error["retry_available"], true);
        assert!(error["message"].is_string());
        assert_eq!(events[n - 1].data, "[DONE]");

        let answer = data(&events[0])["message_uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let stored = message(&app, &token, &chat, &answer).await;
        assert_eq!(stored["status"], "failed", "{model}");
        assert_eq!(
            stored["content"],
            deltas(&events),
            "the partial text is kept"
        );
        assert_eq!(stored["content"], "word0 word1 word2 word3");
    }
    app.finish().await;
}

async fn a_slow_stream_gets_ping_comments(backend: Backend) {
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.ping_interval_ms = 50;
    }));
    let model = "fake/slow?ttft_ms=400&tokens=2";
    let (token, chat) = alice_chat(&app, model).await;
    let response = ask_streamed(&app, &token, &chat, "hi", model).await;
    let (events, raw) = read_all(response).await;
    assert!(
        raw.matches(": ping\n\n").count() >= 3,
        "pings while the provider is silent: {raw}"
    );
    assert_eq!(events.last().unwrap().data, "[DONE]");
    app.finish().await;
}

async fn errors_before_the_stream_are_plain_http_errors(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let chat = app.new_chat(&alice).await;
    let foreign = open_stream(&app, &bob, &chat, json!({"content": "hi"})).await;
    crate::helpers::assert_envelope(foreign, 404, "not_found").await;
    let blank = open_stream(&app, &alice, &chat, json!({"content": "  "})).await;
    crate::helpers::assert_envelope(blank, 422, "validation_error").await;
    let unknown = open_stream(
        &app,
        &alice,
        &chat,
        json!({"content": "hi", "model_id": "no/such"}),
    )
    .await;
    crate::helpers::assert_envelope(unknown, 422, "validation_error").await;
    let no_auth = app
        .post_json(
            &format!("/api/v1/chats/{chat}/messages/stream"),
            &json!({"content": "hi"}),
        )
        .await;
    crate::helpers::assert_envelope(no_auth, 401, "unauthenticated").await;
    generation_routes_answer_404(&app, &chat, &bob).await;
    // Nothing runs: the owner's cancel is a 404 too.
    let r = app.cancel_generation(&chat, &alice).await;
    crate::helpers::assert_envelope(r, 404, "not_found").await;
    let none = app
        .get_as(&format!("/api/v1/chats/{chat}/generation"), &alice)
        .await;
    crate::helpers::assert_envelope(none, 404, "not_found").await;
    app.finish().await;
}

/// Opens a long stream and reads its first `n` events.
async fn open_and_read(
    app: &TestApp,
    token: &str,
    chat: &str,
    model: &str,
    n: usize,
) -> (
    Vec<Event>,
    impl futures::Stream<Item = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>>
    + use<>,
) {
    let response = ask_streamed(app, token, chat, "go", model).await;
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream().eventsource());
    let mut seen = Vec::new();
    while seen.len() < n {
        seen.push(
            stream
                .next()
                .await
                .expect("an event")
                .expect("a valid event"),
        );
    }
    (seen, stream)
}

/// Counts stored answers by status with one query.
async fn answers_by_status(app: &TestApp) -> std::collections::HashMap<String, (usize, usize)> {
    use sea_orm::ConnectionTrait;
    let db = app.db.raw().await;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT status, content FROM messages WHERE role = 'assistant'",
        ))
        .await
        .unwrap();
    let _ = db.close().await;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let status: String = row.try_get("", "status").unwrap();
        let content: String = row.try_get("", "content").unwrap();
        let e = out.entry(status).or_insert((0, 0));
        e.0 += 1;
        e.1 += usize::from(!content.is_empty());
    }
    out
}

/// How Arbor talks to the provider in [`disconnects`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// A connection per call, none kept idle: every open connection is one in use.
    Http1,
    /// HTTP/2 without negotiation: all calls share one connection; a cancelled call resets
    /// its stream.
    H2c,
}

async fn disconnects(backend: Backend, cancel: bool, upstream: Upstream) {
    const STREAMS: usize = 200;
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.on_client_disconnect = if cancel {
            arbor::config::OnClientDisconnect::Cancel
        } else {
            arbor::config::OnClientDisconnect::Finish
        };
        settings.generation.per_user_limit = STREAMS;
        settings.llm.max_concurrent_requests = STREAMS;
        // No idle keep-alive: every provider connection open is one in use.
        settings.llm.pool_max_idle_per_host = 0;
        settings.llm.http2_prior_knowledge = upstream == Upstream::H2c;
    }));
    let app = Arc::new(app);
    // Under `cancel` the answer would take 10 s, so only the cancellation can end it in time.
    let model = if cancel {
        "fake/long?tokens=400&token_ms=25"
    } else {
        "fake/long?tokens=60&token_ms=25"
    };
    app.script_models(&[model]);
    let token = app.user_token("alice").await;
    let mut chats = Vec::new();
    for _ in 0..STREAMS {
        chats.push(app.new_chat(&token).await);
    }
    // Over h2c the shared connections (one for streams, one for blocking calls) may stay
    // open; their streams may not.
    let baseline = if upstream == Upstream::H2c {
        app.fake.stats().open_connections.max(2)
    } else {
        app.fake.stats().open_connections
    };

    let mut clients = tokio::task::JoinSet::new();
    for chat in chats {
        let (app, token) = (Arc::clone(&app), token.clone());
        clients.spawn(async move {
            let (seen, stream) = open_and_read(&app, &token, &chat, model, 3).await;
            drop(stream); // the client goes away mid-answer
            assert_eq!(data(&seen[1])["type"], "chunk");
        });
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let gone = Instant::now();
    if upstream == Upstream::H2c {
        let s = app.fake.stats();
        assert_eq!(s.http2_chat_requests, STREAMS as u64, "{s:?}");
    }

    if cancel {
        let released = eventually(Duration::from_secs(1), || async {
            let s = app.fake.stats();
            s.open_connections <= baseline && s.in_flight == 0
        })
        .await;
        assert!(
            released,
            "provider connections back to baseline within 1 s of the disconnects: {:?} (baseline {baseline})",
            app.fake.stats()
        );
        tracing::info!(elapsed_ms = gone.elapsed().as_millis() as u64, "released");
        assert!(
            eventually(Duration::from_secs(10), || async {
                answers_by_status(&app)
                    .await
                    .get("interrupted")
                    .map(|c| c.0)
                    == Some(STREAMS)
            })
            .await,
            "{:?}",
            answers_by_status(&app).await
        );
        let counts = answers_by_status(&app).await;
        assert_eq!(
            counts["interrupted"],
            (STREAMS, STREAMS),
            "all with partial text"
        );
    } else {
        assert!(
            eventually(Duration::from_secs(30), || async {
                answers_by_status(&app).await.get("complete").map(|c| c.0) == Some(STREAMS)
            })
            .await,
            "{:?}",
            answers_by_status(&app).await
        );
        assert!(
            eventually(Duration::from_secs(2), || async {
                let s = app.fake.stats();
                s.open_connections <= baseline && s.in_flight == 0
            })
            .await,
            "{:?}",
            app.fake.stats()
        );
        assert_eq!(
            answers_by_status(&app).await.len(),
            1,
            "nothing but complete answers"
        );
    }
    Arc::try_unwrap(app).ok().unwrap().finish().await;
}

async fn two_hundred_disconnects_under_cancel_release_everything(backend: Backend) {
    disconnects(backend, true, Upstream::Http1).await;
}

async fn two_hundred_disconnects_over_h2c_under_cancel_reset_every_upstream_stream(
    backend: Backend,
) {
    disconnects(backend, true, Upstream::H2c).await;
}

async fn two_hundred_disconnects_under_finish_complete_everything(backend: Backend) {
    disconnects(backend, false, Upstream::Http1).await;
}

async fn cancel_stops_the_generation_and_keeps_the_partial_text(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=200&token_ms=20";
    let (token, chat) = alice_chat(&app, model).await;
    let (mut seen, mut stream) = open_and_read(&app, &token, &chat, model, 4).await;
    let status: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/generation"), &token)
        .await;
    assert_eq!(status["running"], true);
    // The same shape as the cancel route's answer.
    assert_eq!(status["message_uuid"], data(&seen[0])["message_uuid"]);

    let cancelled = app.cancel_generation(&chat, &token).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["running"], false);
    assert_eq!(cancelled["outcome"], "interrupted");
    while let Some(e) = stream.next().await {
        seen.push(e.unwrap());
    }
    let n = seen.len();
    let error = data(&seen[n - 2]);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error_type"], "cancelled");
    assert_eq!(seen[n - 1].data, "[DONE]");
    let answer = data(&seen[0])["message_uuid"].as_str().unwrap().to_owned();
    let stored = message(&app, &token, &chat, &answer).await;
    assert_eq!(stored["status"], "interrupted");
    assert_eq!(
        stored["content"],
        deltas(&seen),
        "exactly what the client saw"
    );
    assert!(deltas(&seen).split(' ').count() < 200, "it stopped early");
    // The provider reported no usage for the call it did not finish: what it used is
    // estimated from the text, so a cancelled answer still counts.
    let used = &stored["generation"];
    assert_eq!(used["cost_source"], "estimate", "{used}");
    assert_eq!(
        used["completion_tokens"],
        deltas(&seen).len().div_ceil(4),
        "{used}"
    );
    assert_eq!(used["prompt_tokens"], "go".len().div_ceil(4), "{used}");
    assert!(
        eventually(Duration::from_secs(1), || async {
            app.fake.stats().in_flight == 0
        })
        .await,
        "the provider request ends with the cancel"
    );
    // The chat stays usable; the interrupted answer can be answered again.
    let again = app
        .post_json_as(
            &format!("/api/v1/chats/{chat}/messages/{answer}/retry"),
            &token,
            &json!({"model_id": "fake/small"}),
        )
        .await;
    assert_eq!(again.status(), 201);
    let r = app.cancel_generation(&chat, &token).await;
    crate::helpers::assert_envelope(r, 404, "not_found").await;
    app.finish().await;
}

/// Reads a stream to its end and asserts it ended as cancelled.
async fn ends_cancelled(
    stream: impl futures::Stream<
        Item = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>,
    >,
) {
    let rest: Vec<Event> = stream.map(Result::unwrap).collect().await;
    let n = rest.len();
    assert_eq!(data(&rest[n - 2])["error_type"], "cancelled", "{rest:?}");
    assert_eq!(rest[n - 1].data, "[DONE]");
}

/// Deleting the chat an answer streams into, or the subtree it stands in, stops the provider
/// call (and frees the slot); the answer's record stays, detached: what it used still counts.
async fn deleting_what_an_answer_streams_into_stops_it_and_keeps_its_record(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=200&token_ms=20";
    let (token, chat) = alice_chat(&app, model).await;
    let answers = || app.db.count("generations", Some(("kind", "answer".into())));
    let (_, stream) = open_and_read(&app, &token, &chat, model, 4).await;
    let deleted = app
        .delete_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(deleted.status(), 204);
    ends_cancelled(stream).await;
    let upstream_closed = || async { app.fake.stats().in_flight == 0 };
    assert!(eventually(Duration::from_secs(2), upstream_closed).await);
    assert_eq!(
        answers().await,
        1,
        "the deleted chat's answer keeps its record"
    );

    let chat = app.new_chat(&token).await;
    let (seen, stream) = open_and_read(&app, &token, &chat, model, 4).await;
    let question = data(&seen[0])["user_message_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let removed = app
        .delete_as(&format!("/api/v1/chats/{chat}/messages/{question}"), &token)
        .await;
    assert_eq!(removed.status(), 204);
    ends_cancelled(stream).await;
    assert!(eventually(Duration::from_secs(2), upstream_closed).await);
    assert_eq!(answers().await, 2, "the removed answer keeps its record");
    let left: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(left["message_count"], 1, "only the root is left: {left}");
    assert_eq!(left["current_leaf_uuid"], left["root_message_uuid"]);
    app.finish().await;
}

async fn reattaching_replays_exactly_the_missed_events(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=40&token_ms=15";
    let (token, chat) = alice_chat(&app, model).await;
    let (first, stream) = open_and_read(&app, &token, &chat, model, 6).await;
    drop(stream); // ids 0..=5 seen, then the connection drops
    assert_eq!(first[5].id, "5");

    let resumed = app
        .client
        .get(app.url(&format!("/api/v1/chats/{chat}/generation/stream")))
        .bearer_auth(&token)
        .header("Last-Event-ID", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let (rest, _) = read_all(resumed).await;
    let ids: Vec<u64> = rest.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!(ids[0], 6, "no duplicates");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gaps: {ids:?}");
    let last = data(&rest[rest.len() - 2]);
    assert_eq!(last["type"], "final");
    let mut all = first.clone();
    all.extend(rest);
    assert_eq!(deltas(&all), last["content"]);

    // After the end it stays attachable for a while: a full replay from the start.
    let replay = app
        .get_as(&format!("/api/v1/chats/{chat}/generation/stream"), &token)
        .await;
    let (replayed, _) = read_all(replay).await;
    assert_eq!(replayed.len(), all.len());
    assert_eq!(deltas(&replayed), last["content"]);
    let bad = app
        .client
        .get(app.url(&format!("/api/v1/chats/{chat}/generation/stream")))
        .bearer_auth(&token)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_envelope(bad, 422, "validation_error").await;
    app.finish().await;
}

async fn caps_refuse_the_extra_generation_with_retry_after(backend: Backend) {
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.per_user_limit = 2;
    }));
    let model = "fake/long?tokens=200&token_ms=20";
    app.script_models(&[model]);
    let token = app.user_token("alice").await;
    let other = app.user_token("bob").await;
    let (a, b, c) = (
        app.new_chat(&token).await,
        app.new_chat(&token).await,
        app.new_chat(&token).await,
    );
    let (_, _sa) = open_and_read(&app, &token, &a, model, 1).await;
    let busy_chat = open_stream(
        &app,
        &token,
        &a,
        json!({"content": "again", "model_id": model}),
    )
    .await;
    crate::helpers::assert_envelope(busy_chat, 409, "conflict").await;
    let (_, _sb) = open_and_read(&app, &token, &b, model, 1).await;

    let third = open_stream(
        &app,
        &token,
        &c,
        json!({"content": "one more", "model_id": model}),
    )
    .await;
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    crate::helpers::assert_envelope(third, 429, "rate_limited").await;
    let blocking = app.send_message(&c, &token, &json!({"content": "x"})).await;
    crate::helpers::assert_envelope(blocking, 429, "rate_limited").await;
    let before: Value = app.get_json_as(&format!("/api/v1/chats/{c}"), &token).await;
    assert_eq!(before["message_count"], 1, "a refused send stores nothing");

    // Another user is not affected; a freed slot is usable again.
    let bobs = app.new_chat(&other).await;
    let (_, _sbob) = open_and_read(&app, &other, &bobs, model, 1).await;
    let r = app.cancel_generation(&a, &token).await;
    assert_eq!(r.status(), 200);
    let (_, _sc) = open_and_read(&app, &token, &c, model, 1).await;
    app.finish().await;
}

async fn the_deadline_ends_a_stuck_generation(backend: Backend) {
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.deadline_secs = 1;
    }));
    let model = "fake/stuck?tokens=3&token_ms=5000";
    let (token, chat) = alice_chat(&app, model).await;
    let started = Instant::now();
    let response = ask_streamed(&app, &token, &chat, "hi", model).await;
    let (events, _) = read_all(response).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let error = data(&events[events.len() - 2]);
    assert_eq!(error["error_type"], "generation_timeout");
    let answer = data(&events[0])["message_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = message(&app, &token, &chat, &answer).await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["content"], "word0", "the partial text is kept");
    app.finish().await;
}

/// The chat's title, once it is set (or `None` after `limit`).
async fn title_after(app: &TestApp, token: &str, chat: &str, limit: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        let c: Value = app
            .get_json_as(&format!("/api/v1/chats/{chat}"), token)
            .await;
        if c["title"] != "Untitled Chat" {
            return c["title"].as_str().map(str::to_owned);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn title_requests(app: &TestApp) -> Vec<String> {
    app.fake
        .requests()
        .iter()
        .filter(|r| r["model"].as_str().unwrap_or("").starts_with("fake/title"))
        .map(|r| r["messages"][0]["content"].as_str().unwrap().to_owned())
        .collect()
}

async fn with_title_model(backend: Backend, title_model: &str) -> Option<TestApp> {
    TestApp::spawn_tuned(backend, |settings| {
        settings.generation.title_model = title_model.to_owned();
    })
    .await
}

async fn titles_are_written_in_the_background_in_the_conversation_language(backend: Backend) {
    let Some(app) = with_title_model(
        backend,
        "fake/title?ttft_ms=5000&content=Title:%20%22Trip%20planning%22",
    )
    .await
    else {
        return;
    };
    let japanese_model = "fake/ja?content=%E3%81%AF%E3%81%84%E3%80%81%E8%A8%88%E7%94%BB%E3%81%97%E3%81%BE%E3%81%97%E3%82%87%E3%81%86";
    app.script_models(&[japanese_model]);
    let token = app.user_token("alice").await;
    let chat = app.new_chat(&token).await;
    let started = Instant::now();
    let response = open_stream(
        &app,
        &token,
        &chat,
        json!({"content": "Plan a trip to Kyoto"}),
    )
    .await;
    let (events, _) = read_all(response).await;
    assert_eq!(data(&events[events.len() - 2])["type"], "final");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the final event does not wait for the 5 s title call: {:?}",
        started.elapsed()
    );
    assert_eq!(
        title_after(&app, &token, &chat, Duration::from_secs(15))
            .await
            .as_deref(),
        Some("Trip planning"),
        "prefix and quotes removed"
    );
    let prompts = title_requests(&app);
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains("User: Plan a trip to Kyoto"),
        "{}",
        prompts[0]
    );
    assert!(prompts[0].ends_with("Title:"));

    // A Japanese conversation gets a Japanese prompt; a second answer does not retitle.
    let ja = app.new_chat(&token).await;
    send_ok(
        &app,
        &token,
        &ja,
        json!({"content": "京都旅行の計画を立ててください", "model_id": japanese_model}),
    )
    .await;
    assert!(
        title_after(&app, &token, &ja, Duration::from_secs(15))
            .await
            .is_some()
    );
    let prompts = title_requests(&app);
    assert!(prompts[1].ends_with("タイトル:"), "{}", prompts[1]);
    send_ok(&app, &token, &ja, json!({"content": "もう一つ"})).await;
    // A title call would have reached the provider long before a later chat's did.
    let later = app.new_chat(&token).await;
    send_ok(&app, &token, &later, json!({"content": "hello"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            title_requests(&app).len() == 3
        })
        .await
    );
    let prompts = title_requests(&app);
    assert!(
        !prompts.iter().any(|p| p.contains("もう一つ")),
        "only the first answer is titled: {prompts:?}"
    );
    app.finish().await;
}

async fn a_failed_title_call_falls_back_to_the_first_question(backend: Backend) {
    let app = or_skip!(with_title_model(backend, "fake/title-down?status=400"));
    let token = app.user_token("alice").await;
    let chat = app.new_chat(&token).await;
    // A failing title call never breaks the chat: the send succeeds.
    send_ok(
        &app,
        &token,
        &chat,
        json!({"content": "  Hello world how are you  "}),
    )
    .await;
    assert_eq!(
        title_after(&app, &token, &chat, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("Hello world how are you")
    );
    app.finish().await;
}

async fn a_user_title_is_never_overwritten(backend: Backend) {
    let Some(app) = with_title_model(backend, "fake/title?ttft_ms=2000&content=Generated").await
    else {
        return;
    };
    let token = app.user_token("alice").await;
    // Set before the first answer: no title call at all.
    let named = app
        .post_json_as("/api/v1/chats", &token, &json!({"title": "Mine"}))
        .await;
    let named: Value = named.json().await.unwrap();
    let named = named["uuid"].as_str().unwrap();
    send_ok(&app, &token, named, json!({"content": "hi"})).await;
    // Set while the title call is in flight: the generated title loses.
    let chat = app.new_chat(&token).await;
    send_ok(&app, &token, &chat, json!({"content": "hi"})).await;
    // The title call is at the provider (which answers after 2 s) when the user renames.
    assert!(
        eventually(Duration::from_secs(3), || async {
            title_requests(&app).len() == 1
        })
        .await
    );
    let renamed_at = Instant::now();
    let patched = app
        .patch_json_as(
            &format!("/api/v1/chats/{chat}"),
            &token,
            &json!({"title": "My own"}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert!(
        renamed_at.elapsed() < Duration::from_millis(1_500),
        "renamed while in flight"
    );
    // Wait until the title call has answered and its result has been offered to the chat (its
    // record is written last): a title task that were merely slow fails here, not passes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.db
                .count("generations", Some(("kind", "title".into())))
                .await
                == 1
        })
        .await,
        "the title call never finished"
    );
    assert_eq!(
        title_after(&app, &token, &chat, Duration::ZERO)
            .await
            .as_deref(),
        Some("My own")
    );
    assert_eq!(
        title_after(&app, &token, named, Duration::ZERO)
            .await
            .as_deref(),
        Some("Mine")
    );
    assert_eq!(
        title_requests(&app).len(),
        1,
        "no title call for a chat titled by its user"
    );
    app.finish().await;
}

async fn another_user_cannot_see_cancel_or_attach_a_running_generation(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=200&token_ms=20";
    app.script_models(&[model]);
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let chat = app.new_chat(&alice).await;
    let (_, _stream) = open_and_read(&app, &alice, &chat, model, 2).await;
    generation_routes_answer_404(&app, &chat, &bob).await;
    let status: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/generation"), &alice)
        .await;
    assert_eq!(status["running"], true, "bob's attempts changed nothing");
    app.finish().await;
}

async fn switching_branches_mid_stream_is_not_undone_by_the_answer(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=30&token_ms=20";
    let (token, chat) = alice_chat(&app, model).await;
    let root: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    let root = root["root_message_uuid"].as_str().unwrap().to_owned();
    let (_, mut stream) = open_and_read(&app, &token, &chat, model, 2).await;
    let selected = app
        .post_json_as(
            &format!("/api/v1/chats/{chat}/select"),
            &token,
            &json!({"message_uuid": root}),
        )
        .await;
    assert_eq!(selected.status(), 200);
    while let Some(e) = stream.next().await {
        e.unwrap();
    }
    let after: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(
        after["current_leaf_uuid"],
        root.as_str(),
        "the user stays where they went"
    );
    app.finish().await;
}

async fn two_streamed_sends_racing_on_one_chat_leave_no_junk(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let model = "fake/long?tokens=20&token_ms=10";
    let (token, chat) = alice_chat(&app, model).await;
    let body = json!({"content": "race", "model_id": model});
    let (a, b) = tokio::join!(
        open_stream(&app, &token, &chat, body.clone()),
        open_stream(&app, &token, &chat, body.clone()),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let winner = if a.status() == 200 { a } else { b };
    let (events, _) = read_all(winner).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let after: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(after["message_count"], 3, "root, one question, one answer");
    app.finish().await;
}

/// The provider is asked while the question is committed (overlap), but nothing of the
/// answer is shown or stored unless that commit succeeds: with the commit made to fail (a
/// fault after its first statement, once the provider has the request), the client gets the
/// ordinary error, no row of the turn exists, and the provider call is cancelled at once.
async fn a_failed_question_commit_cancels_the_provider_call_and_stores_nothing(backend: Backend) {
    let db = or_skip!(TestDatabase::create(backend));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook_armed = Arc::clone(&armed);
    let app = TestApp::spawn_with_faults(test_settings(db.url()), db, move |fake| {
        let probe = fake.stats_probe();
        Some(Arc::new(move |point: &'static str| {
            if !point.starts_with("append_")
                || !hook_armed.load(std::sync::atomic::Ordering::SeqCst)
            {
                return false;
            }
            // Fail only once the provider has the request, so the test sees it cancelled.
            let waited = Instant::now();
            while probe.stats().in_flight == 0 && waited.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(2));
            }
            true
        }))
    })
    .await;
    let slow = "fake/slow?ttft_ms=20000";
    app.script_models(&[slow]);
    let token = app.user_token("alice").await;
    let chat = app.new_chat(&token).await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    for path in ["messages/stream", "messages"] {
        let before = app.fake.stats().chat_requests;
        let started = Instant::now();
        let r = app
            .post_json_as(
                &format!("/api/v1/chats/{chat}/{path}"),
                &token,
                &json!({"content": "never stored", "model_id": slow}),
            )
            .await;
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}: an ordinary error, not a stream"
        );
        crate::helpers::assert_envelope(r, 500, "internal_error").await;
        assert_eq!(
            app.fake.stats().chat_requests,
            before + 1,
            "{path}: the call had started"
        );
        while app.fake.stats().in_flight > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path}: the provider call is still open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let tree: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/complete"), &token)
        .await;
    assert_eq!(
        tree["messages"].as_array().unwrap().len(),
        1,
        "only the root: no question, no answer row: {tree}"
    );
    // Nothing was left reserved: the next send streams normally.
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = open_stream(&app, &token, &chat, json!({"content": "now it works"})).await;
    assert_eq!(r.status(), 200);
    let (events, _) = read_all(r).await;
    assert!(events.iter().any(|e| data(e)["type"] == "final"));
    app.finish().await;
}

on_every_backend!(
    an_edited_question_streams_its_answer_on_a_new_branch,
    an_empty_interrupted_answer_is_left_out_of_the_next_prompt,
    a_failed_question_commit_cancels_the_provider_call_and_stores_nothing,
    another_user_cannot_see_cancel_or_attach_a_running_generation,
    switching_branches_mid_stream_is_not_undone_by_the_answer,
    two_streamed_sends_racing_on_one_chat_leave_no_junk,
    a_streamed_answer_arrives_in_order_and_is_stored,
    a_provider_error_mid_stream_keeps_the_partial_answer_as_failed,
    a_slow_stream_gets_ping_comments,
    errors_before_the_stream_are_plain_http_errors,
    two_hundred_disconnects_under_cancel_release_everything,
    two_hundred_disconnects_over_h2c_under_cancel_reset_every_upstream_stream,
    two_hundred_disconnects_under_finish_complete_everything,
    cancel_stops_the_generation_and_keeps_the_partial_text,
    deleting_what_an_answer_streams_into_stops_it_and_keeps_its_record,
    reattaching_replays_exactly_the_missed_events,
    caps_refuse_the_extra_generation_with_retry_after,
    the_deadline_ends_a_stuck_generation,
    titles_are_written_in_the_background_in_the_conversation_language,
    a_failed_title_call_falls_back_to_the_first_question,
    a_user_title_is_never_overwritten,
);

/// An answer cancelled before its first word is kept (empty, `interrupted`), but the next
/// prompt leaves it out: some providers reject an empty assistant message.
async fn an_empty_interrupted_answer_is_left_out_of_the_next_prompt(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    const LATE: &str = "fake/late?ttft_ms=3000&tokens=3";
    app.script_models(&[LATE]);
    let token = app.user_token("impatient").await;
    let chat = app.new_chat(&token).await;
    let mut open = open_stream(
        &app,
        &token,
        &chat,
        json!({"content": "first", "model_id": LATE}),
    )
    .await;
    let _ = open.chunk().await.unwrap();
    let cancelled = app.cancel_generation(&chat, &token).await;
    assert_eq!(cancelled.status(), 200);
    drop(open);
    send_ok(
        &app,
        &token,
        &chat,
        json!({"content": "second", "model_id": "fake/small"}),
    )
    .await;
    let sent = app.last_answer_request();
    let messages = sent["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .all(|m| !m["content"].as_str().unwrap_or("").is_empty()),
        "{sent}"
    );
    let contents: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["first", "second"], "{sent}");
    let branch = app
        .get_json_as(&format!("/api/v1/chats/{chat}/messages"), &token)
        .await;
    assert!(
        branch
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["status"] == "interrupted" && m["content"] == ""),
        "the empty answer is kept: {branch}"
    );
    app.finish().await;
}
