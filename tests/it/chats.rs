//! Conversations over HTTP with the fake provider, on every backend.

use infra_db::{on_every_backend, or_skip};
use std::collections::HashSet;
use std::sync::Arc;

use infra_db::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::probe::{delete, get, patch, post};
use crate::helpers::{TestApp, assert_malformed_cases, generation_of, json_of, uuid_value};

async fn new_chat(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app.post_json_as("/api/v1/chats", token, &body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn a_conversation_branches_selects_and_deletes(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let chat = new_chat(
        &app,
        &token,
        json!({"system_prompt": "You are terse.", "initial_message": "Context: tests."}),
    )
    .await;
    let id = chat["uuid"].as_str().unwrap();
    assert_eq!(chat["title"], "Untitled Chat");
    let root = chat["root_message_uuid"].clone();

    // First turn, continuing the current leaf (the root).
    let first = app
        .send_message(
            id,
            &token,
            &json!({"content": "hello", "temperature": 0.2, "max_tokens": 64}),
        )
        .await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        first["content"],
        "word0 word1 word2 word3 word4 word5 word6 word7"
    );
    assert_eq!(first["model"], "openai/gpt-4o-mini");
    assert_eq!(first["current_path"].as_array().unwrap().len(), 3);
    assert_eq!(first["current_path"][0], root);
    assert_eq!(first["usage"]["completion_tokens"], 8);
    // What the provider received: system prompt first, then the path.
    let sent = app.last_answer_request();
    assert_eq!(sent["model"], "openai/gpt-4o-mini");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 64);
    let roles: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, [json!("system"), json!("system"), json!("user")]);
    assert_eq!(sent["messages"][0]["content"], "You are terse.");
    assert_eq!(sent["messages"][1]["content"], "Context: tests.");
    assert_eq!(sent["messages"][2]["content"], "hello");

    // The generation record: usage, cost from the catalogue's per-token prices, finish reason.
    let (prompt, completion, cost, reason) = generation_of(&app, &first["message_uuid"]).await;
    assert_eq!((prompt, completion), (6, 8));
    assert_eq!(
        cost,
        6 * 150_000 + 8 * 600_000,
        "picodollars: 0.00000015 and 0.0000006 per token"
    );
    assert_eq!(reason.as_deref(), Some("stop"));

    // Second turn continues the stored current leaf; then branch from the root and from the middle.
    let second = json_of(app.send_message(id, &token, &json!({"content": "more"}))).await;
    assert_eq!(second["current_path"].as_array().unwrap().len(), 5);
    let from_root = json_of(app.send_message(
        id,
        &token,
        &json!({"content": "other topic", "parent_message_uuid": root}),
    ))
    .await;
    assert_eq!(from_root["current_path"].as_array().unwrap().len(), 3);
    let from_middle = json_of(app.send_message(
        id,
        &token,
        &json!({"content": "again", "parent_message_uuid": first["message_uuid"]}),
    ))
    .await;
    assert_eq!(
        from_middle["current_path"].as_array().unwrap()[..3],
        first["current_path"].as_array().unwrap()[..3]
    );

    // Select the end of the second turn; the current branch follows it in path order.
    let selected = app
        .post_json_as(
            &format!("/api/v1/chats/{id}/select"),
            &token,
            &json!({"message_uuid": second["message_uuid"]}),
        )
        .await;
    assert_eq!(selected.status(), 200);
    let branch = json_of(app.get_as(&format!("/api/v1/chats/{id}/messages"), &token)).await;
    let branch_ids: Vec<_> = branch
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uuid"].clone())
        .collect();
    assert_eq!(
        branch_ids,
        second["current_path"].as_array().unwrap().clone()
    );
    assert_eq!(branch[1]["content"], "hello");
    assert_eq!(branch[3]["content"], "more");

    // The tree holds every message, each child listed under its parent.
    let tree = json_of(app.get_as(&format!("/api/v1/chats/{id}/tree"), &token)).await;
    let nodes = tree["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 9);
    assert_eq!(tree["chat"]["message_count"], 9);
    let root_node = nodes.iter().find(|n| n["uuid"] == root).unwrap();
    assert_eq!(root_node["children"].as_array().unwrap().len(), 2);
    for n in nodes {
        for c in n["children"].as_array().unwrap() {
            let child = nodes.iter().find(|x| &x["uuid"] == c).unwrap();
            assert_eq!(child["parent_uuid"], n["uuid"]);
        }
    }

    // Delete the first turn's subtree: 6 messages go, the current leaf falls back to the root.
    let deleted = app
        .delete_as(
            &format!(
                "/api/v1/chats/{id}/messages/{}",
                first["user_message_uuid"].as_str().unwrap()
            ),
            &token,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let after = json_of(app.get_as(&format!("/api/v1/chats/{id}"), &token)).await;
    assert_eq!(after["message_count"], 3);
    assert_eq!(after["current_leaf_uuid"], root);
    let root_delete = app
        .delete_as(
            &format!("/api/v1/chats/{id}/messages/{}", root.as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(root_delete.status(), 422);

    // Delete the chat: no orphan rows.
    let gone = app.delete_as(&format!("/api/v1/chats/{id}"), &token).await;
    assert_eq!(gone.status(), 204);
    assert_eq!(
        app.db
            .count("messages", Some(("chat_id", uuid_value(&chat["uuid"]))))
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("generations", Some(("chat_id", uuid_value(&chat["uuid"]))))
            .await,
        0
    );
    assert_eq!(
        app.get_as(&format!("/api/v1/chats/{id}"), &token)
            .await
            .status(),
        404
    );
    app.finish().await;
}

async fn another_users_ids_answer_404_on_every_route(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let chat = new_chat(&app, &alice, json!({"title": "private"})).await;
    let id = chat["uuid"].as_str().unwrap();
    let turn = json_of(app.send_message(id, &alice, &json!({"content": "secret"}))).await;
    let mid = turn["user_message_uuid"].as_str().unwrap();
    let before = json_of(app.get_as(&format!("/api/v1/chats/{id}/tree"), &alice)).await;

    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/v1/chats/{id}"), None),
        ("DELETE", format!("/api/v1/chats/{id}"), None),
        ("GET", format!("/api/v1/chats/{id}/messages"), None),
        (
            "POST",
            format!("/api/v1/chats/{id}/messages"),
            Some(json!({"content": "hi"})),
        ),
        ("GET", format!("/api/v1/chats/{id}/tree"), None),
        (
            "POST",
            format!("/api/v1/chats/{id}/select"),
            Some(json!({"message_uuid": mid})),
        ),
        ("DELETE", format!("/api/v1/chats/{id}/messages/{mid}"), None),
        (
            "PATCH",
            format!("/api/v1/chats/{id}"),
            Some(json!({"title": "mine now"})),
        ),
        ("GET", format!("/api/v1/chats/{id}/complete"), None),
        ("GET", format!("/api/v1/chats/{id}/search?q=secret"), None),
        (
            "GET",
            format!("/api/v1/chats/{id}/export?format=markdown"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/chats/{id}/messages/{mid}/retry"),
            Some(json!({})),
        ),
        (
            "PATCH",
            format!("/api/v1/chats/{id}/messages/{mid}"),
            Some(json!({"content": "x"})),
        ),
    ];
    for (method, path, body) in routes {
        let response = app.call(method, &path, Some(&bob), body.as_ref()).await;
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_type"], "not_found");
    }
    let list = json_of(app.get_as("/api/v1/chats", &bob)).await;
    assert_eq!(list["total"], 0);
    let after = json_of(app.get_as(&format!("/api/v1/chats/{id}/tree"), &alice)).await;
    assert_eq!(before, after, "alice's chat is unchanged");
    app.finish().await;
}

async fn provider_failures_keep_the_user_message_and_map_to_gateway_errors(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let mut models = fake_provider::default_models();
    models.push(fake_provider::model_entry(
        "fake/down?status=503&retry_after=2",
        "Down",
        "0",
        "0",
        1_000,
    ));
    models.push(fake_provider::model_entry(
        "fake/refuses?status=400",
        "Refuses",
        "0",
        "0",
        1_000,
    ));
    app.fake.set_models(models);
    let token = app.user_token("alice").await;
    let chat = new_chat(&app, &token, json!({})).await;
    let id = chat["uuid"].as_str().unwrap();

    let down = app
        .send_message(
            id,
            &token,
            &json!({"content": "hi", "model_id": "fake/down?status=503&retry_after=2"}),
        )
        .await;
    assert_eq!(down.status(), 503);
    let retry: u64 = down.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["retry_available"], true);
    let refused = app
        .send_message(
            id,
            &token,
            &json!({"content": "hi", "model_id": "fake/refuses?status=400"}),
        )
        .await;
    assert_eq!(refused.status(), 502);
    // A refusal is not retried by asking again: say so, and say why.
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error_type"], "provider_rejected", "{refused}");
    assert_eq!(refused["retry_available"], false);
    assert!(
        refused["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("scripted failure 400")),
        "{refused}"
    );
    let unknown = app
        .send_message(
            id,
            &token,
            &json!({"content": "hi", "model_id": "no/such-model"}),
        )
        .await;
    assert_eq!(unknown.status(), 422);

    let after = json_of(app.get_as(&format!("/api/v1/chats/{id}"), &token)).await;
    assert_eq!(after["message_count"], 3, "both user messages were kept");
    app.finish().await;
}

async fn many_clients_sending_at_once_lose_nothing(backend: Backend) {
    const CLIENTS: usize = 100;
    const TURNS: usize = 10;
    // One user drives all hundred clients; the per-user generation cap is not under test.
    let app = or_skip!(TestApp::spawn_tuned(backend, |settings| {
        settings.generation.per_user_limit = CLIENTS;
    }));
    let app = Arc::new(app);
    let token = app.user_token("alice").await;
    // Ten chats shared by ten clients each, plus two clients branching the same chat at once.
    let mut chats = Vec::new();
    for _ in 0..10 {
        chats.push(
            new_chat(&app, &token, json!({})).await["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let app = Arc::clone(&app);
            let token = token.clone();
            let chat = chats[i % chats.len()].clone();
            tokio::spawn(async move {
                let mut parent: Option<String> = None;
                let mut errors = 0;
                for _ in 0..TURNS {
                    let mut body = json!({"content": format!("client {i}")});
                    if let Some(p) = &parent {
                        body["parent_message_uuid"] = json!(p);
                    }
                    let r = app.send_message(&chat, &token, &body).await;
                    if r.status() == 201 {
                        let v: Value = r.json().await.unwrap();
                        parent = Some(v["message_uuid"].as_str().unwrap().to_owned());
                    } else {
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    assert_eq!(errors, 0);
    let mut total = 0;
    for chat in &chats {
        let tree = json_of(app.get_as(&format!("/api/v1/chats/{chat}/tree"), &token)).await;
        let nodes = tree["nodes"].as_array().unwrap();
        assert_eq!(
            tree["chat"]["message_count"].as_u64().unwrap() as usize,
            nodes.len()
        );
        let ids: HashSet<_> = nodes.iter().map(|n| n["uuid"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), nodes.len());
        total += nodes.len() - 1;
    }
    assert_eq!(
        total,
        CLIENTS * TURNS * 2,
        "every turn persisted exactly once"
    );
    Arc::try_unwrap(app).ok().unwrap().finish().await;
}

async fn chats_are_listed_searched_sorted_and_paginated(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    for title in ["Beta plan", "alpha 100% done", "Gamma_ray", "beta review"] {
        new_chat(&app, &token, json!({"title": title})).await;
    }
    let list = json_of(app.get_as("/api/v1/chats?limit=3", &token)).await;
    assert_eq!(list["total"], 4);
    assert_eq!(list["pages"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        list["items"][0]["title"], "beta review",
        "most recently updated first"
    );
    let beta = json_of(app.get_as("/api/v1/chats?q=BETA&sort=title", &token)).await;
    assert_eq!(beta["total"], 2);
    let percent = json_of(app.get_as("/api/v1/chats?q=0%25", &token)).await;
    assert_eq!(percent["total"], 1, "% is literal");
    let underscore = json_of(app.get_as("/api/v1/chats?q=a_r", &token)).await;
    assert_eq!(underscore["total"], 1, "_ is literal");
    assert_eq!(underscore["items"][0]["title"], "Gamma_ray");
    assert_eq!(
        app.get_as("/api/v1/chats?sort=bogus", &token)
            .await
            .status(),
        422
    );
    assert_eq!(
        app.get_as("/api/v1/chats?limit=101", &token).await.status(),
        422
    );
    assert_eq!(app.get_as("/api/v1/chats?q=x", &token).await.status(), 422);

    // An unprefixed time sort ascends (as `title` does); `-` descends, the default.
    let order = |sort: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let list: Value = app
                .get_json_as(&format!("/api/v1/chats?limit=100{sort}"), &token)
                .await;
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["uuid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest_first = order("").await;
    assert_eq!(order("&sort=-updated_at").await, newest_first);
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(order("&sort=updated_at").await, oldest_first);
    let created_desc = order("&sort=-created_at").await;
    let mut created_asc = created_desc.clone();
    created_asc.reverse();
    assert_eq!(order("&sort=created_at").await, created_asc);

    // Keyset pages: the same chats in the same order as page numbers give, without a total.
    for sort in [
        "updated_at",
        "-updated_at",
        "created_at",
        "-created_at",
        "title",
        "-title",
    ] {
        let all: Value = app
            .get_json_as(&format!("/api/v1/chats?sort={sort}&limit=100"), &token)
            .await;
        assert!(all["next_cursor"].is_null(), "{all}");
        let expected: Vec<Value> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["uuid"].clone())
            .collect();
        let first: Value = app
            .get_json_as(&format!("/api/v1/chats?sort={sort}&limit=3"), &token)
            .await;
        assert_eq!(first["total"], 4, "a page by number counts");
        let keyset_first: Value = app
            .get_json_as(
                &format!("/api/v1/chats?sort={sort}&limit=3&cursor="),
                &token,
            )
            .await;
        assert!(keyset_first.get("total").is_none(), "{keyset_first}");
        assert_eq!(keyset_first["items"], first["items"]);
        assert_eq!(keyset_first["next_cursor"], first["next_cursor"]);
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let second: Value = app
            .get_json_as(
                &format!("/api/v1/chats?sort={sort}&limit=3&cursor={cursor}"),
                &token,
            )
            .await;
        assert!(second.get("total").is_none() && second.get("pages").is_none());
        assert!(second["next_cursor"].is_null(), "the list ends: {second}");
        let walked: Vec<Value> = first["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["items"].as_array().unwrap())
            .map(|c| c["uuid"].clone())
            .collect();
        assert_eq!(walked, expected, "{sort}");
        let other_sort = if sort == "title" { "-title" } else { "title" };
        for bad in [
            format!("/api/v1/chats?sort={other_sort}&cursor={cursor}"),
            format!("/api/v1/chats?sort={sort}&cursor={cursor}&page=2"),
            format!("/api/v1/chats?sort={sort}&cursor=not-a-cursor"),
            format!("/api/v1/chats?sort={sort}&cursor={}", "A".repeat(3_000)),
        ] {
            let r = app.get_as(&bad, &token).await;
            crate::helpers::assert_envelope(r, 422, "validation_error").await;
        }
    }
    // Another user's cursor shows nothing of alice's.
    let bob = app.user_token("bob").await;
    let first: Value = app.get_json_as("/api/v1/chats?limit=1", &token).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let foreign: Value = app
        .get_json_as(&format!("/api/v1/chats?cursor={cursor}"), &bob)
        .await;
    assert_eq!(foreign["items"], json!([]));
    app.finish().await;
}

async fn retry_edit_patch_search_and_export(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let chat = new_chat(&app, &token, json!({"title": "Plans"})).await;
    let id = chat["uuid"].as_str().unwrap();
    let root = chat["root_message_uuid"].as_str().unwrap().to_owned();
    let turn =
        json_of(app.send_message(id, &token, &json!({"content": "What about 100% cotton?"}))).await;
    let question = turn["user_message_uuid"].as_str().unwrap().to_owned();
    let answer = turn["message_uuid"].as_str().unwrap().to_owned();

    // Retry on the answer and on the question: both give siblings of the first answer.
    for target in [&answer, &question] {
        let r = app
            .post_json_as(
                &format!("/api/v1/chats/{id}/messages/{target}/retry"),
                &token,
                &json!({}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let r: Value = r.json().await.unwrap();
        assert_eq!(r["parent_message_uuid"], question.as_str());
    }
    let root_retry = app
        .post_json_as(
            &format!("/api/v1/chats/{id}/messages/{root}/retry"),
            &token,
            &json!({}),
        )
        .await;
    assert_eq!(root_retry.status(), 422);
    let tree = json_of(app.get_as(&format!("/api/v1/chats/{id}/tree"), &token)).await;
    let q = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["uuid"] == question.as_str())
        .unwrap();
    assert_eq!(
        q["children"].as_array().unwrap().len(),
        3,
        "three sibling answers"
    );

    // Edit: a sibling question with the new text, answered when asked; the original stays.
    let edited = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}/messages/{question}?regenerate=true"),
            &token,
            &json!({"content": "What about linen?"}),
        )
        .await;
    assert_eq!(edited.status(), 201);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["message"]["parent_uuid"], root.as_str());
    assert_eq!(edited["message"]["content"], "What about linen?");
    assert!(edited["reply"]["message_uuid"].is_string());
    let complete = json_of(app.get_as(&format!("/api/v1/chats/{id}/complete"), &token)).await;
    let branch: Vec<_> = complete["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(branch[1], "What about linen?");
    assert_eq!(complete["nodes"].as_array().unwrap().len(), 7);
    let original = complete["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["uuid"] == question.as_str())
        .unwrap();
    assert_eq!(original["content"], "What about 100% cotton?");

    // The answer to an edit can choose its model and sampling (only when it is asked for).
    let again = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}/messages/{question}?regenerate=true"),
            &token,
            &json!({"content": "And silk?", "model_id": "fake/large", "temperature": 0.3}),
        )
        .await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["reply"]["model"], "fake/large");
    assert_eq!(app.last_answer_request()["temperature"], 0.3);
    let without = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}/messages/{question}"),
            &token,
            &json!({"content": "And hemp?", "model_id": "fake/large"}),
        )
        .await;
    let body = crate::helpers::assert_envelope(without, 422, "validation_error").await;
    assert_eq!(body["detail"]["field"], "regenerate");
    let answer = again["reply"]["message_uuid"].as_str().unwrap();
    let answered_answer = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}/messages/{answer}?regenerate=true"),
            &token,
            &json!({"content": "An answer cannot be answered"}),
        )
        .await;
    assert_eq!(answered_answer.status(), 422);
    // Back to the linen branch for what follows.
    let linen = edited["reply"]["message_uuid"].as_str().unwrap();
    let selected = app
        .post_json_as(
            &format!("/api/v1/chats/{id}/select"),
            &token,
            &json!({"message_uuid": linen}),
        )
        .await;
    assert_eq!(selected.status(), 200);

    // Patch: title, system prompt (null removes it), model.
    let patched = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}"),
            &token,
            &json!({"title": "Fabric", "system_prompt": "Be kind.", "model_id": "fake/large"}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["title"], "Fabric");
    assert_eq!(patched["system_prompt"], "Be kind.");
    let next = json_of(app.send_message(id, &token, &json!({"content": "and wool?"}))).await;
    assert_eq!(next["model"], "fake/large", "the chat's model is used");
    assert_eq!(
        app.last_answer_request()["messages"][0]["content"],
        "Be kind."
    );
    let cleared: Value = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}"),
            &token,
            &json!({"system_prompt": null}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["system_prompt"], Value::Null);
    assert_eq!(cleared["title"], "Fabric");
    let bad_model = app
        .patch_json_as(
            &format!("/api/v1/chats/{id}"),
            &token,
            &json!({"model_id": "no/such"}),
        )
        .await;
    assert_eq!(bad_model.status(), 422);

    // Search: in the chat and across chats, case-insensitive, % literal.
    let other = new_chat(&app, &token, json!({"title": "Other"})).await;
    app.send_message(
        other["uuid"].as_str().unwrap(),
        &token,
        &json!({"content": "COTTON shirts"}),
    )
    .await;
    let in_chat = json_of(app.get_as(&format!("/api/v1/chats/{id}/search?q=cotton"), &token)).await;
    assert_eq!(in_chat["total"], 1);
    let everywhere = json_of(app.get_as("/api/v1/search?q=cotton", &token)).await;
    assert_eq!(everywhere["total"], 2);
    assert_eq!(everywhere["total_exact"], true);
    assert_eq!(everywhere["searched_all"], true);
    let titles: HashSet<_> = everywhere["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["chat_title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, HashSet::from(["Fabric", "Other"]));
    let percent = json_of(app.get_as("/api/v1/search?q=100%25", &token)).await;
    assert_eq!(percent["total"], 1);
    assert_eq!(app.get_as("/api/v1/search?q=a", &token).await.status(), 422);

    // Recent and export.
    let recent = json_of(app.get_as("/api/v1/chats/recent?limit=1", &token)).await;
    assert_eq!(recent.as_array().unwrap().len(), 1);
    assert_eq!(recent[0]["title"], "Other");
    let json_export = app
        .get_as(&format!("/api/v1/chats/{id}/export?format=json"), &token)
        .await;
    assert!(
        json_export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".json")
    );
    let json_export: Value = json_export.json().await.unwrap();
    assert_eq!(
        json_export["nodes"].as_array().unwrap().len(),
        11,
        "the edits added two branches"
    );
    let md = app
        .get_as(
            &format!("/api/v1/chats/{id}/export?format=markdown"),
            &token,
        )
        .await;
    assert!(
        md.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = md.text().await.unwrap();
    assert!(md.starts_with("# Fabric"));
    assert!(md.contains("## user\n\nWhat about linen?"));
    assert!(
        !md.contains("100% cotton"),
        "markdown is the current branch only"
    );
    assert_eq!(
        app.get_as(&format!("/api/v1/chats/{id}/export?format=pdf"), &token)
            .await
            .status(),
        422
    );
    app.finish().await;
}

const CHATS: &str = "/api/v1/chats";

async fn malformed_input_on_chat_routes_is_a_4xx_envelope(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("alice").await;
    let chat = new_chat(&app, &token, json!({})).await;
    let id = chat["uuid"].as_str().unwrap().to_owned();
    let turn = json_of(app.send_message(&id, &token, &json!({"content": "hi"}))).await;
    let mid = turn["user_message_uuid"].as_str().unwrap().to_owned();
    let nobody = "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f";
    let long = |n: usize| "x".repeat(n);
    let c = format!("/api/v1/chats/{id}");
    let (messages, select) = (format!("{c}/messages"), format!("{c}/select"));
    let cases = [
        (post(CHATS, "{oops"), 400),
        (post(CHATS, json!({"title": ""})), 422),
        (post(CHATS, json!({"title": long(201)})), 422),
        (post(CHATS, json!({"system_prompt": long(8_001)})), 422),
        (post(CHATS, json!({"initial_message": long(8_001)})), 422),
        (post(CHATS, json!({"model_id": "has space"})), 422),
        (post(CHATS, json!({"model_id": "no/such"})), 422),
        (post(CHATS, json!({"colour": "red"})), 422),
        (post(CHATS, json!({"title": long(300_000)})), 413),
        (get("/api/v1/chats?page=0"), 422),
        (get("/api/v1/chats?page=10001"), 422),
        (get("/api/v1/chats?limit=abc"), 422),
        (get(format!("/api/v1/chats?q={}", long(201))), 422),
        (get("/api/v1/chats/not-a-uuid"), 422),
        (get(format!("/api/v1/chats/{nobody}")), 404),
        (get(format!("/api/v1/chats/{nobody}/messages")), 404),
        (post(&messages, json!({"content": ""})), 422),
        (post(&messages, json!({"content": " \n "})), 422),
        (post(&messages, json!({"content": long(32_001)})), 422),
        (post(&messages, json!({"content": 5})), 422),
        (
            post(&messages, json!({"content": "x", "temperature": 3})),
            422,
        ),
        (
            post(&messages, json!({"content": "x", "max_tokens": 0})),
            422,
        ),
        (
            post(
                &messages,
                json!({"content": "x", "parent_message_uuid": "nope"}),
            ),
            422,
        ),
        (
            post(
                &messages,
                json!({"content": "x", "parent_message_uuid": nobody}),
            ),
            404,
        ),
        (post(&select, json!({"message_uuid": "nope"})), 422),
        (post(&select, json!({"message_uuid": nobody})), 404),
        (post(&select, "{}"), 422),
        (patch(&c, json!({"title": " "})), 422),
        (patch(&c, json!({"system_prompt": 12})), 422),
        (
            patch(format!("{c}/messages/{mid}"), json!({"content": ""})),
            422,
        ),
        (
            patch(
                format!("{c}/messages/{mid}?regenerate=maybe"),
                json!({"content": "y"}),
            ),
            422,
        ),
        (
            patch(format!("{c}/messages/{nobody}"), json!({"content": "y"})),
            404,
        ),
        (
            post(
                format!("{c}/messages/{mid}/retry"),
                json!({"temperature": "hot"}),
            ),
            422,
        ),
        (post(format!("{c}/messages/{nobody}/retry"), "{}"), 404),
        (delete(format!("{c}/messages/not-a-uuid")), 422),
        (get(format!("{c}/search")), 422),
        (get(format!("{c}/search?q=")), 422),
        (get(format!("{c}/export?format=docx")), 422),
        (get("/api/v1/search?q=x&page=-1"), 422),
    ];
    assert_malformed_cases(&app, Some(&token), cases).await;
    app.finish().await;
}

on_every_backend!(
    malformed_input_on_chat_routes_is_a_4xx_envelope,
    retry_edit_patch_search_and_export,
    a_conversation_branches_selects_and_deletes,
    another_users_ids_answer_404_on_every_route,
    provider_failures_keep_the_user_message_and_map_to_gateway_errors,
    many_clients_sending_at_once_lose_nothing,
    chats_are_listed_searched_sorted_and_paginated
);
