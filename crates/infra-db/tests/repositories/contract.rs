//! The repositories' contract: what every implementation of the ports must do, written
//! against the port traits only, so it runs on the SeaORM store (SQLite, PostgreSQL, MariaDB)
//! and on the in-memory store the use-case tests stand on. What only SQL can show (rows,
//! cascades, query counts, a failure half-way) stays in `suite`.

use super::*;

pub async fn usernames_are_unique_regardless_of_case<H: Harness>(db: &H) {
    let store = db.store().await;
    let id = user(&store, "Alice").await;
    let dup = store
        .create_user(NewUser {
            id: UserId::from_u128(new_id()),
            username: Username::parse("aLiCe").unwrap(),
            password_hash: "x".into(),
            role: domain::AccountRole::User,
            pending: false,
            created_at: now(),
        })
        .await;
    assert!(matches!(dup, Err(RepoError::Conflict(_))), "{dup:?}");
    let found = store
        .find_credentials(&Username::parse("ALICE").unwrap())
        .await
        .unwrap()
        .expect("found case-insensitively");
    assert_eq!(found.user.id, id);
    assert_eq!(found.user.username.as_str(), "Alice");
    assert!(found.password_hash.starts_with("$argon2id$"));
    assert!(
        store
            .find_credentials(&Username::parse("bob").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.get_user(UserId::from_u128(new_id())).await,
        Err(RepoError::NotFound(Entity::User))
    ));
}

pub async fn a_chat_is_created_with_its_root_and_is_visible_only_to_its_owner<H: Harness>(db: &H) {
    let store = db.store().await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let mut new = new_chat(alice);
    new.title = Some(ChatTitle::parse("日本語のタイトル 🌳").unwrap());
    new.root_content = "You are terse.".into();
    let chat = store.create_chat(new.clone()).await.unwrap();
    assert_eq!(chat.current_leaf_id, new.root_id);
    assert_eq!(chat.message_count, 1);
    assert!(chat.title_set_by_user);

    let fetched = store.get_chat(alice, chat.id).await.unwrap();
    assert_eq!(fetched, chat);
    let messages = store.list_messages(alice, chat.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].role, Role::System);
    assert_eq!(messages[0].content, "You are terse.");

    for result in [
        store.get_chat(bob, chat.id).await.map(|_| ()),
        store.list_messages(bob, chat.id).await.map(|_| ()),
        store
            .append_message(bob, chat.id, message(new.root_id, Role::User, "hi"), true)
            .await
            .map(|_| ()),
        store
            .delete_subtree(bob, chat.id, new.root_id)
            .await
            .map(|_| ()),
        store.delete_chat(bob, chat.id).await,
    ] {
        assert!(
            matches!(result, Err(RepoError::NotFound(Entity::Chat))),
            "{result:?}"
        );
    }
    assert_eq!(store.list_messages(alice, chat.id).await.unwrap().len(), 1);
}

pub async fn concurrent_counter_increments_are_exact<H: Harness>(db: &H) {
    let store = Arc::new(db.store().await);
    let owner = user(&*store, "alice").await;
    let viewer = user(&*store, "bob").await;
    let t = store.create_template(template(owner, true)).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..1_000 {
        let store = Arc::clone(&store);
        let who = if i % 2 == 0 { owner } else { viewer };
        handles.push(tokio::spawn(async move {
            store.increment_template_usage(who, t.id).await
        }));
    }
    let mut seen = Vec::new();
    for h in handles {
        seen.push(h.await.unwrap().expect("increment"));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=1_000).collect::<Vec<u64>>(),
        "each call saw its own count"
    );
    assert_eq!(
        store.get_template(owner, t.id).await.unwrap().usage_count,
        1_000
    );
}

pub async fn private_templates_are_invisible_to_others<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let other = user(&store, "bob").await;
    let private = store.create_template(template(owner, false)).await.unwrap();
    assert!(matches!(
        store.get_template(other, private.id).await,
        Err(RepoError::NotFound(Entity::Template))
    ));
    assert!(matches!(
        store.increment_template_usage(other, private.id).await,
        Err(RepoError::NotFound(Entity::Template))
    ));
    assert_eq!(
        store
            .get_template(owner, private.id)
            .await
            .unwrap()
            .usage_count,
        0
    );
}

pub async fn api_keys_are_found_by_prefix_and_revoked_by_their_owner_only<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let other = user(&store, "bob").await;
    let key = api_key(owner, "script", "arb_abcdefghijkl");
    store.create_api_key(key.clone()).await.unwrap();
    let mut clash = key.clone();
    clash.id = domain::ApiKeyId::from_u128(new_id());
    assert!(matches!(
        store.create_api_key(clash).await,
        Err(RepoError::Conflict(_))
    ));
    let found = store
        .find_api_key("arb_abcdefghijkl")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key_hash, "digest");
    // Finding records nothing; a use is recorded once per minute at most.
    assert!(
        store.list_api_keys(owner).await.unwrap()[0]
            .last_used_at
            .is_none()
    );
    let first = now();
    store.record_api_key_use(key.id, first).await.unwrap();
    store
        .record_api_key_use(
            key.id,
            Timestamp::from_unix_micros(first.as_unix_micros() + 1_000),
        )
        .await
        .unwrap();
    let listed = store.list_api_keys(owner).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(first));
    assert!(store.list_api_keys(other).await.unwrap().is_empty());
    assert!(store.revoke_api_key(other, key.id, now()).await.is_err());
    store.revoke_api_key(owner, key.id, now()).await.unwrap();
    assert!(
        store
            .find_api_key("arb_abcdefghijkl")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.revoke_api_key(owner, key.id, now()).await.is_err());
    // Expiry and scope are kept as given.
    let limited = ApiKeyRecord {
        id: domain::ApiKeyId::from_u128(new_id()),
        prefix: "arb_mnopqrstuvwx".into(),
        expires_at: Some(Timestamp::from_unix_micros(now().as_unix_micros() + 1_000)),
        read_only: true,
        ..key
    };
    store.create_api_key(limited.clone()).await.unwrap();
    let used = store
        .find_api_key("arb_mnopqrstuvwx")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.expires_at, used.read_only),
        (limited.expires_at, true)
    );
}

/// Keyset pages walk the list in exactly the order of one big page, for every sort,
/// with equal sort keys (same time, same title, no title) broken by id.
pub async fn keyset_pages_follow_the_list_order_for_every_sort<H: Harness>(db: &H) {
    use usecase::ports::{ChatQuery, ChatSort};
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let same_time = now();
    let titles = [
        None,
        Some("beta"),
        Some("alpha"),
        None,
        Some("beta"),
        Some("Gamma"),
    ];
    for i in 0..18 {
        let mut chat = new_chat(owner);
        chat.title = titles[i % titles.len()].map(|t| ChatTitle::parse(t).unwrap());
        if i % 3 == 0 {
            chat.created_at = same_time;
        }
        store.create_chat(chat).await.unwrap();
    }
    for sort in [
        ChatSort::UpdatedDesc,
        ChatSort::UpdatedAsc,
        ChatSort::CreatedDesc,
        ChatSort::CreatedAsc,
        ChatSort::TitleAsc,
        ChatSort::TitleDesc,
    ] {
        let all = store
            .list_chats(
                owner,
                ChatQuery {
                    sort,
                    page: domain::PageRequest::new(Some(1), Some(100)).unwrap(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.total, Some(18));
        assert!(all.next.is_none());
        let expected: Vec<ChatId> = all.items.iter().map(|s| s.chat.id).collect();
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_chats(
                    owner,
                    ChatQuery {
                        sort,
                        page: domain::PageRequest::new(None, Some(4)).unwrap(),
                        after: after.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.total.is_some(), after.is_none());
            walked.extend(page.items.iter().map(|s| s.chat.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            assert!(walked.len() <= 18, "{sort:?}: the walk does not end");
        }
        assert_eq!(walked, expected, "{sort:?}");
    }
}

/// A write from a known version says the version after it, exactly as the chat reads
/// afterwards; from a stale version it still writes but says nothing.
pub async fn a_write_from_a_known_version_returns_the_version_after_it<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let version = |c: &domain::Chat| (c.updated_at.as_unix_micros(), c.message_count);
    let question = message(chat.root_id, Role::User, "q");
    let row = streaming(question.id);
    let (q, after) = store
        .append_turn_from(
            owner,
            chat.id,
            (question, row.clone()),
            Some(version(&chat)),
        )
        .await
        .unwrap();
    let now = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(after, Some(version(&now)));
    let end = FinishedAnswer {
        message: row.id,
        question: q.id,
        content: "done".into(),
        status: MessageStatus::Complete,
        record: None,
        leaf_at_start: q.id,
        now: now.updated_at,
    };
    let ended = store
        .finish_answer_from(owner, chat.id, end, Some(version(&now)))
        .await
        .unwrap();
    let later = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(ended, Some(version(&later)));
    assert!(later.updated_at > now.updated_at, "the version moved");
    // From a stale version: written all the same, but no version is claimed.
    let (m, stale) = store
        .append_message_from(
            owner,
            chat.id,
            (message(row.id, Role::User, "next"), true),
            Some(version(&now)),
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    let last = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(last.current_leaf_id, m.id);
    assert_eq!(last.message_count, later.message_count + 1);
    let (_, from_last) = store
        .append_answer_from(
            owner,
            chat.id,
            (
                message(m.id, Role::Assistant, "a"),
                record(chat.id, owner, MessageId::from_u128(0)),
            ),
            Some(version(&last)),
        )
        .await
        .unwrap();
    let fin = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(from_last, Some(version(&fin)));
}

/// Concurrent writes (group-committed on SQLite): each learns its own outcome, and a
/// write that fails (refused up front, or failing half-way) fails alone.
pub async fn concurrent_writes_each_learn_their_own_outcome<H: Harness>(db: &H) {
    let store = Arc::new(db.store().await);
    let owner = user(&*store, "alice").await;
    let stranger = user(&*store, "mallory").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let writes = (0..60).map(|i| {
        let store = Arc::clone(&store);
        let root = chat.root_id;
        async move {
            let mut question = message(root, Role::User, &format!("q{i}"));
            let answer = streaming(question.id);
            match i % 6 {
                // Not the stranger's chat: refused by the first statement.
                4 => store.append_turn(stranger, chat.id, question, answer).await,
                // A second root: refused half-way, after the chat was claimed.
                5 => {
                    question.role = Role::System;
                    store.append_turn(owner, chat.id, question, answer).await
                }
                _ => store.append_turn(owner, chat.id, question, answer).await,
            }
        }
    });
    let results = futures::future::join_all(writes).await;
    for (i, result) in results.iter().enumerate() {
        match i % 6 {
            4 => assert!(
                matches!(result, Err(RepoError::NotFound(Entity::Chat))),
                "{i}: {result:?}"
            ),
            5 => assert!(
                matches!(result, Err(RepoError::Conflict(_))),
                "{i}: {result:?}"
            ),
            _ => assert!(result.is_ok(), "{i}: {result:?}"),
        }
    }
    let after = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(after.message_count, chat.message_count + 40 * 2);
    let stored = store.list_messages(owner, chat.id).await.unwrap();
    assert_eq!(stored.len() as u64, after.message_count);
    assert_eq!(
        stored.iter().filter(|m| m.role == Role::System).count(),
        1,
        "only the root"
    );
}

/// A streamed turn starts with one transaction: the question as the current leaf and
/// the answer's `streaming` row under it.
pub async fn a_turn_stores_its_question_and_answer_row_together<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let question = message(chat.root_id, Role::User, "q");
    let row = streaming(question.id);
    let (question_id, row_id) = (question.id, row.id);
    let stored = store
        .append_turn(owner, chat.id, question, row)
        .await
        .unwrap();
    assert_eq!(stored.id, question_id);
    let after = store.get_chat(owner, chat.id).await.unwrap();
    assert_eq!(after.current_leaf_id, question_id);
    assert_eq!(after.message_count, chat.message_count + 2);
    let messages = store.list_messages(owner, chat.id).await.unwrap();
    let answer = messages.iter().find(|m| m.id == row_id).unwrap();
    assert_eq!(answer.status, MessageStatus::Streaming);
    assert_eq!(answer.parent_id, Some(question_id));
    // Another user's chat is not found, and nothing is written.
    let other = user(&store, "bob").await;
    let question = message(chat.root_id, Role::User, "q");
    let row = message(question.id, Role::Assistant, "");
    assert!(matches!(
        store.append_turn(other, chat.id, question, row).await,
        Err(RepoError::NotFound(Entity::Chat))
    ));
    assert_eq!(
        store.get_chat(owner, chat.id).await.unwrap().message_count,
        chat.message_count + 2
    );
}

/// What each process's account cache polls: accounts changed and keys revoked since a
/// moment; ending sessions bumps the token epoch atomically (concurrent resets all count).
pub async fn account_changes_are_found_by_time_and_epochs_count_every_reset<H: Harness>(db: &H) {
    let store = db.store().await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let key = api_key(bob, "bot", "arb_zyxwvutsrqpo");
    store.create_api_key(key.clone()).await.unwrap();
    let since = now();
    let quiet = store.account_changes_since(since).await.unwrap();
    assert!(
        quiet.users.is_empty() && quiet.api_keys.is_empty(),
        "{quiet:?}"
    );

    let resets = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update_user(
                    alice,
                    UserChange {
                        end_sessions: true,
                        ..UserChange::default()
                    },
                    now(),
                )
                .await
                .unwrap()
        })
    });
    for reset in resets.collect::<Vec<_>>() {
        reset.await.unwrap();
    }
    assert_eq!(store.get_user(alice).await.unwrap().token_epoch, 8);
    assert_eq!(store.get_user(bob).await.unwrap().token_epoch, 0);
    store.revoke_api_key(bob, key.id, now()).await.unwrap();
    let changed = store.account_changes_since(since).await.unwrap();
    assert_eq!(changed.users, vec![alice]);
    assert_eq!(changed.api_keys, vec!["arb_zyxwvutsrqpo".to_owned()]);
    let later = store.account_changes_since(now()).await.unwrap();
    assert!(later.users.is_empty() && later.api_keys.is_empty());
    // A deleted account has no row left to show a change: it is reported all the same.
    let before = now();
    store.delete_user(bob, now()).await.unwrap();
    let deleted = store.account_changes_since(before).await.unwrap();
    assert_eq!(deleted.users, vec![bob], "{deleted:?}");
    assert!(matches!(
        store
            .update_user(UserId::from_u128(new_id()), UserChange::default(), now())
            .await,
        Err(RepoError::NotFound(Entity::User))
    ));
}

/// The answer becomes the current leaf only where the user still is: on its question, or
/// on the leaf they had when it started (a retry); never after they moved elsewhere.
pub async fn a_finished_answer_does_not_move_a_user_who_went_elsewhere<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let end = |message, leaf_at_start, question| FinishedAnswer {
        message,
        question,
        content: "done".into(),
        status: MessageStatus::Complete,
        record: None,
        leaf_at_start,
        now: now(),
    };
    let q = store
        .append_message(owner, chat.id, message(chat.root_id, Role::User, "q"), true)
        .await
        .unwrap();
    let pending = store
        .append_message(owner, chat.id, streaming(q.id), false)
        .await
        .unwrap();
    store
        .select_leaf(owner, chat.id, chat.root_id, now())
        .await
        .unwrap();
    store
        .finish_answer(owner, chat.id, end(pending.id, q.id, q.id))
        .await
        .unwrap();
    let leaf = store
        .get_chat(owner, chat.id)
        .await
        .unwrap()
        .current_leaf_id;
    assert_eq!(leaf, chat.root_id, "the user moved away: they stay");

    // A retry: the user is on the old answer, the new one replaces it as the leaf.
    store
        .select_leaf(owner, chat.id, pending.id, now())
        .await
        .unwrap();
    let again = store
        .append_message(owner, chat.id, streaming(q.id), false)
        .await
        .unwrap();
    store
        .finish_answer(owner, chat.id, end(again.id, pending.id, q.id))
        .await
        .unwrap();
    let leaf = store
        .get_chat(owner, chat.id)
        .await
        .unwrap()
        .current_leaf_id;
    assert_eq!(leaf, again.id);
}

/// The longest question (32,000 characters of Japanese, 96 KB) and a 1 MiB answer are
/// stored whole (MySQL's plain `TEXT` would hold 64 KB).
pub async fn long_texts_are_stored_whole<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let question = "日本語".repeat(32_000 / 3);
    let q = store
        .append_message(
            owner,
            chat.id,
            message(chat.root_id, Role::User, &question),
            true,
        )
        .await
        .unwrap();
    let pending = streaming(q.id);
    let pending = store
        .append_message(owner, chat.id, pending, false)
        .await
        .unwrap();
    let answer = "x".repeat(1 << 20);
    store
        .finish_answer(
            owner,
            chat.id,
            FinishedAnswer {
                message: pending.id,
                question: q.id,
                content: answer.clone(),
                status: MessageStatus::Complete,
                record: None,
                leaf_at_start: q.id,
                now: now(),
            },
        )
        .await
        .unwrap();
    let stored = store.list_messages(owner, chat.id).await.unwrap();
    let text_of = |id| stored.iter().find(|m| m.id == id).unwrap().content.clone();
    assert_eq!(text_of(q.id), question);
    assert_eq!(text_of(pending.id).len(), answer.len());
    let mut long_template = template(owner, false);
    long_template.content = TemplateContent::parse("テンプレート".repeat(3_000)).unwrap();
    let saved = store.create_template(long_template.clone()).await.unwrap();
    assert_eq!(saved.content, long_template.content);
}

/// Start-up recovery marks only old `streaming` answers, and bumps their chats.
pub async fn answers_left_streaming_are_marked_interrupted<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(owner)).await.unwrap();
    let q = store
        .append_message(owner, chat.id, message(chat.root_id, Role::User, "q"), true)
        .await
        .unwrap();
    let streaming = |content: &str| NewMessage {
        content: content.to_owned(),
        ..streaming(q.id)
    };
    let old = store
        .append_message(owner, chat.id, streaming("old"), false)
        .await
        .unwrap();
    let cutoff = now();
    let young = store
        .append_message(owner, chat.id, streaming("young"), false)
        .await
        .unwrap();
    let version = store.get_chat(owner, chat.id).await.unwrap().updated_at;
    let marked = store.interrupt_streaming(cutoff, now()).await.unwrap();
    assert_eq!(marked, 1);
    let messages = store.list_messages(owner, chat.id).await.unwrap();
    let status = |id| messages.iter().find(|m| m.id == id).unwrap().status;
    assert_eq!(status(old.id), MessageStatus::Interrupted);
    assert_eq!(status(young.id), MessageStatus::Streaming);
    assert_eq!(status(q.id), MessageStatus::Complete);
    let after = store.get_chat(owner, chat.id).await.unwrap();
    assert!(after.updated_at > version);
    assert_eq!(after.current_leaf_id, old.id, "where the user left off");
    assert_eq!(store.interrupt_streaming(now(), now()).await.unwrap(), 1);
    assert_eq!(
        store
            .get_chat(owner, chat.id)
            .await
            .unwrap()
            .current_leaf_id,
        old.id,
        "the user is no longer on the question: the leaf stays"
    );
    assert_eq!(store.interrupt_streaming(now(), now()).await.unwrap(), 0);
}

/// A generated title lands only on an untitled chat, never over a user's title.
pub async fn generated_titles_never_overwrite_a_title<H: Harness>(db: &H) {
    let store = db.store().await;
    let owner = user(&store, "alice").await;
    let untitled = store.create_chat(new_chat(owner)).await.unwrap();
    let title = |t: &str| ChatTitle::parse(t).unwrap();
    let stranger = user(&store, "mallory").await;
    assert!(
        !store
            .set_generated_title(stranger, untitled.id, title("Nope"))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_generated_title(owner, untitled.id, title("First"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_generated_title(owner, untitled.id, title("Second"))
            .await
            .unwrap()
    );
    let chat = store.get_chat(owner, untitled.id).await.unwrap();
    assert_eq!(chat.title.unwrap().as_str(), "First");
    assert_eq!(
        chat.updated_at, untitled.updated_at,
        "a title is not a change of the tree"
    );

    let named = store.create_chat(new_chat(owner)).await.unwrap();
    store
        .update_chat(
            owner,
            named.id,
            usecase::ports::ChatPatch {
                title: Some(title("Mine")),
                ..Default::default()
            },
            now(),
        )
        .await
        .unwrap();
    assert!(
        !store
            .set_generated_title(owner, named.id, title("Generated"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_chat(owner, named.id)
            .await
            .unwrap()
            .title
            .unwrap()
            .as_str(),
        "Mine"
    );
}

/// What a full scan finds: the owner's messages (of the given chats) whose content holds
/// `q` regardless of ASCII case, newest first.
pub async fn scanned(
    store: &impl Ports,
    owner: UserId,
    chats: &[ChatId],
    q: &str,
) -> Vec<MessageId> {
    let mut found = Vec::new();
    for chat in chats {
        for m in store.list_messages(owner, *chat).await.unwrap() {
            // The `LIKE` semantics: ASCII case folded in the text, the query lowercased.
            if m.content.to_ascii_lowercase().contains(&q.to_lowercase()) {
                found.push((m.created_at, m.id));
            }
        }
    }
    found.sort_by_key(|hit| std::cmp::Reverse(*hit));
    found.into_iter().map(|(_, id)| id).collect()
}

pub async fn searched(
    store: &impl Ports,
    owner: UserId,
    chat: Option<ChatId>,
    q: &str,
    page: u32,
) -> (Vec<MessageId>, usecase::ports::SearchResults) {
    let found = store
        .search_messages(
            owner,
            chat,
            domain::SearchQuery::parse(q).unwrap(),
            domain::PageRequest::new(Some(page), Some(100)).unwrap(),
        )
        .await
        .unwrap();
    (
        found.page.items.iter().map(|h| h.message.id).collect(),
        found,
    )
}

const SEARCHED_TEXTS: [&str; 10] = [
    "Black COFFEE at 東京タワー, then coffee again",
    "a trip to i\u{307}stanbul",
    "東京タワーの展望台で猫犬を見た",
    "猫と犬。猫犬カフェ",
    "Cafe au lait is not a Coffee",
    "50% off, a_b testing, \"quoted\" words",
    "5000 off, aXb testing, quoted words",
    "タワー only",
    "emoji ☕ coffee ☕ time",
    "",
];

const QUERIES: [&str; 17] = [
    "İSTANBUL",
    "coffee",
    "COFFEE",
    "ffe",
    "東京タワー",
    "タワー",
    "猫犬",
    "タワ",
    "50%",
    "a_b",
    "\"quoted\"",
    "quoted",
    "☕ coffee",
    "t 東",
    "zz",
    "nowhere",
    "ee",
];

pub async fn search_finds_exactly_what_a_substring_scan_finds<H: Harness>(db: &H) {
    let store = db.store().await;
    let alice = user(&store, "alice").await;
    let mallory = user(&store, "mallory").await;
    let mut chats = Vec::new();
    for _ in 0..2 {
        let chat = store.create_chat(new_chat(alice)).await.unwrap();
        let mut parent = chat.root_id;
        for text in SEARCHED_TEXTS {
            let m = message(parent, Role::User, text);
            parent = store
                .append_message(alice, chat.id, m, true)
                .await
                .unwrap()
                .id;
        }
        chats.push(chat);
    }
    // Another user's identical words are never found.
    let theirs = store.create_chat(new_chat(mallory)).await.unwrap();
    for text in SEARCHED_TEXTS {
        let m = message(theirs.root_id, Role::User, text);
        store
            .append_message(mallory, theirs.id, m, false)
            .await
            .unwrap();
    }
    // An answer is found by the words it ended with, not by its empty streaming row.
    let question = message(chats[0].current_leaf_id, Role::User, "question");
    let answer = streaming(question.id);
    let (question_id, answer_id) = (question.id, answer.id);
    store
        .append_turn(alice, chats[0].id, question, answer)
        .await
        .unwrap();
    store
        .finish_answer(
            alice,
            chats[0].id,
            FinishedAnswer {
                message: answer_id,
                question: question_id,
                content: "The coffee answer: 東京タワー".into(),
                status: MessageStatus::Complete,
                record: None,
                leaf_at_start: question_id,
                now: now(),
            },
        )
        .await
        .unwrap();
    // A deleted message is no longer found.
    let gone = message(chats[1].root_id, Role::User, "coffee that was deleted");
    let gone = store
        .append_message(alice, chats[1].id, gone, false)
        .await
        .unwrap();
    store
        .delete_subtree(alice, chats[1].id, gone.id)
        .await
        .unwrap();

    let ids: Vec<ChatId> = chats.iter().map(|c| c.id).collect();
    for q in QUERIES {
        let expected = scanned(&store, alice, &ids, q).await;
        let (got, found) = searched(&store, alice, None, q, 1).await;
        assert_eq!(got, expected, "search for {q:?}");
        assert_eq!(found.page.total, expected.len() as u64, "total for {q:?}");
        assert!(found.total_exact && found.searched_all, "{q:?}");
        let expected = scanned(&store, alice, &ids[1..], q).await;
        let (got, _) = searched(&store, alice, Some(ids[1]), q, 1).await;
        assert_eq!(got, expected, "search for {q:?} in one chat");
    }
    let (coffee, _) = searched(&store, alice, None, "coffee", 1).await;
    assert_eq!(
        coffee.first(),
        Some(&answer_id),
        "the finished answer, newest"
    );
    assert!(!coffee.contains(&gone.id));
    let (_, theirs_found) = searched(&store, mallory, None, "coffee", 1).await;
    assert_eq!(theirs_found.page.total, 3);
    assert!(matches!(
        store
            .search_messages(
                mallory,
                Some(ids[0]),
                domain::SearchQuery::parse("coffee").unwrap(),
                domain::PageRequest::new(None, None).unwrap(),
            )
            .await,
        Err(RepoError::NotFound(Entity::Chat))
    ));

    // Deleting the chat (a cascade) takes its messages out of every later search.
    store.delete_chat(alice, ids[0]).await.unwrap();
    for q in QUERIES {
        let (got, _) = searched(&store, alice, None, q, 1).await;
        assert_eq!(got, scanned(&store, alice, &ids[1..], q).await, "{q:?}");
    }
}

pub async fn a_common_term_is_paged_past_the_counting_cap<H: Harness>(db: &H) {
    use domain::limits::SEARCH_TOTAL_CAP;
    let store = db.store().await;
    let alice = user(&store, "alice").await;
    let chat = store.create_chat(new_chat(alice)).await.unwrap();
    let mut order = Vec::new();
    for i in 0..=SEARCH_TOTAL_CAP {
        let m = message(chat.root_id, Role::User, &format!("coffee number {i}"));
        order.push(
            store
                .append_message(alice, chat.id, m, false)
                .await
                .unwrap()
                .id,
        );
    }
    order.reverse();
    for q in ["coffee", "co"] {
        let (first, found) = searched(&store, alice, None, q, 1).await;
        assert!(!found.total_exact, "{q:?}: more matches than the cap");
        assert_eq!(found.page.total, SEARCH_TOTAL_CAP);
        assert_eq!(first, order[..100]);
        let (last, _) = searched(&store, alice, None, q, 11).await;
        assert_eq!(
            last,
            order[1000..],
            "{q:?}: a page past the cap is still served"
        );
    }
    let (rare, found) = searched(&store, alice, None, "number 100", 1).await;
    assert!(found.total_exact);
    assert_eq!(rare, vec![order[0], order[900]], "numbers 1000 and 100");
}

pub async fn a_password_hash_is_replaced_only_while_it_is_the_one_read<H: Harness>(db: &H) {
    let store = db.store().await;
    let id = user(&store, "bcrypt_user").await;
    let name = Username::parse("bcrypt_user").unwrap();
    let read = store
        .find_credentials(&name)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    // A password changed in between (another hash stored) is not overwritten.
    assert!(
        !store
            .replace_password_hash(id, "$2b$12$not-the-stored-one", "$argon2id$late".into())
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .find_credentials(&name)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        read
    );
    assert!(
        store
            .replace_password_hash(id, &read, "$argon2id$v=19$new".into())
            .await
            .unwrap()
    );
    let now = store.find_credentials(&name).await.unwrap().unwrap();
    assert_eq!(now.password_hash, "$argon2id$v=19$new");
    assert_eq!(now.user.token_epoch, 0, "sessions go on");
    assert!(
        !store
            .replace_password_hash(UserId::from_u128(new_id()), &read, "x".into())
            .await
            .unwrap(),
        "an unknown user"
    );
}
