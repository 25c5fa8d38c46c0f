//! `POST /api/v1/import/chatgpt`: an export uploaded over HTTP becomes the caller's chats,
//! branches and current branch kept, once; bad uploads are refused and import nothing.

use infra_db::testing::Backend;
use infra_db::{on_every_backend, or_skip};
use infra_import::testing::{chatgpt_expected, chatgpt_export, zip_bomb, zip_of};
use serde_json::Value;

use crate::helpers::{TestApp, assert_envelope, json_of};

/// Uploads `bytes` as the form field `field` (named `name`).
async fn upload(
    app: &TestApp,
    token: &str,
    field: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    app.client
        .post(app.url("/api/v1/import/chatgpt"))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part(field.to_owned(), part))
        .send()
        .await
        .expect("request sent")
}

/// The caller's chats by title.
async fn chats_by_title(app: &TestApp, token: &str) -> Vec<(String, String)> {
    let list = app.get_json_as("/api/v1/chats?limit=100", token).await;
    let mut chats: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["title"].as_str().unwrap().to_owned(),
                c["uuid"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    chats.sort();
    chats
}

async fn an_uploaded_export_becomes_the_callers_chats_once(backend: Backend) {
    let app = or_skip!(TestApp::spawn(backend));
    let alice = app.user_token("alice").await;
    let bob = app.user_token("bob").await;
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let report = json_of(upload(
        &app,
        &alice,
        "file",
        "conversations.json",
        json.clone(),
    ))
    .await;
    assert_eq!(
        (
            &report["chats"],
            &report["chats_skipped"],
            &report["messages"]
        ),
        (&Value::from(3), &Value::from(0), &Value::from(13)),
        "{report}"
    );
    let chats = chats_by_title(&app, &alice).await;
    assert_eq!(chats.len(), 3);
    for (title, messages, leaf) in chatgpt_expected() {
        let (_, id) = chats.iter().find(|(t, _)| t == title).expect(title);
        // The current branch: root → … → the export's current node.
        let mut path = vec![leaf];
        while let Some(parent) = messages[*path.last().unwrap()].2 {
            path.push(parent);
        }
        path.reverse();
        let branch = app
            .get_json_as(&format!("/api/v1/chats/{id}/messages"), &alice)
            .await;
        let got: Vec<(&str, &str)> = branch
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let wanted: Vec<(&str, &str)> = path
            .iter()
            .map(|i| (messages[*i].0, messages[*i].1))
            .collect();
        assert_eq!(got, wanted, "{title}: the current branch");
        // The whole tree: every message, each under the right parent.
        let tree = app
            .get_json_as(&format!("/api/v1/chats/{id}/tree"), &alice)
            .await;
        let nodes = tree["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), messages.len(), "{title}");
        for (role, content, parent) in &messages {
            let node = nodes
                .iter()
                .find(|n| n["content"] == *content && n["role"] == *role)
                .unwrap_or_else(|| panic!("{title}: {content:?} missing"));
            let parent_content = parent.map(|p| messages[p].1);
            let stored_parent = node["parent_uuid"].as_str().map(|p| {
                nodes.iter().find(|n| n["uuid"] == p).unwrap()["content"]
                    .as_str()
                    .unwrap()
            });
            assert_eq!(
                stored_parent, parent_content,
                "{title}: the parent of {content:?}"
            );
        }
        // Nobody else sees it.
        let foreign = app.get_as(&format!("/api/v1/chats/{id}"), &bob).await;
        assert_eq!(foreign.status(), 404);
    }
    assert!(chats_by_title(&app, &bob).await.is_empty());
    // Times come along: the conversation's and each message's.
    let (_, plain) = chats.iter().find(|(t, _)| t == "Plain").unwrap();
    let chat = app
        .get_json_as(&format!("/api/v1/chats/{plain}"), &alice)
        .await;
    assert!(
        chat["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:46:40"),
        "{chat}"
    );
    assert!(
        chat["updated_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:46:50"),
        "{chat}"
    );
    let branch = app
        .get_json_as(&format!("/api/v1/chats/{plain}/messages"), &alice)
        .await;
    let answer = branch.as_array().unwrap().last().unwrap();
    assert!(
        answer["created_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:46:42"),
        "{answer}"
    );
    // The same export again, as the zip ChatGPT sends: nothing new.
    let again = json_of(upload(&app, &alice, "file", "export.zip", zip_of(&json))).await;
    assert_eq!(
        (&again["chats"], &again["chats_skipped"]),
        (&Value::from(0), &Value::from(3))
    );
    assert_eq!(chats_by_title(&app, &alice).await.len(), 3);
    // Bob's import of the same export is his own.
    let his = json_of(upload(&app, &bob, "file", "conversations.json", json)).await;
    assert_eq!(his["chats"], 3, "{his}");
    app.finish().await;
}

on_every_backend!(an_uploaded_export_becomes_the_callers_chats_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_a_4xx_and_import_nothing() {
    let app = or_skip!(TestApp::spawn_tuned(Backend::Sqlite, |settings| {
        settings.import.max_upload_mb = 1;
        settings.import.max_expanded_mb = 8;
    }));
    let alice = app.user_token("alice").await;
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let cases: [(&str, Vec<u8>, u16, &str, &str); 6] = [
        (
            "truncated.json",
            json[..json.len() / 2].to_vec(),
            422,
            "validation_error",
            "malformed",
        ),
        (
            "schema.json",
            br#"[{"title": "no mapping"}]"#.to_vec(),
            422,
            "validation_error",
            "mapping",
        ),
        (
            "photo.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            422,
            "validation_error",
            "not a ChatGPT export",
        ),
        (
            "bomb.zip",
            zip_bomb(64 << 20),
            422,
            "validation_error",
            "too large",
        ),
        (
            "empty.zip",
            zip_of(b"[]")[..30].to_vec(),
            422,
            "validation_error",
            "zip",
        ),
        (
            "huge.json",
            vec![b' '; 2 << 20],
            413,
            "payload_too_large",
            "",
        ),
    ];
    for (name, bytes, status, kind, says) in cases {
        let body = assert_envelope(
            upload(&app, &alice, "file", name, bytes).await,
            status,
            kind,
        )
        .await;
        assert!(
            body["user_message"].as_str().unwrap().contains(says),
            "{name}: {body}"
        );
    }
    // A form without the file, and a body that is no form at all.
    assert_envelope(
        upload(&app, &alice, "other", "x.json", json.clone()).await,
        422,
        "validation_error",
    )
    .await;
    let not_a_form = app
        .post_json_as("/api/v1/import/chatgpt", &alice, &serde_json::json!([]))
        .await;
    assert_envelope(not_a_form, 415, "unsupported_media_type").await;
    // Anonymous callers cannot import.
    let anonymous = app
        .client
        .post(app.url("/api/v1/import/chatgpt"))
        .multipart(
            reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(json)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        chats_by_title(&app, &alice).await.is_empty(),
        "nothing was imported"
    );
    app.finish().await;
}
