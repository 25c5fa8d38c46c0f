//! The repository suite, run unchanged against a real SQLite file, PostgreSQL and MariaDB;
//! its `contract` part also runs against the in-memory store of the use-case tests, so the
//! fakes those tests stand on are held to what the real adapters do. `make test` prints how
//! many tests ran on each backend.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::{
    ChatId, ChatTitle, ConversationTree, GenerationRecord, MessageId, MessageStatus, ModelId,
    ModelInfo, Pricing, PromptTemplate, Role, TemplateContent, TemplateId, TemplateName, Timestamp,
    TokenUsage, Usd, UserId, Username,
};
use infra_db::SeaOrmStore;
use infra_db::testing::{Backend, TestDatabase};
use sea_orm::Value;
use sea_orm::prelude::Uuid;
use usecase::auth::{
    ApiKeyRecord, CredentialRepository, RefreshSuccessor, RefreshTokenRecord, Rotation,
};
use usecase::ports::admin::AdminRepository;
use usecase::ports::{
    ChatRepository, Entity, FinishedAnswer, HealthCheck, ModelCatalogRepository, NewChat,
    NewMessage, NewUser, RepoError, TemplateRepository, UserChange, UserRepository,
};
use usecase::testing::InMemoryStore;

#[path = "repositories/contract.rs"]
mod contract;

/// Every port the suite exercises.
trait Ports:
    UserRepository
    + AdminRepository
    + ChatRepository
    + TemplateRepository
    + ModelCatalogRepository
    + CredentialRepository
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Ports for S where
    S: UserRepository
        + AdminRepository
        + ChatRepository
        + TemplateRepository
        + ModelCatalogRepository
        + CredentialRepository
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Where a contract test gets its store: a test database of one backend, or the in-memory
/// store (each call a handle on the same data, like two connections to one database).
trait Harness: Sync {
    type Store: Ports;
    fn store(&self) -> impl Future<Output = Self::Store> + Send;
}

impl Harness for TestDatabase {
    type Store = SeaOrmStore;
    async fn store(&self) -> SeaOrmStore {
        TestDatabase::store(self).await
    }
}

/// The in-memory store as a backend.
#[derive(Default)]
struct Memory(InMemoryStore);

impl Harness for Memory {
    type Store = InMemoryStore;
    async fn store(&self) -> InMemoryStore {
        self.0.clone()
    }
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn new_id() -> u128 {
    Uuid::now_v7().as_u128()
}

fn now() -> Timestamp {
    // Strictly increasing, so creation order is unambiguous even within one microsecond.
    Timestamp::from_unix_micros(1_800_000_000_000_000 + NEXT.fetch_add(1, Ordering::SeqCst) as i64)
}

fn uuid_value(id: u128) -> Value {
    Uuid::from_u128(id).into()
}

/// A refresh token of `owner`'s that starts a family, valid for an hour.
fn first_token(owner: UserId, hash: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        id: domain::TokenId::from_u128(new_id()),
        user_id: owner,
        family_id: domain::TokenId::from_u128(new_id()),
        token_hash: hash.to_owned(),
        created_at: now(),
        expires_at: now().plus_micros(3_600_000_000),
    }
}

/// The next refresh token of a rotation.
fn successor(hash: &str) -> RefreshSuccessor {
    RefreshSuccessor {
        id: domain::TokenId::from_u128(new_id()),
        token_hash: hash.to_owned(),
        created_at: now(),
        expires_at: now().plus_micros(3_600_000_000),
    }
}

async fn user(store: &impl UserRepository, name: &str) -> UserId {
    store
        .create_user(NewUser {
            id: UserId::from_u128(new_id()),
            username: Username::parse(name).unwrap(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            role: domain::AccountRole::User,
            pending: false,
            created_at: now(),
        })
        .await
        .unwrap()
        .id
}

fn new_chat(owner: UserId) -> NewChat {
    NewChat {
        id: ChatId::from_u128(new_id()),
        owner,
        title: None,
        system_prompt: None,
        model_id: None,
        preset_id: None,
        root_id: MessageId::from_u128(new_id()),
        root_content: String::new(),
        created_at: now(),
    }
}

fn message(parent: MessageId, role: Role, content: &str) -> NewMessage {
    NewMessage {
        id: MessageId::from_u128(new_id()),
        parent_id: parent,
        role,
        content: content.to_owned(),
        status: MessageStatus::Complete,
        created_at: now(),
    }
}

/// An empty answer row, still streaming, under `parent`.
fn streaming(parent: MessageId) -> NewMessage {
    NewMessage {
        status: MessageStatus::Streaming,
        ..message(parent, Role::Assistant, "")
    }
}

/// A new read-write API key of `owner`'s that never expires.
fn api_key(owner: UserId, name: &str, prefix: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: domain::ApiKeyId::from_u128(new_id()),
        user_id: owner,
        name: name.into(),
        prefix: prefix.into(),
        key_hash: "digest".into(),
        created_at: now(),
        last_used_at: None,
        expires_at: None,
        read_only: false,
    }
}

fn record(chat: ChatId, user: UserId, message: MessageId) -> GenerationRecord {
    GenerationRecord {
        message_id: Some(message),
        chat_id: Some(chat),
        user_id: user,
        provider: "fake".into(),
        model: ModelId::parse("test/model").unwrap(),
        usage: TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        },
        cost: Usd::from_pico(42),
        cost_source: domain::CostSource::Catalogue,
        latency_ms: 120,
        time_to_first_token_ms: Some(30),
        finish_reason: Some("stop".into()),
        created_at: now(),
        kind: domain::GenerationKind::Answer,
    }
}

fn model(id: &str, prompt_price: &str) -> ModelInfo {
    ModelInfo {
        id: ModelId::parse(id).unwrap(),
        name: format!("Model {id}"),
        description: Some("日本語も話せる 🤖".into()),
        context_length: Some(8_192),
        pricing: Pricing {
            prompt: Usd::parse_decimal(prompt_price).unwrap(),
            completion: Usd::parse_decimal("0.000002").unwrap(),
        },
        input_modalities: vec!["text".into(), "image".into()],
        output_modalities: vec!["text".into()],
        created: Some(1_700_000_000),
        fetched_at: now(),
    }
}

fn template(owner: UserId, public: bool) -> PromptTemplate {
    PromptTemplate {
        id: TemplateId::from_u128(new_id()),
        owner,
        name: TemplateName::parse("Review").unwrap(),
        description: None,
        content: TemplateContent::parse("Review {{code}}").unwrap(),
        category: None,
        is_public: public,
        is_favorite: false,
        usage_count: 0,
        created_at: now(),
        updated_at: now(),
    }
}

/// Every test of the suite, written once; `backend_suite!` instantiates it per backend.
mod suite {
    use super::contract::searched;
    use super::*;

    pub async fn migrations_are_idempotent_and_the_store_answers(db: &TestDatabase) {
        let store = db.store().await;
        store.migrate().await.expect("a second run is a no-op");
        store.ping().await.expect("ping");
        assert_eq!(db.count("users", None).await, 0);
        // Every migration rolls back and applies again, down to an empty schema and up.
        use migration::MigratorTrait;
        let conn = store.migration_connection();
        migration::Migrator::down(conn, None)
            .await
            .expect("every migration rolls back");
        let schema = migration::SchemaManager::new(conn);
        assert!(!schema.has_table("users").await.unwrap(), "nothing left");
        migration::Migrator::up(conn, None)
            .await
            .expect("and applies again");
        user(&store, "again").await;
        assert_eq!(db.count("users", None).await, 1);
    }

    pub async fn a_chat_for_an_unknown_owner_is_refused(db: &TestDatabase) {
        let store = db.store().await;
        let result = store
            .create_chat(new_chat(UserId::from_u128(new_id())))
            .await;
        assert!(
            matches!(result, Err(RepoError::NotFound(Entity::User))),
            "{result:?}"
        );
        assert_eq!(db.count("chats", None).await, 0);
        assert_eq!(db.count("messages", None).await, 0);
    }

    pub async fn appends_branch_from_any_message_and_move_the_current_leaf(db: &TestDatabase) {
        let store = db.store().await;
        let owner = user(&store, "alice").await;
        let chat = store.create_chat(new_chat(owner)).await.unwrap();
        let q1 = store
            .append_message(
                owner,
                chat.id,
                message(chat.root_id, Role::User, "q1"),
                true,
            )
            .await
            .unwrap();
        let a1 = store
            .append_answer(
                owner,
                chat.id,
                message(q1.id, Role::Assistant, "a1"),
                record(chat.id, owner, MessageId::from_u128(0)),
            )
            .await
            .unwrap();
        // A regenerated answer (sibling of a1) and a branch from the root.
        let a1b = store
            .append_message(owner, chat.id, message(q1.id, Role::Assistant, "a1b"), true)
            .await
            .unwrap();
        let q2 = store
            .append_message(
                owner,
                chat.id,
                message(chat.root_id, Role::User, "q2"),
                false,
            )
            .await
            .unwrap();

        let after = store.get_chat(owner, chat.id).await.unwrap();
        assert_eq!(
            after.current_leaf_id, a1b.id,
            "move_leaf=false leaves the leaf"
        );
        assert_eq!(after.message_count, 5);
        assert!(after.updated_at > chat.updated_at);

        let tree =
            ConversationTree::build(chat.id, store.list_messages(owner, chat.id).await.unwrap())
                .unwrap();
        let path: Vec<_> = tree
            .path_to(a1b.id)
            .unwrap()
            .iter()
            .map(|m| m.content.clone())
            .collect();
        assert_eq!(path, ["", "q1", "a1b"]);
        assert_eq!(tree.siblings(a1.id).unwrap()[0].id, a1b.id);
        assert_eq!(tree.siblings(q1.id).unwrap()[0].id, q2.id);
        assert_eq!(
            db.count(
                "generations",
                Some(("message_id", uuid_value(a1.id.as_u128())))
            )
            .await,
            1
        );
    }

    pub async fn a_parent_from_another_chat_is_refused(db: &TestDatabase) {
        let store = db.store().await;
        let owner = user(&store, "alice").await;
        let one = store.create_chat(new_chat(owner)).await.unwrap();
        let two = store.create_chat(new_chat(owner)).await.unwrap();
        let result = store
            .append_message(owner, one.id, message(two.root_id, Role::User, "x"), true)
            .await;
        assert!(
            matches!(result, Err(RepoError::NotFound(Entity::Message))),
            "{result:?}"
        );
        let system = store
            .append_message(owner, one.id, message(one.root_id, Role::System, "x"), true)
            .await;
        assert!(matches!(system, Err(RepoError::Conflict(_))), "{system:?}");
        assert_eq!(db.count("messages", None).await, 2);
        assert_eq!(
            store.get_chat(owner, one.id).await.unwrap().message_count,
            1
        );
    }

    pub async fn deleting_a_subtree_removes_it_and_moves_the_leaf_to_the_surviving_ancestor(
        db: &TestDatabase,
    ) {
        let store = db.store().await;
        let owner = user(&store, "alice").await;
        let chat = store.create_chat(new_chat(owner)).await.unwrap();
        let q1 = store
            .append_message(
                owner,
                chat.id,
                message(chat.root_id, Role::User, "q1"),
                true,
            )
            .await
            .unwrap();
        let mut parent = q1.id;
        let mut deepest = q1.id;
        // A deep chain (deeper than MySQL's 15-level cascade limit) under q1.
        for i in 0..40 {
            let role = if i % 2 == 0 {
                Role::Assistant
            } else {
                Role::User
            };
            let m = store
                .append_answer(
                    owner,
                    chat.id,
                    message(parent, role, &format!("m{i}")),
                    record(chat.id, owner, MessageId::from_u128(0)),
                )
                .await
                .unwrap();
            parent = m.id;
            deepest = m.id;
        }
        let other = store
            .append_message(
                owner,
                chat.id,
                message(chat.root_id, Role::User, "other"),
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_chat(owner, chat.id)
                .await
                .unwrap()
                .current_leaf_id,
            deepest
        );

        let deleted = store.delete_subtree(owner, chat.id, q1.id).await.unwrap();
        assert_eq!(deleted.removed.len(), 41);
        assert_eq!(deleted.removed[0], q1.id);
        assert_eq!(deleted.current_leaf, chat.root_id);

        let after = store.get_chat(owner, chat.id).await.unwrap();
        assert_eq!(after.current_leaf_id, chat.root_id);
        assert_eq!(after.message_count, 2);
        let left: Vec<_> = store
            .list_messages(owner, chat.id)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(left, [chat.root_id, other.id]);
        // The removed answers' records stay (their message reference nulled), in the chat.
        let chat_id = || Some(("chat_id", uuid_value(chat.id.as_u128())));
        assert_eq!(db.count("generations", chat_id()).await, 40);

        let root = store.delete_subtree(owner, chat.id, chat.root_id).await;
        assert!(matches!(root, Err(RepoError::Conflict(_))), "{root:?}");
        let unknown = store
            .delete_subtree(owner, chat.id, MessageId::from_u128(new_id()))
            .await;
        assert!(
            matches!(unknown, Err(RepoError::NotFound(Entity::Message))),
            "{unknown:?}"
        );
    }

    /// Deleting a chat removes its messages; its generation records stay, detached.
    pub async fn deleting_a_chat_cascades_to_every_row_it_owns(db: &TestDatabase) {
        let store = db.store().await;
        let owner = user(&store, "alice").await;
        let keep = store.create_chat(new_chat(owner)).await.unwrap();
        let chat = store.create_chat(new_chat(owner)).await.unwrap();
        let mut parent = chat.root_id;
        for i in 0..30 {
            let m = store
                .append_answer(
                    owner,
                    chat.id,
                    message(
                        parent,
                        if i % 2 == 0 {
                            Role::User
                        } else {
                            Role::Assistant
                        },
                        "x",
                    ),
                    record(chat.id, owner, MessageId::from_u128(0)),
                )
                .await
                .unwrap();
            parent = m.id;
        }
        store.delete_chat(owner, chat.id).await.unwrap();
        let chat_id = || Some(("chat_id", uuid_value(chat.id.as_u128())));
        assert_eq!(db.count("messages", chat_id()).await, 0);
        assert_eq!(db.count("generations", chat_id()).await, 0);
        // What the chat's answers cost stays, without the chat.
        assert_eq!(db.count("generations", None).await, 30);
        assert_eq!(db.count("chats", None).await, 1);
        assert_eq!(store.list_messages(owner, keep.id).await.unwrap().len(), 1);
        assert!(matches!(
            store.delete_chat(owner, chat.id).await,
            Err(RepoError::NotFound(Entity::Chat))
        ));
    }

    /// A call that stored no answer keeps its record (no chat, no message): it counts in its
    /// caller's usage only, and deleting the caller's chats leaves it.
    pub async fn a_record_without_a_chat_counts_for_its_caller_only(db: &TestDatabase) {
        use usecase::analytics::AnalyticsRepository;
        let store = db.store().await;
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let chat = store.create_chat(new_chat(alice)).await.unwrap();
        let mut unattached = record(chat.id, alice, MessageId::from_u128(0));
        unattached.chat_id = None;
        unattached.message_id = None;
        store.record_generation(unattached.clone()).await.unwrap();
        store.record_generation(unattached).await.unwrap();
        store.delete_chat(alice, chat.id).await.unwrap();
        let from = Timestamp::from_unix_micros(0);
        let to = Timestamp::from_unix_micros(now().as_unix_micros() + 1_000_000);
        let usage = store
            .usage_by_day_and_model(alice, from, to, None)
            .await
            .unwrap();
        assert_eq!(
            usage.iter().map(|u| u.messages).sum::<u64>(),
            2,
            "{usage:?}"
        );
        assert_eq!(
            usage.iter().map(|u| u.total_tokens).sum::<u64>(),
            2 * record(chat.id, alice, chat.root_id).usage.total_tokens
        );
        assert!(
            store
                .usage_by_day_and_model(bob, from, to, None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// 200 tasks × 50 appends, 20 tasks per chat: every append lands, none fails, and every
    /// chat's counter and tree agree with its rows.
    pub async fn concurrent_appends_are_never_lost(db: &TestDatabase) {
        const TASKS: usize = 200;
        const APPENDS: usize = 50;
        const CHATS: usize = 10;
        let store = Arc::new(db.store().await);
        let owner = user(&*store, "alice").await;
        let mut chats = Vec::new();
        for _ in 0..CHATS {
            chats.push(store.create_chat(new_chat(owner)).await.unwrap());
        }
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            let chat = chats[task % CHATS].clone();
            handles.push(tokio::spawn(async move {
                let mut parent = chat.root_id;
                let mut errors = Vec::new();
                for i in 0..APPENDS {
                    let role = if i % 2 == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    };
                    match store
                        .append_message(owner, chat.id, message(parent, role, "turn"), true)
                        .await
                    {
                        Ok(m) => parent = m.id,
                        Err(e) => errors.push(format!("{e:?}")),
                    }
                }
                errors
            }));
        }
        let mut errors = Vec::new();
        for h in handles {
            errors.extend(h.await.unwrap());
        }
        assert!(
            errors.is_empty(),
            "{} errors, first: {:?}",
            errors.len(),
            errors.first()
        );
        assert_eq!(
            db.count("messages", None).await,
            (TASKS * APPENDS + CHATS) as i64
        );
        let mut leaves = HashMap::new();
        for chat in &chats {
            let stored = store.get_chat(owner, chat.id).await.unwrap();
            let messages = store.list_messages(owner, chat.id).await.unwrap();
            assert_eq!(stored.message_count as usize, messages.len());
            assert_eq!(messages.len(), TASKS / CHATS * APPENDS + 1);
            let tree = ConversationTree::build(chat.id, messages).unwrap();
            assert_eq!(tree.children(chat.root_id).unwrap().len(), TASKS / CHATS);
            assert_eq!(
                tree.path_to(stored.current_leaf_id).unwrap().len(),
                APPENDS + 1
            );
            leaves.insert(chat.id, stored.current_leaf_id);
        }
        assert_eq!(leaves.len(), CHATS);
    }

    pub async fn the_catalogue_is_refreshed_by_upsert(db: &TestDatabase) {
        let store = db.store().await;
        store
            .upsert_models(vec![model("a/one", "0.000001"), model("b/two", "0.000003")])
            .await
            .unwrap();
        store
            .upsert_models(vec![model("a/one", "0.0000015"), model("c/three", "0")])
            .await
            .unwrap();
        let all = store.list_models().await.unwrap();
        let ids: Vec<_> = all.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a/one", "c/three"], "b/two is no longer listed");
        assert!(matches!(
            store.get_model(&ModelId::parse("b/two").unwrap()).await,
            Err(RepoError::NotFound(Entity::Model))
        ));
        let one = store
            .get_model(&ModelId::parse("a/one").unwrap())
            .await
            .unwrap();
        assert_eq!(one.pricing.prompt, Usd::parse_decimal("0.0000015").unwrap());
        assert_eq!(one.description.as_deref(), Some("日本語も話せる 🤖"));
        assert_eq!(one.input_modalities, ["text", "image"]);
        assert_eq!(db.count("models", None).await, 3);
        assert!(matches!(
            store.get_model(&ModelId::parse("z/none").unwrap()).await,
            Err(RepoError::NotFound(Entity::Model))
        ));
        let many: Vec<_> = (0..450)
            .map(|i| model(&format!("bulk/{i}"), "0.1"))
            .collect();
        store.upsert_models(many).await.unwrap();
        assert_eq!(
            db.count("models", None).await,
            453,
            "rows are kept, inactive"
        );
        assert_eq!(store.list_models().await.unwrap().len(), 450);
        // Listed again, a model is active again.
        store
            .upsert_models(vec![model("b/two", "0.000003")])
            .await
            .unwrap();
        let ids: Vec<_> = store
            .list_models()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["b/two"]);
    }

    pub async fn a_refresh_token_rotates_once_and_reuse_revokes_its_family(db: &TestDatabase) {
        let store = Arc::new(db.store().await);
        let owner = user(&*store, "alice").await;
        store
            .store_refresh_token(first_token(owner, "h0"))
            .await
            .unwrap();
        // Twenty concurrent presentations of the same token: exactly one rotates it.
        let mut handles = Vec::new();
        for i in 0..20 {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                store
                    .rotate_refresh_token("h0", successor(&format!("h1-{i}")), now())
                    .await
                    .unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap());
        }
        let rotated = outcomes
            .iter()
            .filter(|o| **o == Rotation::Rotated(owner))
            .count();
        assert_eq!(rotated, 1, "{outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| **o == Rotation::Reused).count(),
            19
        );
        // The reuse revoked the whole family, the successor included.
        assert_eq!(db.count("refresh_tokens", None).await, 2);
        let successor_hash = format!(
            "h1-{}",
            outcomes
                .iter()
                .position(|o| *o == Rotation::Rotated(owner))
                .unwrap()
        );
        assert_eq!(
            store
                .rotate_refresh_token(&successor_hash, successor("h2"), now())
                .await
                .unwrap(),
            Rotation::Reused
        );
        assert_eq!(
            store
                .rotate_refresh_token("nope", successor("h3"), now())
                .await
                .unwrap(),
            Rotation::Unknown
        );
        // Expiry.
        store
            .store_refresh_token(RefreshTokenRecord {
                expires_at: Timestamp::from_unix_micros(1),
                ..first_token(owner, "old")
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh_token("old", successor("h4"), now())
                .await
                .unwrap(),
            Rotation::Expired
        );
        assert_eq!(
            store
                .revoke_refresh_tokens(owner, None, now())
                .await
                .unwrap(),
            1
        );
    }

    pub async fn a_chat_page_costs_the_same_number_of_queries_whatever_its_size(db: &TestDatabase) {
        let mut store = db.store().await;
        let queries = store.count_queries();
        let owner = user(&store, "alice").await;
        for i in 0..120 {
            let mut chat = new_chat(owner);
            chat.title = Some(ChatTitle::parse(format!("chat {i}")).unwrap());
            let chat = store.create_chat(chat).await.unwrap();
            store
                .append_message(
                    owner,
                    chat.id,
                    message(chat.root_id, Role::User, &format!("preview {i}")),
                    true,
                )
                .await
                .unwrap();
        }
        let mut costs = Vec::new();
        for limit in [1, 10, 100] {
            let before = queries.load(Ordering::SeqCst);
            let page = store
                .list_chats(
                    owner,
                    usecase::ports::ChatQuery {
                        page: domain::PageRequest::new(Some(1), Some(limit)).unwrap(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            costs.push(queries.load(Ordering::SeqCst) - before);
            assert_eq!(page.total, Some(120));
            assert_eq!(page.items.len(), limit as usize);
            assert!(page.items.iter().all(|s| s.preview.starts_with("preview ")));
        }
        assert_eq!(costs[0], costs[2], "queries per page: {costs:?}");
        assert!(costs[0] <= 3, "{costs:?}");
    }

    /// A streaming answer ends once: content, status, record, current leaf and version
    /// together; a second end is refused.
    pub async fn a_streaming_answer_ends_once_with_everything_in_one_write(db: &TestDatabase) {
        let store = db.store().await;
        let owner = user(&store, "alice").await;
        let chat = store.create_chat(new_chat(owner)).await.unwrap();
        let q = store
            .append_message(owner, chat.id, message(chat.root_id, Role::User, "q"), true)
            .await
            .unwrap();
        let pending = streaming(q.id);
        let pending = store
            .append_message(owner, chat.id, pending, false)
            .await
            .unwrap();
        let during = store.get_chat(owner, chat.id).await.unwrap();
        assert_eq!(
            during.current_leaf_id, q.id,
            "a streaming answer is not the leaf yet"
        );
        let end = |status, content: &str, record| FinishedAnswer {
            message: pending.id,
            question: q.id,
            content: content.to_owned(),
            status,
            record,
            leaf_at_start: q.id,
            // The clock did not move: the version must still change.
            now: during.updated_at,
        };
        store
            .finish_answer(
                owner,
                chat.id,
                end(
                    MessageStatus::Complete,
                    "答え 🤖",
                    Some(record(chat.id, owner, pending.id)),
                ),
            )
            .await
            .unwrap();
        let messages = store.list_messages(owner, chat.id).await.unwrap();
        let done = messages.iter().find(|m| m.id == pending.id).unwrap();
        assert_eq!(done.status, MessageStatus::Complete);
        assert_eq!(done.content, "答え 🤖");
        let after = store.get_chat(owner, chat.id).await.unwrap();
        assert_eq!(after.current_leaf_id, pending.id);
        assert!(
            after.updated_at > during.updated_at,
            "the chat version moved"
        );
        assert_eq!(
            db.count(
                "generations",
                Some(("message_id", uuid_value(pending.id.as_u128())))
            )
            .await,
            1
        );
        assert!(matches!(
            store
                .finish_answer(owner, chat.id, end(MessageStatus::Failed, "x", None))
                .await,
            Err(RepoError::Conflict(_))
        ));
        let stranger = user(&store, "mallory").await;
        assert!(matches!(
            store
                .finish_answer(stranger, chat.id, end(MessageStatus::Failed, "x", None))
                .await,
            Err(RepoError::NotFound(Entity::Chat))
        ));
    }

    /// A failure injected after the first statement of each multi-row operation leaves
    /// nothing behind.
    pub async fn a_failure_half_way_leaves_no_row_behind(db: &TestDatabase) {
        let armed: Arc<std::sync::Mutex<Option<&'static str>>> = Arc::default();
        let hook = Arc::clone(&armed);
        let store = db.store().await.with_fault_injector(Arc::new(move |point| {
            hook.lock().unwrap().is_some_and(|p| p == point)
        }));
        let arm = |point| *armed.lock().unwrap() = Some(point);
        let owner = user(&store, "alice").await;
        let chat = store.create_chat(new_chat(owner)).await.unwrap();
        let q = store
            .append_message(owner, chat.id, message(chat.root_id, Role::User, "q"), true)
            .await
            .unwrap();
        let before = (
            db.count("chats", None).await,
            db.count("messages", None).await,
            db.count("generations", None).await,
            store.get_chat(owner, chat.id).await.unwrap(),
        );

        arm("create_chat");
        assert!(store.create_chat(new_chat(owner)).await.is_err());
        arm("append_message");
        assert!(
            store
                .append_message(owner, chat.id, message(q.id, Role::Assistant, "a"), true)
                .await
                .is_err()
        );
        arm("append_answer");
        assert!(
            store
                .append_answer(
                    owner,
                    chat.id,
                    message(q.id, Role::Assistant, "a"),
                    record(chat.id, owner, MessageId::from_u128(0))
                )
                .await
                .is_err()
        );
        // A streamed turn: the question and its answer row, failing after either insert.
        for point in ["append_turn", "append_turn_answer"] {
            arm(point);
            let question = message(q.id, Role::User, "q2");
            let row = streaming(question.id);
            assert!(
                store
                    .append_turn(owner, chat.id, question, row)
                    .await
                    .is_err(),
                "{point}"
            );
        }
        arm("delete_subtree");
        assert!(store.delete_subtree(owner, chat.id, q.id).await.is_err());
        *armed.lock().unwrap() = None;
        let pending = streaming(q.id);
        let pending = store
            .append_message(owner, chat.id, pending, false)
            .await
            .unwrap();
        let before = (
            before.0,
            before.1 + 1,
            before.2,
            store.get_chat(owner, chat.id).await.unwrap(),
        );
        arm("finish_answer");
        assert!(
            store
                .finish_answer(
                    owner,
                    chat.id,
                    FinishedAnswer {
                        message: pending.id,
                        question: q.id,
                        content: "half".into(),
                        status: MessageStatus::Complete,
                        record: Some(record(chat.id, owner, pending.id)),
                        leaf_at_start: q.id,
                        now: now(),
                    }
                )
                .await
                .is_err()
        );
        let stored = store.list_messages(owner, chat.id).await.unwrap();
        let stored = stored.iter().find(|m| m.id == pending.id).unwrap();
        assert_eq!(
            (stored.status, stored.content.as_str()),
            (MessageStatus::Streaming, "")
        );
        let after = (
            db.count("chats", None).await,
            db.count("messages", None).await,
            db.count("generations", None).await,
            store.get_chat(owner, chat.id).await.unwrap(),
        );
        assert_eq!(before, after);

        arm("upsert_models");
        let many: Vec<_> = (0..450).map(|i| model(&format!("m/{i}"), "0.1")).collect();
        assert!(store.upsert_models(many).await.is_err());
        assert_eq!(db.count("models", None).await, 0);

        *armed.lock().unwrap() = None;
        assert!(store.delete_subtree(owner, chat.id, q.id).await.is_ok());
    }

    pub async fn a_short_query_reads_a_bounded_window_of_the_newest_messages(db: &TestDatabase) {
        let store = db.store().await.with_short_search_window(5);
        let alice = user(&store, "alice").await;
        let chat = store.create_chat(new_chat(alice)).await.unwrap();
        let mut ids = Vec::new();
        for text in ["猫犬 old", "old", "猫犬 a", "b", "猫犬 c", "d"] {
            let m = message(chat.root_id, Role::User, text);
            ids.push(
                store
                    .append_message(alice, chat.id, m, false)
                    .await
                    .unwrap()
                    .id,
            );
        }
        // Seven messages with the root: the window holds the newest five.
        let (short, found) = searched(&store, alice, None, "猫犬", 1).await;
        assert_eq!(short, vec![ids[4], ids[2]]);
        assert!(!found.searched_all);
        assert_eq!(found.page.total, 2);
        let (long, found) = searched(&store, alice, None, "猫犬 o", 1).await;
        assert_eq!(long, vec![ids[0]], "an indexed query reads everything");
        assert!(found.searched_all);
        let small = db.store().await;
        let (all, found) = searched(&small, alice, None, "猫犬", 1).await;
        assert_eq!(all, vec![ids[4], ids[2], ids[0]]);
        assert!(found.searched_all);
    }
}

macro_rules! backend_suite {
    ($backend:ident: $variant:expr; $suite:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let db = infra_db::or_skip!(crate::TestDatabase::create($variant));
                    crate::$suite::$test(&db).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($suite:ident: $($test:ident),* $(,)?) => {
        backend_suite!(sqlite: crate::Backend::Sqlite; $suite: $($test),*);
        backend_suite!(postgres: crate::Backend::Postgres; $suite: $($test),*);
        backend_suite!(mysql: crate::Backend::MySql; $suite: $($test),*);
    };
}

/// The contract on the three backends and on the in-memory store.
macro_rules! every_store {
    ($($test:ident),* $(,)?) => {
        mod held_to_the_contract {
            every_backend!(contract: $($test),*);
            mod memory {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        crate::contract::$test(&crate::Memory::default()).await;
                    }
                )*
            }
        }
    };
}

every_store!(
    usernames_are_unique_regardless_of_case,
    a_chat_is_created_with_its_root_and_is_visible_only_to_its_owner,
    concurrent_counter_increments_are_exact,
    private_templates_are_invisible_to_others,
    api_keys_are_found_by_prefix_and_revoked_by_their_owner_only,
    keyset_pages_follow_the_list_order_for_every_sort,
    a_write_from_a_known_version_returns_the_version_after_it,
    concurrent_writes_each_learn_their_own_outcome,
    a_turn_stores_its_question_and_answer_row_together,
    account_changes_are_found_by_time_and_epochs_count_every_reset,
    a_finished_answer_does_not_move_a_user_who_went_elsewhere,
    long_texts_are_stored_whole,
    answers_left_streaming_are_marked_interrupted,
    generated_titles_never_overwrite_a_title,
    search_finds_exactly_what_a_substring_scan_finds,
    a_common_term_is_paged_past_the_counting_cap,
    a_password_hash_is_replaced_only_while_it_is_the_one_read,
);

every_backend!(suite:
    migrations_are_idempotent_and_the_store_answers,
    a_chat_for_an_unknown_owner_is_refused,
    appends_branch_from_any_message_and_move_the_current_leaf,
    a_parent_from_another_chat_is_refused,
    deleting_a_subtree_removes_it_and_moves_the_leaf_to_the_surviving_ancestor,
    deleting_a_chat_cascades_to_every_row_it_owns,
    a_record_without_a_chat_counts_for_its_caller_only,
    concurrent_appends_are_never_lost,
    the_catalogue_is_refreshed_by_upsert,
    a_failure_half_way_leaves_no_row_behind,
    a_refresh_token_rotates_once_and_reuse_revokes_its_family,
    a_chat_page_costs_the_same_number_of_queries_whatever_its_size,
    a_streaming_answer_ends_once_with_everything_in_one_write,
    a_short_query_reads_a_bounded_window_of_the_newest_messages,
);

/// PostgreSQL's read committed: a revocation of all of a user's refresh tokens that waits on
/// a rotation in progress must also end the successor that rotation commits (a stolen token
/// refreshed in a loop would otherwise outlive a password change).
mod revocation_during_a_rotation {
    mod postgres {
        use std::time::Duration;

        use sea_orm::{ConnectionTrait, TransactionTrait};

        use crate::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn also_ends_the_successor_the_rotation_commits() {
            let db = infra_db::or_skip!(TestDatabase::create(Backend::Postgres));
            let store = Arc::new(db.store().await);
            let owner = user(&*store, "alice").await;
            store
                .store_refresh_token(first_token(owner, "stolen"))
                .await
                .unwrap();
            // A rotation, as `rotate_refresh_token` runs it, caught half way: the token's
            // row is locked and spent, its successor not yet written.
            let raw = db.raw().await;
            let rotation = raw.begin().await.unwrap();
            rotation
                .execute_unprepared(
                    "UPDATE refresh_tokens SET used_at = created_at WHERE token_hash = 'stolen'",
                )
                .await
                .unwrap();
            let revocation = tokio::spawn({
                let store = Arc::clone(&store);
                async move { store.revoke_refresh_tokens(owner, None, now()).await }
            });
            // The revocation now waits for the locked row.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!revocation.is_finished());
            rotation
                .execute_unprepared(
                    "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, \
                     expires_at) SELECT gen_random_uuid(), user_id, family_id, 'successor', \
                     created_at, expires_at FROM refresh_tokens WHERE token_hash = 'stolen'",
                )
                .await
                .unwrap();
            rotation.commit().await.unwrap();
            revocation.await.unwrap().unwrap();
            assert_eq!(
                store
                    .rotate_refresh_token("successor", successor("next"), now())
                    .await
                    .unwrap(),
                Rotation::Reused,
                "the successor was revoked with the rest"
            );
            db.drop_database().await;
        }
    }
}

/// A test that panics never reaches `drop_database`: its database goes anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_of_a_test_that_panicked_is_dropped() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let location = db.location();
        assert!(TestDatabase::exists(backend, &location).await);
        let failed = std::thread::spawn(move || {
            let _held = db;
            panic!("the test failed while holding its database");
        })
        .join();
        assert!(failed.is_err());
        assert!(
            !TestDatabase::exists(backend, &location).await,
            "{} database {} was left behind",
            backend.name(),
            location.0
        );
    }
}
