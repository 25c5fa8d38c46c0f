//! Fixtures for import tests (feature `testing`), written from the documented formats — never
//! copied from anywhere: a database in the original service's schema, and ChatGPT exports.
//! Each comes with what Arbor must hold once it is imported.

#![allow(
    clippy::expect_used,
    reason = "test fixtures: a failed step aborts the test"
)]

use std::io::Write;
use std::path::Path;

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

/// The original's schema (Tortoise models, aerich migration `0_20250608025443`), on SQLite.
const SCHEMA: [&str; 8] = [
    r#"CREATE TABLE "user" (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(255) NOT NULL UNIQUE,
        name VARCHAR(255) NOT NULL UNIQUE, password VARCHAR(255) NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"#,
    r#"CREATE TABLE discussionstructure (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(255) NOT NULL UNIQUE,
        title VARCHAR(255), system_prompt VARCHAR(1000), serialized_structure BLOB NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        user_id INT NOT NULL REFERENCES "user" (id) ON DELETE CASCADE)"#,
    "CREATE TABLE message (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(255) NOT NULL UNIQUE,
        role VARCHAR(50) NOT NULL, content TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        discussion_id INT NOT NULL REFERENCES discussionstructure (id) ON DELETE CASCADE)",
    "CREATE TABLE llmdetails (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model VARCHAR(255), provider VARCHAR(255),
        prompt_tokens INT, completion_tokens INT, total_tokens INT,
        message_id INT NOT NULL UNIQUE REFERENCES message (id) ON DELETE CASCADE)",
    "CREATE TABLE available_models (
        id VARCHAR(255) NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, description TEXT,
        context_length INT, pricing_prompt VARCHAR(50), pricing_completion VARCHAR(50),
        architecture_data TEXT, created INT, last_updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        is_active INT NOT NULL DEFAULT 1)",
    r#"CREATE TABLE prompttemplate (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(255) NOT NULL UNIQUE,
        name VARCHAR(255) NOT NULL, description TEXT, template_content TEXT NOT NULL,
        category VARCHAR(255), variables TEXT, is_public INT NOT NULL DEFAULT 0,
        is_favorite INT NOT NULL DEFAULT 0, usage_count INT NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        user_id INT NOT NULL REFERENCES "user" (id) ON DELETE CASCADE)"#,
    r#"CREATE TABLE conversationpreset (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uuid VARCHAR(255) NOT NULL UNIQUE,
        name VARCHAR(255) NOT NULL, description TEXT, model_id VARCHAR(255) NOT NULL,
        temperature VARCHAR(10) NOT NULL DEFAULT '0.7', max_tokens INT NOT NULL DEFAULT 1000,
        system_prompt TEXT, is_favorite INT NOT NULL DEFAULT 0, usage_count INT NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        user_id INT NOT NULL REFERENCES "user" (id) ON DELETE CASCADE)"#,
    "CREATE TABLE aerich (
        id INTEGER PRIMARY KEY AUTOINCREMENT, version VARCHAR(255) NOT NULL,
        app VARCHAR(100) NOT NULL, content JSON NOT NULL)",
];

/// A message Arbor must hold after the import: (id, parent, role, content).
pub type Node = (String, Option<String>, &'static str, String);

/// A chat Arbor must hold after the import.
#[derive(Debug, Clone)]
pub struct ExpectedChat {
    /// Its id (kept).
    pub id: String,
    /// Owner's username.
    pub owner: &'static str,
    /// Title.
    pub title: Option<&'static str>,
    /// System prompt.
    pub system_prompt: Option<&'static str>,
    /// Every message, the root first.
    pub messages: Vec<Node>,
    /// The current leaf.
    pub leaf: String,
}

/// A user of the fixture.
#[derive(Debug, Clone)]
pub struct ExpectedUser {
    /// Id (kept).
    pub id: String,
    /// Name.
    pub name: &'static str,
    /// The password their bcrypt hash is of.
    pub password: &'static str,
}

/// The original's database and what Arbor must hold once it is imported.
#[derive(Debug, Clone)]
pub struct CbBackFixture {
    /// The users (every one importable).
    pub users: Vec<ExpectedUser>,
    /// The chats that come over.
    pub chats: Vec<ExpectedChat>,
    /// A chat that cannot (its tree is a legacy pickle).
    pub unreadable_chat: String,
    /// Templates that come over: (id, owner, content as Arbor has it, usage, public).
    pub templates: Vec<(String, &'static str, &'static str, u64, bool)>,
    /// Presets that come over: (id, owner, model, temperature, max tokens).
    pub presets: Vec<(String, &'static str, &'static str, f64, u32)>,
    /// The message row no tree names (left out, reported).
    pub orphan: String,
    /// The tree node whose row was deleted (left out, its children moved up).
    pub dangling: String,
}

fn id(prefix: u32, n: u32) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

fn at(second: u32) -> String {
    format!(
        "2025-06-08 02:{:02}:{:02}.123456+00:00",
        second / 60,
        second % 60
    )
}

/// One chat of the fixture: its rows and the structure.
struct Chat {
    uuid: String,
    user: i64,
    title: Option<&'static str>,
    system_prompt: Option<&'static str>,
    structure: Vec<u8>,
    /// (uuid, role, content, second).
    rows: Vec<(String, &'static str, &'static str, u32)>,
}

/// `{"uuid": …, "children": [ … ]}` of `node` in `edges` (parent → children).
fn nested(node: &str, edges: &[(&str, &str)]) -> Value {
    json!({
        "uuid": node,
        "children": edges
            .iter()
            .filter(|(p, _)| *p == node)
            .map(|(_, c)| nested(c, edges))
            .collect::<Vec<_>>(),
    })
}

/// Writes the original's database at `path` and says what importing it must give.
///
/// # Panics
/// When the file cannot be written.
pub async fn cb_back_database(path: &Path) -> CbBackFixture {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(url.as_str())
        .await
        .expect("fixture database");
    for statement in SCHEMA {
        db.execute_unprepared(statement)
            .await
            .expect("fixture schema");
    }
    let users = vec![
        ExpectedUser {
            id: id(1, 1),
            name: "alice",
            password: "alice's old password",
        },
        ExpectedUser {
            id: id(1, 2),
            name: "bob",
            password: "bob's old password",
        },
        ExpectedUser {
            id: id(1, 3),
            name: "carol",
            password: "carol's old password",
        },
    ];
    for (i, u) in users.iter().enumerate() {
        let hash = bcrypt::hash(u.password, 4).expect("bcrypt");
        db.execute_unprepared(&format!(
            r#"INSERT INTO "user" (id, uuid, name, password, created_at) VALUES ({}, '{}', '{}', '{hash}', '{}')"#,
            i + 1,
            u.id,
            u.name,
            at(i as u32)
        ))
        .await
        .expect("fixture user");
    }

    // Alice's first chat: a regenerated answer (two siblings) and a branch from the root; the
    // newest message (the original's current node) is on the root branch.
    let m = |n| id(2, n);
    let branched = Chat {
        uuid: id(3, 1),
        user: 1,
        title: Some("Branches"),
        system_prompt: None,
        structure: serde_json::to_vec(&nested(
            &m(1),
            &[
                (&m(1), &m(2)),
                (&m(2), &m(3)),
                (&m(2), &m(4)),
                (&m(4), &m(5)),
                (&m(5), &m(6)),
                (&m(1), &m(7)),
                (&m(7), &m(8)),
            ],
        ))
        .expect("json"),
        rows: vec![
            (m(1), "system", "", 10),
            (m(2), "user", "Hello", 11),
            (m(3), "assistant", "Hi!", 12),
            (m(4), "assistant", "Hello there", 13),
            (m(5), "user", "Tell me more", 14),
            (m(6), "assistant", "More, at length.", 15),
            (m(7), "user", "Another topic", 16),
            (m(8), "assistant", "Sure: another topic.", 17),
        ],
    };
    // Alice's second chat: the answer under the first question was deleted (its node stays in
    // the tree, as the original leaves it), and one row hangs in no tree.
    let d = |n| id(4, n);
    let dangling = Chat {
        uuid: id(3, 2),
        user: 1,
        title: Some("Dangling"),
        system_prompt: Some("Be brief"),
        structure: serde_json::to_vec(&nested(
            &d(1),
            &[
                (&d(1), &d(2)),
                (&d(2), &d(3)),
                (&d(3), &d(4)),
                (&d(4), &d(5)),
            ],
        ))
        .expect("json"),
        rows: vec![
            (d(1), "system", "You are helpful.", 20),
            (d(2), "user", "First question", 21),
            (d(4), "user", "Second question", 23),
            (d(5), "assistant", "Second answer", 24),
            (d(9), "user", "An orphan row", 25),
        ],
    };
    // Bob: a plain chat, and one whose tree is a legacy pickle.
    let b = |n| id(5, n);
    let plain = Chat {
        uuid: id(3, 3),
        user: 2,
        title: None,
        system_prompt: None,
        structure: serde_json::to_vec(&nested(&b(1), &[(&b(1), &b(2)), (&b(2), &b(3))]))
            .expect("json"),
        rows: vec![
            (b(1), "system", "", 30),
            (b(2), "user", "日本語で答えて", 31),
            (b(3), "assistant", "はい、どうぞ。", 32),
        ],
    };
    let pickled = Chat {
        uuid: id(3, 4),
        user: 2,
        title: Some("Old"),
        system_prompt: None,
        structure: vec![0x80, 0x04, 0x95, 0x00],
        rows: vec![(b(9), "system", "", 33)],
    };
    for (n, chat) in [&branched, &dangling, &plain, &pickled]
        .into_iter()
        .enumerate()
    {
        let chat_row = n + 1;
        let blob: String = chat.structure.iter().map(|b| format!("{b:02x}")).collect();
        let (created, updated) = chat
            .rows
            .first()
            .zip(chat.rows.last())
            .map_or((0, 0), |(f, l)| (f.3, l.3));
        db.execute_unprepared(&format!(
            "INSERT INTO discussionstructure (id, uuid, title, system_prompt, serialized_structure, created_at, updated_at, user_id)
             VALUES ({chat_row}, '{}', {}, {}, X'{blob}', '{}', '{}', {})",
            chat.uuid,
            chat.title.map_or("NULL".into(), |t| format!("'{t}'")),
            chat.system_prompt.map_or("NULL".into(), |t| format!("'{t}'")),
            at(created),
            at(updated),
            chat.user
        ))
        .await
        .expect("fixture chat");
        for (uuid, role, content, second) in &chat.rows {
            db.execute_unprepared(&format!(
                "INSERT INTO message (uuid, role, content, created_at, discussion_id)
                 VALUES ('{uuid}', '{role}', '{content}', '{}', {chat_row})",
                at(*second)
            ))
            .await
            .expect("fixture message");
        }
    }
    db.execute_unprepared(&format!(
        "INSERT INTO llmdetails (provider, prompt_tokens, completion_tokens, total_tokens, message_id)
         SELECT 'OpenAI', 10, 5, 15, id FROM message WHERE uuid = '{}'",
        m(3)
    ))
    .await
    .expect("fixture details");
    let t = |n| id(6, n);
    db.execute_unprepared(&format!(
        "INSERT INTO prompttemplate (uuid, name, description, template_content, category, variables, is_public, is_favorite, usage_count, user_id)
         VALUES ('{}', 'Review', 'Code review', 'Review {{code}} in {{lang}}, {{{{literally}}}}', 'dev', '[\"code\", \"lang\"]', 1, 0, 7, 1),
                ('{}', 'Summary', NULL, 'Summarise this', NULL, NULL, 0, 1, 0, 1)",
        t(1),
        t(2)
    ))
    .await
    .expect("fixture templates");
    let p = |n| id(7, n);
    db.execute_unprepared(&format!(
        "INSERT INTO conversationpreset (uuid, name, description, model_id, temperature, max_tokens, system_prompt, is_favorite, usage_count, user_id)
         VALUES ('{}', 'Precise', 'Low temperature', 'openai/gpt-4o', '0.3', 500, 'Be precise.', 1, 4, 1),
                ('{}', 'Chatty', NULL, 'google/gemini-2.0-flash-001', '0.9', 2000, NULL, 0, 0, 3)",
        p(1),
        p(2)
    ))
    .await
    .expect("fixture presets");
    db.close().await.expect("fixture close");

    let node = |id: &str, parent: Option<&str>, role, content: &str| {
        (
            id.to_owned(),
            parent.map(str::to_owned),
            role,
            content.to_owned(),
        )
    };
    CbBackFixture {
        users,
        chats: vec![
            ExpectedChat {
                id: branched.uuid.clone(),
                owner: "alice",
                title: Some("Branches"),
                system_prompt: None,
                messages: vec![
                    node(&m(1), None, "system", ""),
                    node(&m(2), Some(&m(1)), "user", "Hello"),
                    node(&m(3), Some(&m(2)), "assistant", "Hi!"),
                    node(&m(4), Some(&m(2)), "assistant", "Hello there"),
                    node(&m(5), Some(&m(4)), "user", "Tell me more"),
                    node(&m(6), Some(&m(5)), "assistant", "More, at length."),
                    node(&m(7), Some(&m(1)), "user", "Another topic"),
                    node(&m(8), Some(&m(7)), "assistant", "Sure: another topic."),
                ],
                leaf: m(8),
            },
            ExpectedChat {
                id: dangling.uuid.clone(),
                owner: "alice",
                title: Some("Dangling"),
                system_prompt: Some("Be brief"),
                messages: vec![
                    node(&d(1), None, "system", "You are helpful."),
                    node(&d(2), Some(&d(1)), "user", "First question"),
                    node(&d(4), Some(&d(2)), "user", "Second question"),
                    node(&d(5), Some(&d(4)), "assistant", "Second answer"),
                ],
                // The orphan row is the newest; it is left out, so the newest kept message.
                leaf: d(5),
            },
            ExpectedChat {
                id: plain.uuid.clone(),
                owner: "bob",
                title: None,
                system_prompt: None,
                messages: vec![
                    node(&b(1), None, "system", ""),
                    node(&b(2), Some(&b(1)), "user", "日本語で答えて"),
                    node(&b(3), Some(&b(2)), "assistant", "はい、どうぞ。"),
                ],
                leaf: b(3),
            },
        ],
        unreadable_chat: pickled.uuid,
        templates: vec![
            (
                t(1),
                "alice",
                "Review {{code}} in {{lang}}, {literally}",
                7,
                true,
            ),
            (t(2), "alice", "Summarise this", 0, false),
        ],
        presets: vec![
            (p(1), "alice", "openai/gpt-4o", 0.3, 500),
            (p(2), "carol", "google/gemini-2.0-flash-001", 0.9, 2000),
        ],
        orphan: d(9),
        dangling: d(3),
    }
}

/// A ChatGPT export of three conversations, written by hand from the export's documented
/// shape: a branched one (an edited question: two user siblings, the current node on the
/// second branch), one with an image and a tool call, and a plain one.
#[must_use]
pub fn chatgpt_export() -> Value {
    let msg = |id: &str, role: &str, text: &str, t: f64| {
        json!({
            "id": id,
            "author": {"role": role, "name": null, "metadata": {}},
            "create_time": t,
            "update_time": null,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "end_turn": true,
            "weight": 1.0,
            "metadata": {},
            "recipient": "all"
        })
    };
    let node = |id: &str, message: Value, parent: Option<&str>, children: &[&str]| json!({"id": id, "message": message, "parent": parent, "children": children});
    let hidden_system = json!({
        "id": "sys", "author": {"role": "system", "name": null, "metadata": {}},
        "create_time": null, "content": {"content_type": "text", "parts": [""]},
        "metadata": {"is_visually_hidden_from_conversation": true}, "recipient": "all"
    });
    let branched = json!({
        "title": "Branched conversation",
        "create_time": 1_700_000_000.25,
        "update_time": 1_700_000_100.5,
        "conversation_id": "c0000001-0000-4000-8000-000000000001",
        "id": "c0000001-0000-4000-8000-000000000001",
        "current_node": "a2",
        "mapping": {
            "root": node("root", Value::Null, None, &["sys"]),
            "sys": node("sys", hidden_system.clone(), Some("root"), &["u1", "u2"]),
            "u1": node("u1", msg("u1", "user", "What is a tree?", 1_700_000_001.0), Some("sys"), &["a1"]),
            "a1": node("a1", msg("a1", "assistant", "A graph without cycles.", 1_700_000_002.0), Some("u1"), &[]),
            "u2": node("u2", msg("u2", "user", "What is a tree, in botany?", 1_700_000_003.0), Some("sys"), &["a2"]),
            "a2": node("a2", msg("a2", "assistant", "A perennial woody plant.", 1_700_000_004.0), Some("u2"), &[]),
        }
    });
    let image = json!({
        "id": "u1", "author": {"role": "user", "name": null, "metadata": {}},
        "create_time": 1_700_001_001.0,
        "content": {"content_type": "multimodal_text", "parts": [
            {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-abc", "width": 100, "height": 80},
            "What is in this picture?"
        ]},
        "metadata": {}, "recipient": "all"
    });
    let tool_call = json!({
        "id": "a1", "author": {"role": "assistant", "name": null, "metadata": {}},
        "create_time": 1_700_001_002.0,
        "content": {"content_type": "code", "language": "unknown", "text": "search(\"cats\")"},
        "metadata": {}, "recipient": "browser"
    });
    let tool_output = json!({
        "id": "t1", "author": {"role": "tool", "name": "browser", "metadata": {}},
        "create_time": 1_700_001_003.0,
        "content": {"content_type": "tether_browsing_display", "result": "…", "summary": null},
        "metadata": {}, "recipient": "all"
    });
    let multimodal = json!({
        "title": "A picture",
        "create_time": 1_700_001_000.0,
        "update_time": 1_700_001_010.0,
        "conversation_id": "c0000002-0000-4000-8000-000000000002",
        "current_node": "a2",
        "mapping": {
            "root": node("root", Value::Null, None, &["u1"]),
            "u1": node("u1", image, Some("root"), &["a1"]),
            "a1": node("a1", tool_call, Some("u1"), &["t1"]),
            "t1": node("t1", tool_output, Some("a1"), &["a2"]),
            "a2": node("a2", msg("a2", "assistant", "A cat.", 1_700_001_004.0), Some("t1"), &[]),
        }
    });
    let plain = json!({
        "title": "Plain",
        "create_time": 1_700_002_000.0,
        "update_time": 1_700_002_010.0,
        "id": "c0000003-0000-4000-8000-000000000003",
        "current_node": "a1",
        "mapping": {
            "root": node("root", Value::Null, None, &["u1"]),
            "u1": node("u1", msg("u1", "user", "Hi", 1_700_002_001.0), Some("root"), &["a1"]),
            "a1": node("a1", msg("a1", "assistant", "Hello!", 1_700_002_002.0), Some("u1"), &[]),
        }
    });
    json!([branched, multimodal, plain])
}

/// A conversation as Arbor must hold it: title, messages `(role, content, parent index)`
/// in tree order, the current leaf's index.
pub type ExpectedConversation = (
    &'static str,
    Vec<(&'static str, &'static str, Option<usize>)>,
    usize,
);

/// What [`chatgpt_export`] must become: per conversation title, the messages' (role,
/// content) in tree order, each with its parent's index (`None` for the root), and the
/// current leaf's index.
#[must_use]
pub fn chatgpt_expected() -> Vec<ExpectedConversation> {
    vec![
        (
            "Branched conversation",
            vec![
                ("system", "", None),
                ("user", "What is a tree?", Some(0)),
                ("assistant", "A graph without cycles.", Some(1)),
                ("user", "What is a tree, in botany?", Some(0)),
                ("assistant", "A perennial woody plant.", Some(3)),
            ],
            4,
        ),
        (
            "A picture",
            vec![
                ("system", "", None),
                (
                    "user",
                    "[image not imported]\nWhat is in this picture?",
                    Some(0),
                ),
                (
                    "assistant",
                    "[call to browser]\n```\nsearch(\"cats\")\n```",
                    Some(1),
                ),
                (
                    "assistant",
                    "[output of browser]\n[tether_browsing_display not imported]",
                    Some(2),
                ),
                ("assistant", "A cat.", Some(3)),
            ],
            4,
        ),
        (
            "Plain",
            vec![
                ("system", "", None),
                ("user", "Hi", Some(0)),
                ("assistant", "Hello!", Some(1)),
            ],
            2,
        ),
    ]
}

/// `value` as the export's zip (`conversations.json` inside a folder, as ChatGPT ships it).
///
/// # Panics
/// When the zip cannot be written.
#[must_use]
pub fn zip_of(json: &[u8]) -> Vec<u8> {
    zip_with_files(json, 0)
}

/// [`zip_of`] with `empty` more empty files (past 65,535 entries the zip is a zip64 one).
///
/// # Panics
/// When the zip cannot be written.
#[must_use]
pub fn zip_with_files(json: &[u8], empty: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("export/conversations.json", options)
            .expect("zip entry");
        zip.write_all(json).expect("zip write");
        zip.start_file("export/chat.html", options)
            .expect("zip entry");
        zip.write_all(b"<html></html>").expect("zip write");
        let stored = options.compression_method(zip::CompressionMethod::Stored);
        for i in 0..empty {
            zip.start_file(format!("export/files/{i}"), stored)
                .expect("zip entry");
        }
        zip.finish().expect("zip finish");
    }
    out.into_inner()
}

/// A zip whose `conversations.json` is `inflated` bytes of blanks: a few KiB that inflate a
/// thousand-fold.
///
/// # Panics
/// When the zip cannot be written.
#[must_use]
pub fn zip_bomb(inflated: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(inflated > u32::MAX as usize);
        zip.start_file("conversations.json", options)
            .expect("zip entry");
        zip.write_all(b"[").expect("zip write");
        let blanks = vec![b' '; 1 << 20];
        let mut left = inflated;
        while left > 0 {
            let n = left.min(blanks.len());
            zip.write_all(&blanks[..n]).expect("zip write");
            left -= n;
        }
        zip.write_all(b"]").expect("zip write");
        zip.finish().expect("zip finish");
    }
    out.into_inner()
}
