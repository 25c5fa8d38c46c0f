//! Moving in, through the real binary: `arbor import cb-back` on every backend (trees compared
//! node by node, bcrypt passwords that work once and are then argon2id, a second run that
//! imports nothing), `arbor import chatgpt`, bad input, and a 50 MB upload to a running
//! server whose memory is measured.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use domain::{ChatId, PresetId, TemplateId, UserId};
use infra_db::or_skip;
use infra_db::testing::{Backend, TestDatabase};
use infra_import::testing::{
    CbBackFixture, cb_back_database, chatgpt_expected, chatgpt_export, zip_bomb, zip_of,
};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use support::{Arbor, command_on};
use usecase::ports::{ChatRepository, PresetRepository, TemplateRepository};

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "arbor-import-{label}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `users.password_hash` of `name`.
async fn stored_hash(db: &TestDatabase, name: &str) -> String {
    let conn = db.raw().await;
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT password_hash FROM users WHERE username = '{name}'"),
        ))
        .await
        .unwrap()
        .expect("the user");
    row.try_get("", "password_hash").unwrap()
}

/// Every chat, template and preset of the fixture, as Arbor holds them.
async fn assert_imported(db: &TestDatabase, fixture: &CbBackFixture) {
    let store = db.store().await;
    let owner = |name: &str| -> UserId {
        fixture
            .users
            .iter()
            .find(|u| u.name == name)
            .unwrap()
            .id
            .parse()
            .unwrap()
    };
    for expected in &fixture.chats {
        let (who, chat): (UserId, ChatId) = (owner(expected.owner), expected.id.parse().unwrap());
        let stored = store.get_chat(who, chat).await.expect("the chat came over");
        assert_eq!(stored.title.as_ref().map(|t| t.as_str()), expected.title);
        assert_eq!(
            stored.system_prompt.as_ref().map(|p| p.as_str()),
            expected.system_prompt
        );
        assert_eq!(
            stored.current_leaf_id.to_string(),
            expected.leaf,
            "the current leaf"
        );
        let nodes: BTreeSet<_> = store
            .list_messages(who, chat)
            .await
            .unwrap()
            .into_iter()
            .map(|m| {
                (
                    m.id.to_string(),
                    m.parent_id.map(|p| p.to_string()),
                    m.role.as_str(),
                    m.content,
                )
            })
            .collect();
        let wanted: BTreeSet<_> = expected.messages.iter().cloned().collect();
        assert_eq!(nodes, wanted, "chat {} node by node", expected.id);
    }
    let pickled: ChatId = fixture.unreadable_chat.parse().unwrap();
    assert!(store.get_chat(owner("bob"), pickled).await.is_err());
    for (id, who, content, uses, public) in &fixture.templates {
        let t = store
            .get_template(owner(who), id.parse::<TemplateId>().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t.content.as_str(), t.usage_count, t.is_public),
            (*content, *uses, *public)
        );
    }
    for (id, who, model, temperature, max_tokens) in &fixture.presets {
        let p = store
            .get_preset(owner(who), id.parse::<PresetId>().unwrap())
            .await
            .unwrap();
        assert_eq!(p.model_id.unwrap().as_str(), *model);
        assert!((p.temperature.unwrap().value() - temperature).abs() < 1e-9);
        assert_eq!(p.max_tokens.unwrap().value(), *max_tokens);
    }
}

async fn the_originals_accounts_move_in_whole(backend: Backend) {
    let db = or_skip!(TestDatabase::create(backend));
    let dir = temp_dir("cb-back");
    let source = dir.join("chat_app_tortoise.db");
    let fixture = cb_back_database(&source).await;
    let from = format!("sqlite://{}", source.display());

    let (ok, out, err) = command_on(
        &db,
        &["import", "cb-back", "--from", &from, "--dry-run"],
        "",
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("dry run, nothing written: would import 3 users (0 skipped), 3 chats (1 skipped), 15 messages, 2 templates (0 skipped), 2 presets (0 skipped)"),
        "{out}"
    );
    assert_eq!(db.count("users", None).await, 0, "a dry run writes nothing");

    let (ok, out, err) = command_on(&db, &["import", "cb-back", "--from", &from], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("imported 3 users (0 skipped), 3 chats (1 skipped), 15 messages, 2 templates (0 skipped), 2 presets (0 skipped)"),
        "{out}"
    );
    // What was repaired or left out is said.
    assert!(
        out.contains(&fixture.dangling) && out.contains("children moved up"),
        "{out}"
    );
    assert!(
        out.contains(&fixture.orphan) && out.contains("not in the tree"),
        "{out}"
    );
    assert!(out.contains("pickle"), "{out}");
    assert_imported(&db, &fixture).await;

    // A second run imports nothing and says what it skipped.
    let (ok, out, err) = command_on(&db, &["import", "cb-back", "--from", &from], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("imported 0 users (3 skipped), 0 chats (4 skipped), 0 messages, 0 templates (2 skipped), 0 presets (2 skipped)"),
        "{out}"
    );
    assert_eq!(db.count("users", None).await, 3);
    assert_eq!(db.count("messages", None).await, 15);

    // The old password works once as bcrypt; the account then holds argon2id.
    assert!(stored_hash(&db, "alice").await.starts_with("$2b$"));
    let arbor = Arbor::start(&db, "http://127.0.0.1:9/api/v1", &[]).await;
    assert_eq!(
        arbor.login_status("alice", "alice's old password").await,
        200
    );
    assert!(stored_hash(&db, "alice").await.starts_with("$argon2id$"));
    assert_eq!(
        arbor.login_status("alice", "alice's old password").await,
        200
    );
    assert_eq!(arbor.login_status("bob", "not bob's password").await, 401);
    assert!(
        stored_hash(&db, "bob").await.starts_with("$2b$"),
        "a failed login changes nothing"
    );
    // The imported chats are theirs over HTTP too, and nobody else's.
    let alice = arbor.token_with("alice", "alice's old password").await;
    let tree = arbor
        .get(
            &format!("/api/v1/chats/{}/tree", fixture.chats[0].id),
            &alice,
        )
        .await;
    assert_eq!(tree["nodes"].as_array().unwrap().len(), 8, "{tree}");
    assert_eq!(tree["chat"]["message_count"], 8);
    let bob = arbor.token_with("bob", "bob's old password").await;
    let foreign = arbor
        .client
        .get(arbor.url(&format!("/api/v1/chats/{}", fixture.chats[0].id)))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    drop(arbor);
    db.drop_database().await;
}

infra_db::on_every_backend!(the_originals_accounts_move_in_whole);

/// A chat as (title, [(role, content, parent index)] depth first, leaf index).
type Conversation = (String, Vec<(String, String, Option<usize>)>, usize);

/// Every imported chat of `owner`.
async fn imported_conversations(db: &TestDatabase, owner: UserId) -> Vec<Conversation> {
    let store = db.store().await;
    let chats = store
        .list_chats(owner, usecase::ports::ChatQuery::default())
        .await
        .unwrap();
    let mut all = Vec::new();
    for summary in chats.items {
        let chat = store.get_chat(owner, summary.chat.id).await.unwrap();
        let tree = domain::ConversationTree::build(
            chat.id,
            store.list_messages(owner, chat.id).await.unwrap(),
        )
        .unwrap();
        // Depth first, siblings oldest first.
        let mut ordered: Vec<domain::Message> = Vec::new();
        let mut stack = vec![tree.root().clone()];
        while let Some(m) = stack.pop() {
            let mut children = tree.children(m.id).unwrap();
            children.sort_by_key(|c| (c.created_at, c.id));
            stack.extend(children.into_iter().rev().cloned());
            ordered.push(m);
        }
        let index = |id| ordered.iter().position(|m| m.id == id);
        let messages = ordered
            .iter()
            .map(|m| {
                (
                    m.role.as_str().to_owned(),
                    m.content.clone(),
                    m.parent_id.and_then(index),
                )
            })
            .collect();
        all.push((
            chat.title.map(|t| t.into_inner()).unwrap_or_default(),
            messages,
            index(chat.current_leaf_id).unwrap(),
        ));
    }
    all.sort();
    all
}

fn expected_conversations() -> Vec<Conversation> {
    let mut all: Vec<_> = chatgpt_expected()
        .into_iter()
        .map(|(title, messages, leaf)| {
            (
                title.to_owned(),
                messages
                    .into_iter()
                    .map(|(r, c, p)| (r.to_owned(), c.to_owned(), p))
                    .collect(),
                leaf,
            )
        })
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatgpt_export_moves_in_by_the_command_line_once() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let dir = temp_dir("chatgpt");
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let file = dir.join("conversations.json");
    std::fs::write(&file, &json).unwrap();
    let zip = dir.join("export.zip");
    std::fs::write(&zip, zip_of(&json)).unwrap();
    let (ok, _, err) = command_on(&db, &["user", "create", "alice"], "alice's password\n");
    assert!(ok, "{err}");
    let import = |path: &Path| {
        command_on(
            &db,
            &[
                "import",
                "chatgpt",
                "--user",
                "alice",
                path.to_str().unwrap(),
            ],
            "",
        )
    };
    let (ok, out, err) = import(&file);
    assert!(ok, "{err}");
    assert!(out.contains("3 chats (0 skipped), 13 messages"), "{out}");
    let alice: UserId = {
        let conn = db.raw().await;
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                conn.get_database_backend(),
                "SELECT id FROM users WHERE username = 'alice'",
            ))
            .await
            .unwrap()
            .unwrap();
        let id: uuid::Uuid = row.try_get("", "id").unwrap();
        UserId::from_u128(id.as_u128())
    };
    assert_eq!(
        imported_conversations(&db, alice).await,
        expected_conversations()
    );
    // The same export again, as the zip ChatGPT sends: nothing new.
    let (ok, out, err) = import(&zip);
    assert!(ok, "{err}");
    assert!(out.contains("0 chats (3 skipped), 0 messages"), "{out}");
    assert_eq!(db.count("chats", None).await, 3);

    // Bad input is refused with a clear error and imports nothing.
    let bad = [
        (
            "truncated.json",
            json[..json.len() / 3].to_vec(),
            "malformed",
        ),
        ("schema.json", br#"[{"title": "x"}]"#.to_vec(), "mapping"),
        (
            "picture.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            "not a ChatGPT export",
        ),
        ("bomb.zip", zip_bomb(600 << 20), "too large"),
    ];
    for (name, bytes, says) in bad {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (ok, _, err) = import(&path);
        assert!(!ok, "{name} was accepted");
        assert!(err.contains(says), "{name}: {err}");
    }
    let (ok, _, err) = command_on(
        &db,
        &[
            "import",
            "chatgpt",
            "--user",
            "nobody",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(!ok && err.contains("no account named"), "{err}");
    assert_eq!(
        db.count("chats", None).await,
        3,
        "nothing more was imported"
    );
    db.drop_database().await;
}

/// Peak resident set size of a process in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// An export of `conversations` conversations of about `bytes` each, written to `path`.
fn write_large_export(path: &Path, conversations: usize, bytes: usize) -> u64 {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(b"[").unwrap();
    let long = "All work and no play. ".repeat(bytes / 22);
    for i in 0..conversations {
        if i > 0 {
            out.write_all(b",").unwrap();
        }
        let node = |id: &str, role: &str, text: &str, parent: Option<&str>| {
            json!({
                "id": id,
                "parent": parent,
                "children": [],
                "message": {
                    "id": id,
                    "author": {"role": role},
                    "create_time": 1_700_000_000.0 + i as f64,
                    "content": {"content_type": "text", "parts": [text]}
                }
            })
        };
        let conversation = json!({
            "title": format!("Long conversation {i}"),
            "create_time": 1_700_000_000.0 + i as f64,
            "update_time": 1_700_000_000.0 + i as f64,
            "conversation_id": format!("00000000-0000-4000-8000-{i:012}"),
            "current_node": "a",
            "mapping": {
                "root": {"id": "root", "parent": null, "children": ["q"], "message": null},
                "q": node("q", "user", &long, Some("root")),
                "a": node("a", "assistant", "Noted.", Some("q")),
            }
        });
        serde_json::to_writer(&mut out, &conversation).unwrap();
    }
    out.write_all(b"]").unwrap();
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_export_is_imported_without_holding_it_in_memory() {
    let db = or_skip!(TestDatabase::create(Backend::Sqlite));
    let dir = temp_dir("large");
    let path = dir.join("conversations.json");
    let size = write_large_export(&path, 100, 512 * 1024);
    assert!(size > 50_000_000, "{size} bytes");
    let arbor = Arbor::start(&db, "http://127.0.0.1:9/api/v1", &[]).await;
    let token = arbor.token("alice", true).await;
    let before = arbor.rss_mib();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::stream_with_length(body, size)
            .file_name("conversations.json")
            .mime_str("application/json")
            .unwrap(),
    );
    let response = arbor
        .client
        .post(arbor.url("/api/v1/import/chatgpt"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["chats"], 100, "{report}");
    let peak = peak_rss_mib(arbor.child.id());
    let grown = peak - before;
    eprintln!(
        "50 MB import: {:.1} MB uploaded, resident {before:.1} MiB before, peak {peak:.1} MiB (+{grown:.1} MiB)",
        size as f64 / 1e6
    );
    assert!(
        grown < 40.0,
        "the server grew by {grown:.1} MiB for a {:.1} MB upload: it held the export in memory",
        size as f64 / 1e6
    );
    drop(arbor);
    db.drop_database().await;
}
