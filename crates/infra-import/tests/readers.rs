//! The readers against real files: the original's database as its schema documents it, and
//! ChatGPT exports as JSON, as zip, and as what is neither.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use std::path::PathBuf;

use domain::{UserId, rebuild_tree};
use infra_import::testing::{
    cb_back_database, chatgpt_expected, chatgpt_export, zip_bomb, zip_of, zip_with_files,
};
use infra_import::{CbBackDatabase, ChatGptExports};
use usecase::import::{ConversationSource, ExportError, ForeignConversation, LegacySource};

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arbor-readers-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn read(
    reader: ChatGptExports,
    path: &std::path::Path,
    owner: UserId,
) -> Result<Vec<ForeignConversation>, ExportError> {
    let mut rx = reader.conversations(path, owner)?;
    let mut all = Vec::new();
    while let Some(c) = rx.recv().await {
        all.push(c?);
    }
    Ok(all)
}

const LIMIT: u64 = 8 << 20;

#[tokio::test]
async fn an_export_as_json_or_zip_gives_the_same_trees_with_ids_per_owner() {
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let alice = UserId::from_u128(1);
    let plain = read(
        ChatGptExports::new(LIMIT),
        &temp("conversations.json", &json),
        alice,
    )
    .await
    .unwrap();
    let zipped = read(
        ChatGptExports::new(LIMIT),
        &temp("export.zip", &zip_of(&json)),
        alice,
    )
    .await
    .unwrap();
    assert_eq!(plain, zipped);
    for (conversation, (title, messages, leaf)) in plain.into_iter().zip(chatgpt_expected()) {
        assert_eq!(conversation.title.as_deref(), Some(title));
        let id = conversation.id;
        let tree = rebuild_tree(
            id,
            conversation.root,
            conversation.nodes,
            conversation.current,
        );
        let got: Vec<_> = tree
            .messages
            .iter()
            .map(|m| {
                let parent = m
                    .parent_id
                    .map(|p| tree.messages.iter().position(|x| x.id == p).unwrap());
                (m.role.as_str(), m.content.as_str(), parent)
            })
            .collect();
        assert_eq!(got, messages, "{title}");
        assert_eq!(
            tree.messages[leaf].id, tree.leaf,
            "{title}: the current branch"
        );
        assert!(tree.repairs.is_empty(), "{title}: {:?}", tree.repairs);
    }
    // Another owner: the same export names other chats and messages.
    let bob = read(
        ChatGptExports::new(LIMIT),
        &temp("c.json", &json),
        UserId::from_u128(2),
    )
    .await
    .unwrap();
    let again = read(ChatGptExports::new(LIMIT), &temp("c.json", &json), alice)
        .await
        .unwrap();
    assert_ne!(bob[0].id, again[0].id);
    assert_ne!(bob[0].root.id, again[0].root.id);
    assert_eq!(again[0].id, zipped[0].id, "the same owner, the same ids");
}

#[tokio::test]
async fn what_is_not_a_whole_export_is_refused_for_what_it_is() {
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let owner = UserId::from_u128(1);
    let reader = ChatGptExports::new(LIMIT);
    let truncated = read(reader, &temp("t.json", &json[..json.len() / 2]), owner).await;
    assert!(
        matches!(&truncated, Err(ExportError::Malformed(why)) if why.contains("EOF")),
        "{truncated:?}"
    );
    let schema = read(
        reader,
        &temp("s.json", br#"[{"title": "no mapping"}]"#),
        owner,
    )
    .await;
    assert!(
        matches!(&schema, Err(ExportError::Malformed(why)) if why.contains("mapping")),
        "{schema:?}"
    );
    let object = read(reader, &temp("o.json", br#"{"mapping": {}}"#), owner).await;
    assert!(
        matches!(object, Err(ExportError::Malformed(_))),
        "{object:?}"
    );
    let png = read(
        reader,
        &temp("p.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        owner,
    )
    .await;
    assert!(matches!(png, Err(ExportError::NotAnExport)), "{png:?}");
    let empty_zip = zip_of(b"").len();
    assert!(empty_zip > 0);
    let bomb = zip_bomb(64 << 20);
    assert!(bomb.len() < 1 << 20, "a bomb is small: {}", bomb.len());
    let refused = read(reader, &temp("b.zip", &bomb), owner).await;
    assert!(
        matches!(refused, Err(ExportError::TooLarge(_))),
        "{refused:?}"
    );
    let too_big = read(ChatGptExports::new(1024), &temp("big.json", &json), owner).await;
    assert!(
        matches!(too_big, Err(ExportError::TooLarge(_))),
        "{too_big:?}"
    );
    // One conversation is held whole while it is converted: a giant one is refused, however
    // large the file may be.
    let giant = format!(
        r#"[{{"id": "g", "mapping": {{"r": {{"message": null, "parent": null}}, "q": {{"parent": "r", "message": {{"author": {{"role": "user"}}, "content": {{"content_type": "text", "parts": ["{}"]}}}}}}}}}}]"#,
        "x".repeat(33 << 20)
    );
    let refused = read(
        ChatGptExports::new(1 << 30),
        &temp("giant.json", giant.as_bytes()),
        owner,
    )
    .await;
    assert!(
        matches!(&refused, Err(ExportError::TooLarge(why)) if why.contains("a conversation")),
        "{refused:?}"
    );
}

/// The zip reader holds a zip's whole directory in memory, so the count the end record
/// declares is checked first: a zip of many tiny files is refused before it is opened, and a
/// zip64 one under the limit is read.
#[tokio::test]
async fn a_zip_of_too_many_files_is_refused_before_its_directory_is_read() {
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let owner = UserId::from_u128(1);
    let reader = ChatGptExports::new(LIMIT);
    let zip64 = zip_with_files(&json, 70_000);
    let read_whole = read(reader, &temp("zip64.zip", &zip64), owner).await;
    assert_eq!(read_whole.map(|all| all.len()).ok(), Some(3));
    // 65,535 entries fill the classic count without a zip64 record.
    let full = zip_with_files(&json, 65_533);
    let read_whole = read(reader, &temp("full.zip", &full), owner).await;
    assert_eq!(read_whole.map(|all| all.len()).ok(), Some(3));
    let crowded = zip_with_files(&json, 100_000);
    let refused = read(reader, &temp("crowded.zip", &crowded), owner).await;
    assert!(
        matches!(&refused, Err(ExportError::TooLarge(why)) if why.contains("100000 files")),
        "{refused:?}"
    );
    // The count alone decides: with its directory's first entry damaged (so reading the
    // directory would fail) the answer is still "too many files".
    let mut unread = crowded.clone();
    let directory = unread.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    unread[directory + 3] = 0;
    let refused = read(reader, &temp("unread.zip", &unread), owner).await;
    assert!(
        matches!(refused, Err(ExportError::TooLarge(_))),
        "{refused:?}"
    );
    // A broken end record after the real one: the reader falls back to the real one, and so
    // does the count.
    let mut cloaked = crowded.clone();
    cloaked.extend_from_slice(b"PK\x05\x06\0\0\0\0\x05\0\x05\0\0\0\0\0\0\0\0\0\xff\xff");
    let refused = read(reader, &temp("cloaked.zip", &cloaked), owner).await;
    assert!(
        matches!(refused, Err(ExportError::TooLarge(_))),
        "{refused:?}"
    );
    // A zip64 locator not preceded by the record it points to (the zip reader would go
    // looking for one elsewhere): broken, not trusted.
    let mut cut = crowded;
    let record = cut.windows(4).rposition(|w| w == b"PK\x06\x06").unwrap();
    cut[record..record + 4].copy_from_slice(b"PK\0\0");
    let broken = read(reader, &temp("cut.zip", &cut), owner).await;
    assert!(
        matches!(&broken, Err(ExportError::Malformed(why)) if why.contains("zip64")),
        "{broken:?}"
    );
}

#[tokio::test]
async fn a_bom_is_skipped_damage_is_malformed_and_errors_stay_short() {
    let json = serde_json::to_vec(&chatgpt_export()).unwrap();
    let owner = UserId::from_u128(1);
    let reader = ChatGptExports::new(LIMIT);
    let bom = [b"\xef\xbb\xbf".as_slice(), &json].concat();
    assert_eq!(
        read(reader, &temp("bom.json", &bom), owner)
            .await
            .unwrap()
            .len(),
        3
    );
    // A byte flipped inside the compressed entry: the archive is damaged, not the machine.
    let mut zip = zip_of(&json);
    let middle = zip.len() / 3;
    zip[middle] ^= 0xff;
    let damaged = read(reader, &temp("damaged.zip", &zip), owner).await;
    assert!(
        matches!(damaged, Err(ExportError::Malformed(_))),
        "{damaged:?}"
    );
    // A wrong value megabytes long is not quoted back whole.
    let huge = format!(
        r#"[{{"id": "a", "mapping": {{}}, "create_time": "{}"}}]"#,
        "x".repeat(1 << 20)
    );
    match read(reader, &temp("huge.json", huge.as_bytes()), owner).await {
        Err(ExportError::Malformed(why)) => assert!(why.len() < 400, "{} bytes", why.len()),
        other => panic!("{other:?}"),
    }
    // Ids are derived from the conversation and node ids without ambiguity.
    let pair = |conversation: &str, node: &str| {
        serde_json::json!({"id": conversation, "current_node": node, "mapping": {
            "r": {"parent": null, "message": null},
            node: {"parent": "r", "message": {"author": {"role": "user"},
                "content": {"content_type": "text", "parts": ["hi"]}}}
        }})
    };
    let tricky =
        serde_json::to_vec(&serde_json::json!([pair("x", "y:z"), pair("x:y", "z")])).unwrap();
    let both = read(reader, &temp("tricky.json", &tricky), owner)
        .await
        .unwrap();
    assert_ne!(both[0].nodes[0].id, both[1].nodes[0].id);
    assert_ne!(both[0].id, both[1].id);
}

#[tokio::test]
async fn the_originals_database_is_read_row_for_row() {
    let dir = std::env::temp_dir().join(format!("arbor-cb-back-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chat_app_tortoise.db");
    let fixture = cb_back_database(&path).await;
    let db = CbBackDatabase::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows = db.user_rows().await.unwrap();
    assert_eq!(rows.len(), 3);
    let alice = db.account(rows[0]).await.unwrap();
    assert_eq!(alice.user.name, "alice");
    assert!(alice.user.password_hash.starts_with("$2b$04$"));
    assert_eq!(alice.chats.len(), 2);
    assert_eq!(alice.templates.len(), 2);
    assert_eq!(alice.presets.len(), 1);
    let tree = alice.chats[0].structure.as_ref().unwrap();
    assert_eq!(tree.len(), 8);
    assert_eq!(tree[0].parent, None);
    assert!(tree[1..].iter().all(|n| n.parent.is_some()));
    let bob = db.account(rows[1]).await.unwrap();
    let pickled = bob
        .chats
        .iter()
        .find(|c| c.uuid == fixture.unreadable_chat)
        .unwrap();
    assert!(pickled.structure.as_ref().unwrap_err().contains("pickle"));
    // A row that cannot be read leaves out that chat or template, never the account.
    {
        use sea_orm::ConnectionTrait;
        let raw = sea_orm::Database::connect(format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        raw.execute_unprepared(&format!(
            "UPDATE message SET created_at = 'not a date' WHERE uuid = '{}'",
            fixture.chats[2].messages[1].0
        ))
        .await
        .unwrap();
        raw.execute_unprepared(
            "UPDATE prompttemplate SET created_at = 'never' WHERE name = 'Summary'",
        )
        .await
        .unwrap();
    }
    let bob = db.account(rows[1]).await.unwrap();
    let broken = bob
        .chats
        .iter()
        .find(|c| c.uuid == fixture.chats[2].id)
        .unwrap();
    assert!(
        broken
            .structure
            .as_ref()
            .unwrap_err()
            .contains("cannot be read")
    );
    let alice = db.account(rows[0]).await.unwrap();
    assert_eq!(alice.templates.iter().filter(|t| t.is_err()).count(), 1);
    // Anything else is refused as not the original's database.
    let other = temp("other.db", b"");
    let refused = CbBackDatabase::open(&format!("sqlite://{}", other.display())).await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("not the original")
    );
}
