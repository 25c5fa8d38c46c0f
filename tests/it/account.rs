//! Self-service on every backend: changing one's password ends every other session, sessions
//! are listed and ended one by one, an account deletes itself (and every row of it), and the
//! export holds exactly what the account owns.

use infra_db::testing::Backend;
use infra_db::{on_every_backend, or_skip};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, json_of, uuid_value};

async fn refresh(app: &TestApp, token: &str) -> u16 {
    app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
        .status()
        .as_u16()
}

async fn a_password_change_ends_every_other_session(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.register("mover").await;
    let first = app.login("mover").await;
    let second = app.login("mover").await;
    let access = first["access_token"].as_str().unwrap();
    let wrong = app
        .post_json_as(
            "/api/v1/users/me/password",
            access,
            &json!({"current_password": "not my password", "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["error_type"], "wrong_password");
    let changed = app
        .post_json_as(
            "/api/v1/users/me/password",
            access,
            &json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let fresh: Value = changed.json().await.unwrap();
    // Every earlier token stops working; the fresh pair works.
    for old in [&first, &second] {
        assert_eq!(
            app.get_as("/api/v1/auth/me", old["access_token"].as_str().unwrap())
                .await
                .status(),
            401
        );
        assert_eq!(
            refresh(&app, old["refresh_token"].as_str().unwrap()).await,
            401
        );
    }
    assert_eq!(
        app.get_as("/api/v1/auth/me", fresh["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "mover", "password": "a brand new password"}),
        )
        .await;
    assert_eq!(login.status(), 200);
    app.finish().await;
}

async fn sessions_are_listed_and_ended_one_by_one(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    app.register("traveller").await;
    let laptop = app.login("traveller").await;
    let phone = app.login("traveller").await;
    let access = laptop["access_token"].as_str().unwrap();
    let listed: Value = app.get_json_as("/api/v1/auth/sessions", access).await;
    let sessions = listed.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    // The newest (the phone's) first; end it.
    let phone_session = sessions[0]["uuid"].as_str().unwrap().to_owned();
    let ended = app
        .delete_as(&format!("/api/v1/auth/sessions/{phone_session}"), access)
        .await;
    assert_eq!(ended.status(), 204);
    assert_eq!(
        refresh(&app, phone["refresh_token"].as_str().unwrap()).await,
        401
    );
    assert_eq!(
        refresh(&app, laptop["refresh_token"].as_str().unwrap()).await,
        200
    );
    let again = app
        .delete_as(&format!("/api/v1/auth/sessions/{phone_session}"), access)
        .await;
    assert_eq!(again.status(), 404);
    // Another account cannot end (or see) them.
    let other = app.user_token("stranger").await;
    let listed: Value = app.get_json_as("/api/v1/auth/sessions", &other).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let laptop_session = app.get_json_as("/api/v1/auth/sessions", access).await[0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign = app
        .delete_as(&format!("/api/v1/auth/sessions/{laptop_session}"), &other)
        .await;
    assert_eq!(foreign.status(), 404);
    app.finish().await;
}

async fn an_account_deletes_itself_and_every_row_of_it(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("quitter").await;
    let id = app.get_json_as("/api/v1/auth/me", &token).await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let chat = app.new_chat(&token).await;
    app.ask(&chat, &token, "bye").await;
    let key = app
        .post_json_as("/api/v1/auth/api-keys", &token, &json!({"name": "k"}))
        .await;
    assert_eq!(key.status(), 201);
    let wrong = app
        .call(
            "DELETE",
            "/api/v1/users/me",
            Some(&token),
            Some(&json!({"password": "not my password"})),
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let gone = app
        .call(
            "DELETE",
            "/api/v1/users/me",
            Some(&token),
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(gone.status(), 204);
    let key = || Some(("user_id", uuid_value(&json!(id))));
    for table in ["chats", "generations", "api_keys", "refresh_tokens"] {
        assert_eq!(app.db.count(table, key()).await, 0, "{table}");
    }
    assert_eq!(
        app.db
            .count("users", Some(("id", uuid_value(&json!(id)))))
            .await,
        0
    );
    assert_eq!(app.get_as("/api/v1/auth/me", &token).await.status(), 401);
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "quitter", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 401);
    app.finish().await;
}

async fn the_export_holds_exactly_what_the_account_owns(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("archivist").await;
    let other = app.user_token("neighbour").await;
    let mut chats = Vec::new();
    for question in ["first chat", "second chat"] {
        let chat = app.new_chat(&token).await;
        app.ask(&chat, &token, question).await;
        chats.push(chat);
    }
    let theirs = app.new_chat(&other).await;
    for (who, path, body) in [
        (
            &token,
            "/api/v1/templates",
            json!({"name": "mine", "content": "Hi {{who}}"}),
        ),
        (
            &other,
            "/api/v1/templates",
            json!({"name": "theirs", "content": "Yo", "is_public": true}),
        ),
        (
            &token,
            "/api/v1/presets",
            json!({"name": "calm", "temperature": 0.2}),
        ),
    ] {
        let made = app.post_json_as(path, who, &body).await;
        assert_eq!(made.status(), 201, "{path}");
    }
    let settings = app
        .put_json_as(
            "/api/v1/users/me/settings",
            &token,
            &json!({"default_model_id": "fake/large"}),
        )
        .await;
    assert!(settings.status().is_success());

    let response = app.get_as("/api/v1/users/me/export", &token).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("arbor-export.json")
    );
    let export: Value = response.json().await.unwrap();
    assert_eq!(export["user"]["username"], "archivist");
    assert_eq!(export["default_model_id"], "fake/large");
    assert_eq!(export["truncated"], false);
    let mut exported: Vec<&str> = export["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["chat"]["uuid"].as_str().unwrap())
        .collect();
    exported.sort_unstable();
    let mut expected: Vec<&str> = chats.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(exported, expected);
    assert!(!export.to_string().contains(&theirs));
    // Each chat's tree matches what its own route answers.
    for chat in &chats {
        let tree = app
            .get_json_as(&format!("/api/v1/chats/{chat}/tree"), &token)
            .await;
        let from_export = export["chats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["chat"]["uuid"] == json!(chat))
            .unwrap();
        assert_eq!(from_export["nodes"], tree["nodes"]);
    }
    let templates: Vec<&str> = export["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["mine"]);
    assert_eq!(export["presets"][0]["name"], "calm");
    assert_eq!(export["presets"].as_array().unwrap().len(), 1);
    app.finish().await;
}

on_every_backend!(
    a_password_change_ends_every_other_session,
    sessions_are_listed_and_ended_one_by_one,
    an_account_deletes_itself_and_every_row_of_it,
    the_export_holds_exactly_what_the_account_owns,
    a_read_only_api_key_reads_but_changes_nothing,
);

/// A read-only key reads but changes nothing (expiry is tested with a manual clock in the
/// use case's tests); an expiry out of range is refused.
async fn a_read_only_api_key_reads_but_changes_nothing(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let token = app.user_token("scoped").await;
    let chat = app.new_chat(&token).await;
    let made = json_of(app.post_json_as(
        "/api/v1/auth/api-keys",
        &token,
        &json!({"name": "reader", "read_only": true, "expires_in_days": 30}),
    ))
    .await;
    assert_eq!(made["read_only"], true, "{made}");
    assert!(made["expires_at"].is_string(), "{made}");
    let reader = made["key"].as_str().unwrap();
    assert_eq!(app.get_as("/api/v1/chats", reader).await.status(), 200);
    let write = app
        .send_message(&chat, reader, &json!({"content": "may I?"}))
        .await;
    assert_eq!(write.status(), 403);
    let write: Value = write.json().await.unwrap();
    assert_eq!(write["error_type"], "read_only_key");
    let deleted = app
        .delete_as(&format!("/api/v1/chats/{chat}"), reader)
        .await;
    assert_eq!(deleted.status(), 403);
    // Nothing was written.
    let chat_now: Value = app
        .get_json_as(&format!("/api/v1/chats/{chat}"), &token)
        .await;
    assert_eq!(chat_now["message_count"], 1);

    let bad = app
        .post_json_as(
            "/api/v1/auth/api-keys",
            &token,
            &json!({"name": "forever", "expires_in_days": 0}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    app.finish().await;
}
