//! Presets over HTTP on every backend: CRUD, ownership, atomic use counter, and presets
//! really applied to generations.

use infra_db::{on_every_backend, or_skip};

use infra_db::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, at_once, json_of};

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post_json_as("/api/v1/presets", token, &body).await
}

async fn presets_are_private_validated_and_editable(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let too_long = create(
        &app,
        &alice,
        json!({"name": "x", "model_id": "fake/small", "max_tokens": 9_000}),
    )
    .await;
    assert_envelope(too_long, 422, "validation_error").await;
    let unknown = create(&app, &alice, json!({"name": "x", "model_id": "no/such"})).await;
    assert_envelope(unknown, 422, "validation_error").await;
    let hot = create(&app, &alice, json!({"name": "x", "temperature": 2.5})).await;
    assert_envelope(hot, 422, "validation_error").await;

    let created = create(
        &app,
        &alice,
        json!({"name": "Coder", "description": "for code review", "model_id": "fake/small", "max_tokens": 8_000, "temperature": 0.3}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let preset: Value = created.json().await.unwrap();
    let id = preset["uuid"].as_str().unwrap();
    assert_eq!(preset["usage_count"], 0);
    create(&app, &alice, json!({"name": "Poet", "is_favorite": true})).await;

    let found = json_of(app.get_as("/api/v1/presets?q=REVIEW", &alice)).await;
    assert_eq!(found["total"], 1);
    let favorites = json_of(app.get_as("/api/v1/presets?favorites=true", &alice)).await;
    assert_eq!(favorites["items"][0]["name"], "Poet");
    let updated = app
        .put_json_as(
            &format!("/api/v1/presets/{id}"),
            &alice,
            &json!({"name": "Reviewer", "model_id": "fake/large", "max_tokens": 100_000}),
        )
        .await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["name"], "Reviewer");
    assert_eq!(updated["temperature"], Value::Null);

    for (method, path) in [
        ("GET", format!("/api/v1/presets/{id}")),
        ("PUT", format!("/api/v1/presets/{id}")),
        ("DELETE", format!("/api/v1/presets/{id}")),
        ("POST", format!("/api/v1/presets/{id}/use")),
    ] {
        let r = app
            .call(method, &path, Some(&bob), Some(&json!({"name": "stolen"})))
            .await;
        assert_envelope(r, 404, "not_found").await;
    }
    let bobs = json_of(app.get_as("/api/v1/presets", &bob)).await;
    assert_eq!(bobs["total"], 0);
    let bob_chat = app
        .post_json_as("/api/v1/chats", &bob, &json!({"preset_id": id}))
        .await;
    assert_envelope(bob_chat, 422, "validation_error").await;

    let deleted = app
        .delete_as(&format!("/api/v1/presets/{id}"), &alice)
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        app.get_as(&format!("/api/v1/presets/{id}"), &alice)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_as("/api/v1/presets/not-a-uuid", &alice)
            .await
            .status(),
        422
    );
    app.finish().await;
}

async fn a_preset_really_applies_to_the_generation(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let preset = json_of(create(&app, &token, json!({"name": "Strict", "model_id": "fake/large", "temperature": 1.5, "max_tokens": 100, "system_prompt": "Preset prompt."}))).await;
    let pid = preset["uuid"].as_str().unwrap();

    // On the chat: every answer uses it.
    let chat = json_of(app.post_json_as(
        "/api/v1/chats",
        &token,
        &json!({"preset_id": pid, "system_prompt": "Chat prompt."}),
    ))
    .await;
    let id = chat["uuid"].as_str().unwrap();
    let reply = json_of(app.send_message(id, &token, &json!({"content": "hi"}))).await;
    assert_eq!(reply["model"], "fake/large");
    let sent = app.last_answer_request();
    assert_eq!(sent["model"], "fake/large");
    assert_eq!(sent["temperature"], 1.5);
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["messages"][0]["content"], "Preset prompt.");

    // The request wins over the preset.
    app.send_message(
        id,
        &token,
        &json!({"content": "again", "temperature": 0.1, "model_id": "fake/small"}),
    )
    .await;
    let sent = app.last_answer_request();
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["model"], "fake/small");
    assert_eq!(sent["max_tokens"], 100);

    // On one message of a chat without a preset.
    let plain = json_of(app.post_json_as("/api/v1/chats", &token, &json!({}))).await;
    let plain_id = plain["uuid"].as_str().unwrap();
    app.send_message(plain_id, &token, &json!({"content": "x", "preset_id": pid}))
        .await;
    let sent = app.last_answer_request();
    assert_eq!(sent["model"], "fake/large");
    assert_eq!(sent["messages"][0]["content"], "Preset prompt.");
    app.send_message(plain_id, &token, &json!({"content": "y"}))
        .await;
    let sent = app.last_answer_request();
    assert_eq!(
        sent["model"], "openai/gpt-4o-mini",
        "the server default without a preset"
    );
    assert!(sent.get("temperature").is_none());
    let unknown = app
        .send_message(
            plain_id,
            &token,
            &json!({"content": "z", "preset_id": "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f"}),
        )
        .await;
    assert_envelope(unknown, 422, "validation_error").await;
    app.finish().await;
}

async fn a_thousand_concurrent_uses_count_a_thousand(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let preset = json_of(create(&app, &token, json!({"name": "Counted"}))).await;
    let url = app.url(&format!(
        "/api/v1/presets/{}/use",
        preset["uuid"].as_str().unwrap()
    ));
    let statuses = at_once((0..1_000).map(|_| app.client.post(&url).bearer_auth(&token))).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = json_of(app.get_as(
        &format!("/api/v1/presets/{}", preset["uuid"].as_str().unwrap()),
        &token,
    ))
    .await;
    assert_eq!(after["usage_count"], 1_000);
    app.finish().await;
}

/// A chat's preset is returned with it and can be set, changed and removed by a patch (only
/// one of the caller's); the answers follow it.
async fn a_chats_preset_is_shown_and_patchable(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("tuner").await;
    let other = app.user_token("outsider").await;
    let preset = json_of(app.post_json_as(
        "/api/v1/presets",
        &token,
        &json!({"name": "cold", "temperature": 0.1}),
    ))
    .await;
    let foreign = json_of(app.post_json_as(
        "/api/v1/presets",
        &other,
        &json!({"name": "theirs", "temperature": 1.5}),
    ))
    .await;
    let chat = app.new_chat(&token).await;
    let patch = |body: Value| {
        let app = &app;
        let token = token.clone();
        let chat = chat.clone();
        async move {
            app.patch_json_as(&format!("/api/v1/chats/{chat}"), &token, &body)
                .await
        }
    };
    let id = preset["uuid"].as_str().unwrap();
    let set = patch(json!({"preset_id": id})).await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set["preset_id"], id, "{set}");
    let shown = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(shown["preset_id"], id);
    app.ask(&chat, &token, "hello").await;
    assert_eq!(app.last_answer_request()["temperature"], 0.1);
    let refused = patch(json!({"preset_id": foreign["uuid"]})).await;
    assert_eq!(refused.status(), 422, "another user's preset");
    let removed = json_of(patch(json!({"preset_id": null}))).await;
    assert!(removed["preset_id"].is_null(), "{removed}");
    app.finish().await;
}

on_every_backend!(
    presets_are_private_validated_and_editable,
    a_preset_really_applies_to_the_generation,
    a_thousand_concurrent_uses_count_a_thousand,
    a_chats_preset_is_shown_and_patchable,
);
