//! The OpenAI-compatible `/v1` surface: the catalogue in OpenAI's list shape for a client
//! holding an Arbor API key, and OpenAI's error object on every failure.

use infra_db::testing::Backend;
use infra_db::{on_every_backend, or_skip};
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of};

async fn the_models_are_listed_in_openai_shape_with_an_api_key(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let access = app.user_token("sdk-user").await;
    let created =
        json_of(app.post_json_as("/api/v1/auth/api-keys", &access, &json!({"name": "sdk"}))).await;
    let key = created["key"].as_str().unwrap().to_owned();

    let list: Value = app.get_json_as("/v1/models", &key).await;
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{list}");
    let small = data.iter().find(|m| m["id"] == "fake/small").unwrap();
    assert_eq!(small["object"], "model");
    assert_eq!(small["owned_by"], "fake");
    assert!(small["created"].as_i64().unwrap() > 0);

    let one: Value = app.get_json_as("/v1/models/fake/small", &key).await;
    assert_eq!(one["id"], "fake/small");

    let missing = app.get_as("/v1/models/nobody/none", &key).await;
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["error"]["code"], "model_not_found", "{missing}");
    assert_eq!(missing["error"]["type"], "invalid_request_error");
    assert!(missing["error"]["message"].as_str().is_some());
    assert!(missing.get("error_type").is_none(), "not Arbor's envelope");

    let forged = app.get_as("/v1/models", "arb_not_a_real_key").await;
    assert_eq!(forged.status(), 401);
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(forged["error"]["code"], "invalid_api_key", "{forged}");

    let nowhere = app.get_as("/v1/nothing/here", &key).await;
    assert_eq!(nowhere.status(), 404);
    let nowhere: Value = nowhere.json().await.unwrap();
    assert_eq!(
        nowhere["error"]["type"], "invalid_request_error",
        "{nowhere}"
    );
    app.finish().await;
}

/// An API key of a new user `name`.
async fn api_key(app: &TestApp, name: &str) -> String {
    let access = app.user_token(name).await;
    let created =
        json_of(app.post_json_as("/api/v1/auth/api-keys", &access, &json!({"name": "sdk"}))).await;
    created["key"].as_str().unwrap().to_owned()
}

/// `POST /v1/chat/completions` as `key`, with `X-Arbor-Chat` when given.
async fn complete(app: &TestApp, key: &str, chat: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body);
    if let Some(chat) = chat {
        request = request.header("X-Arbor-Chat", chat);
    }
    request.send().await.unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn data_lines(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// The text and the chunks of a streamed completion.
fn streamed(body: &str) -> (String, Vec<Value>) {
    let lines = data_lines(body);
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks)
}

async fn completions_answer_in_openai_shape_and_count_for_the_caller(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.script_models(&[
        "fake/small?tokens=3",
        "fake/small?tokens=4",
        "fake/small?tokens=2",
    ]);
    let key = api_key(&app, "sdk-user").await;
    let conversation = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "three words"}]},
    ]);

    let blocking = complete(
        &app,
        &key,
        None,
        &json!({"model": "fake/small?tokens=3", "messages": conversation, "seed": 7, "response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(blocking.status(), 200);
    assert!(blocking.headers().get("x-arbor-chat").is_none());
    let body: Value = blocking.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "fake/small?tokens=3");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "word0 word1 word2"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let sent = app.last_answer_request();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent}");
    assert_eq!(sent["messages"][3]["content"], "Say three words");
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["response_format"]["type"], "json_object");

    let stream = complete(
        &app,
        &key,
        None,
        &json!({"model": "fake/small?tokens=4", "messages": [{"role": "user", "content": "Go"}], "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, chunks) = streamed(&stream.text().await.unwrap());
    assert_eq!(text, "word0 word1 word2 word3");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);

    // Without include_usage: no usage chunk.
    let plain = complete(
        &app,
        &key,
        None,
        &json!({"model": "fake/small?tokens=2", "messages": [{"role": "user", "content": "Go"}], "stream": true}),
    )
    .await;
    let (_, chunks) = streamed(&plain.text().await.unwrap());
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));

    // Nothing was stored but the three records, which the caller's analytics count.
    let access = app.login("sdk-user").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let chats: Value = app.get_json_as("/api/v1/chats", &access).await;
    assert_eq!(chats["total"], 0, "{chats}");
    let overview = app.get_json_as("/api/v1/analytics/overview", &access).await;
    assert_eq!(overview["messages"], 3, "{overview}");
    let other = app.user_token("someone-else").await;
    let theirs = app.get_json_as("/api/v1/analytics/overview", &other).await;
    assert_eq!(theirs["messages"], 0, "{theirs}");
    app.finish().await;
}

async fn tool_calls_pass_through_both_ways(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.script_models(&["fake/small?tool_call=1"]);
    let key = api_key(&app, "agent").await;
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let ask = json!({"model": "fake/small?tool_call=1", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools, "tool_choice": "auto"});
    let body: Value = complete(&app, &key, None, &ask).await.json().await.unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather", "{body}");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(app.last_answer_request()["tools"], tools);

    let mut streamed_ask = ask.clone();
    streamed_ask["stream"] = json!(true);
    let response = complete(&app, &key, None, &streamed_ask).await;
    let (_, chunks) = streamed(&response.text().await.unwrap());
    let fragments: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(fragments.len(), 2, "{chunks:?}");
    assert_eq!(fragments[0][0]["function"]["name"], "weather");
    assert_eq!(
        fragments[1][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The tool's answer goes back as given: the provider sees the tool message.
    let follow_up = json!({"model": "fake/small", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ], "tools": tools});
    let answered = complete(&app, &key, None, &follow_up).await;
    assert_eq!(answered.status(), 200);
    let sent = app.last_answer_request();
    assert_eq!(sent["messages"][2]["role"], "tool", "{sent}");
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_0");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_0");
    app.finish().await;
}

async fn stored_completions_go_into_the_callers_own_chat(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.script_models(&["fake/small?tokens=2", "fake/small?tokens=3"]);
    let key = api_key(&app, "keeper").await;
    let first = complete(
        &app,
        &key,
        Some("new"),
        &json!({"model": "fake/small?tokens=2", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "First question"},
        ]}),
    )
    .await;
    assert_eq!(first.status(), 200);
    let chat = first.headers()["x-arbor-chat"].to_str().unwrap().to_owned();
    let answer = first.headers()["x-arbor-message"]
        .to_str()
        .unwrap()
        .to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["choices"][0]["message"]["content"], "word0 word1");

    let second = complete(
        &app,
        &key,
        Some(&chat),
        &json!({"model": "fake/small?tokens=3", "stream": true, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "word0 word1"},
            {"role": "user", "content": "Second question"},
        ]}),
    )
    .await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-arbor-chat"].to_str().unwrap(), chat);
    let (text, _) = streamed(&second.text().await.unwrap());
    assert_eq!(text, "word0 word1 word2");

    let access = app.login("keeper").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &access)
        .await;
    assert_eq!(stored["system_prompt"], "You are terse.", "{stored}");
    let branch: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}/messages"), &access)
        .await;
    let contents: Vec<(&str, &str)> = branch
        .as_array()
        .unwrap_or_else(|| branch["messages"].as_array().unwrap())
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        contents,
        [
            ("user", "First question"),
            ("assistant", "word0 word1"),
            ("user", "Second question"),
            ("assistant", "word0 word1 word2"),
        ],
        "{branch}"
    );
    assert!(branch.to_string().contains(&answer));

    // Another user's key cannot write into (or learn about) this chat.
    let intruder = api_key(&app, "intruder").await;
    let denied = complete(
        &app,
        &intruder,
        Some(&chat),
        &json!({"model": "fake/small", "messages": [{"role": "user", "content": "let me in"}]}),
    )
    .await;
    assert_eq!(denied.status(), 404);
    let denied: Value = denied.json().await.unwrap();
    assert_eq!(denied["error"]["code"], "not_found", "{denied}");
    let after: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &access)
        .await;
    assert_eq!(after["message_count"], stored["message_count"]);
    let overview = app.get_json_as("/api/v1/analytics/overview", &access).await;
    assert_eq!(overview["messages"], 2, "{overview}");

    // Refused at admission (more max_tokens than the model's context): no chat is left.
    for stream in [false, true] {
        let refused = complete(
            &app,
            &key,
            Some("new"),
            &json!({"model": "fake/small", "stream": stream, "max_tokens": 100_000,
                    "messages": [{"role": "user", "content": "Too much"}]}),
        )
        .await;
        assert_eq!(refused.status(), 400, "stream: {stream}");
    }
    let chats = app.get_json_as("/api/v1/chats", &access).await;
    assert_eq!(chats["total"], 1, "{chats}");
    app.finish().await;
}

async fn bad_completion_requests_get_openai_errors(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.script_models(&["fake/refuses?status=400", "fake/down?status=503"]);
    let key = api_key(&app, "careless").await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (
            None,
            json!({"model": "nobody/none", "messages": user}),
            404,
            "model_not_found",
        ),
        (None, json!({"messages": user}), 400, "validation_error"),
        (
            None,
            json!({"model": "fake/small"}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": []}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": user, "n": 2}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": user, "audio": {}}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": user, "temperature": 9}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "validation_error",
        ),
        (
            None,
            json!({"model": "fake/small", "messages": [{"role": "user", "content": 5}]}),
            400,
            "validation_error",
        ),
        (
            Some("new"),
            json!({"model": "fake/small", "messages": user, "tools": tools}),
            400,
            "validation_error",
        ),
        (
            Some("new"),
            json!({"model": "fake/small", "messages": [{"role": "system", "content": "x"}]}),
            400,
            "validation_error",
        ),
        (
            Some("not-a-chat"),
            json!({"model": "fake/small", "messages": user}),
            400,
            "validation_error",
        ),
        (
            Some("018f0000-0000-7000-8000-000000000000"),
            json!({"model": "fake/small", "messages": user}),
            404,
            "not_found",
        ),
    ];
    for (chat, body, status, code) in cases {
        let response = complete(&app, &key, chat, &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body} → {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let malformed = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let malformed: Value = malformed.json().await.unwrap();
    assert_eq!(malformed["error"]["type"], "invalid_request_error");
    // Refused before any handler runs (the body limit): still OpenAI's shape.
    let huge = json!({"model": "fake/small", "messages": [
        {"role": "user", "content": "x".repeat(300 * 1024)}
    ]});
    let oversized = complete(&app, &key, None, &huge).await;
    assert_eq!(oversized.status(), 413);
    let oversized: Value = oversized.json().await.unwrap();
    assert_eq!(
        oversized["error"]["code"], "payload_too_large",
        "{oversized}"
    );
    assert_eq!(oversized["error"]["type"], "invalid_request_error");
    let anonymous = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&json!({"model": "fake/small", "messages": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // Nothing above reached the provider or was stored.
    assert_eq!(app.fake.stats().chat_requests, 0);

    // A provider's refusal is a 502 that the OpenAI SDKs must not send again (they retry
    // every 5xx unless told `x-should-retry: false`); a provider that is down may be retried.
    for (model, status, should_retry) in [
        ("fake/refuses?status=400", 502, Some("false")),
        ("fake/down?status=503", 503, None),
    ] {
        let body = json!({"model": model, "messages": user});
        let failed = complete(&app, &key, None, &body).await;
        assert_eq!(failed.status(), status, "{model}");
        let header = failed.headers().get("x-should-retry");
        assert_eq!(header.map(|v| v.to_str().unwrap()), should_retry, "{model}");
        if status == 502 {
            let refused: Value = failed.json().await.unwrap();
            assert_eq!(refused["error"]["code"], "provider_rejected", "{refused}");
        }
    }
    app.finish().await;
}

/// The finish reasons of the calls recorded without a chat, oldest first.
async fn finish_reasons(app: &TestApp) -> Vec<Option<String>> {
    use sea_orm::ConnectionTrait;
    let conn = app.db.raw().await;
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT finish_reason FROM generations WHERE chat_id IS NULL ORDER BY created_at",
        ))
        .await
        .unwrap();
    let _ = conn.close().await;
    rows.iter()
        .map(|r| r.try_get("", "finish_reason").unwrap())
        .collect()
}

/// An unstored stream holds its caller's slot (a second call meets the per-user cap as a
/// 429 in OpenAI's shape); a client that leaves cancels the provider call and frees the slot,
/// and the call is still recorded, as `cancelled`.
async fn a_client_that_leaves_cancels_the_call_and_frees_its_slot(backend: Backend) {
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.per_user_limit = 1;
    }));
    const SLOW: &str = "fake/small?tokens=300&token_ms=20";
    app.script_models(&[SLOW]);
    let key = api_key(&app, "leaver").await;
    let ask = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "long story"}]});
    let mut first = complete(&app, &key, None, &ask(SLOW, true)).await;
    assert_eq!(first.status(), 200);
    let head = first.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&head).contains("chat.completion.chunk"));
    assert_eq!(app.fake.stats().in_flight, 1);

    let refused = complete(&app, &key, None, &ask("fake/small", false)).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["type"], "rate_limit_error", "{refused}");

    drop(first);
    let waited = std::time::Instant::now();
    while app.fake.stats().in_flight > 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(5),
            "the provider call outlived its client"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The call is recorded `cancelled`, then its slot is released (in that order, so a
    // record is never missing for a freed slot): wait for the record, then the slot is free.
    while finish_reasons(&app).await.is_empty() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(5),
            "the cancelled call was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut again = complete(&app, &key, None, &ask("fake/small", false)).await;
    while again.status() == 429 && waited.elapsed() < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        again = complete(&app, &key, None, &ask("fake/small", false)).await;
    }
    assert_eq!(again.status(), 200, "the slot was freed");

    let reasons = finish_reasons(&app).await;
    assert_eq!(
        reasons,
        [Some("cancelled".to_owned()), Some("stop".to_owned())]
    );
    app.finish().await;
}

on_every_backend!(
    the_models_are_listed_in_openai_shape_with_an_api_key,
    completions_answer_in_openai_shape_and_count_for_the_caller,
    tool_calls_pass_through_both_ways,
    stored_completions_go_into_the_callers_own_chat,
    bad_completion_requests_get_openai_errors,
    a_client_that_leaves_cancels_the_call_and_frees_its_slot,
);
