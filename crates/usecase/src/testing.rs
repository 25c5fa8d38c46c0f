//! In-memory fakes of every port, honouring the same contracts as the real adapters
//! (ownership scoping, atomicity, tree invariants). For unit tests of this crate and the
//! layers above it; adapters are tested against real databases instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use domain::{
    Chat, ChatId, ConversationTree, GenerationRecord, Message, MessageId, MessageStatus, ModelId,
    ModelInfo, PromptTemplate, Role, TemplateId, Timestamp, User, UserId, Username,
};

use crate::auth::{
    AccessClaims, AccessToken, ApiKeyRecord, CredentialRepository, CryptoError, PasswordHasher,
    RefreshSuccessor, RefreshTokenRecord, Rotation, TokenCodec, TokenRejection,
};
use crate::ports::{
    ChatRepository, Clock, DeletedSubtree, Entity, HealthCheck, IdGenerator,
    ModelCatalogRepository, NewChat, NewMessage, NewUser, RepoError, TemplateRepository,
    UserCredentials, UserRepository,
};

/// A clock that only moves when told to (by one microsecond per reading, so times are unique).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock starting at `start`.
    #[must_use]
    pub const fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.as_unix_micros()))
    }

    /// Moves the clock forward.
    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.0.fetch_add(1, Ordering::SeqCst))
    }
}

/// Ids 1, 2, 3, …
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> u128 {
        u128::from(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// Stored refresh token with its life-cycle marks.
#[derive(Debug, Clone)]
struct StoredRefresh {
    record: RefreshTokenRecord,
    used: bool,
    revoked: bool,
}

#[derive(Debug, Default)]
struct State {
    refresh: Vec<StoredRefresh>,
    api_keys: Vec<(ApiKeyRecord, bool)>,
    /// When each account changed and each key was revoked (for account-change polls).
    user_changes: Vec<(UserId, Timestamp)>,
    key_revocations: Vec<(String, Timestamp)>,
    users: HashMap<UserId, UserCredentials>,
    chats: HashMap<ChatId, Chat>,
    messages: HashMap<ChatId, Vec<Message>>,
    records: HashMap<MessageId, GenerationRecord>,
    templates: HashMap<TemplateId, PromptTemplate>,
    models: HashMap<ModelId, ModelInfo>,
    settings: HashMap<UserId, crate::catalog::UserSettings>,
    presets: HashMap<domain::PresetId, domain::Preset>,
}

/// Every repository port over one mutex-guarded state: each call is trivially atomic.
/// Clones share the state.
#[derive(Debug, Default, Clone)]
pub struct InMemoryStore {
    state: std::sync::Arc<Mutex<State>>,
}

impl InMemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, RepoError>) -> Result<T, RepoError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| RepoError::Unexpected("in-memory store poisoned".into()))?;
        f(&mut state)
    }

    /// The generation record of an answer, for assertions.
    #[must_use]
    pub fn generation_record(&self, message: MessageId) -> Option<GenerationRecord> {
        self.state.lock().ok()?.records.get(&message).cloned()
    }
}

fn owned_chat(state: &mut State, owner: UserId, chat: ChatId) -> Result<&mut Chat, RepoError> {
    state
        .chats
        .get_mut(&chat)
        .filter(|c| c.owner == owner)
        .ok_or(RepoError::NotFound(Entity::Chat))
}

fn insert_message(
    state: &mut State,
    owner: UserId,
    chat_id: ChatId,
    new: NewMessage,
    move_leaf: bool,
) -> Result<Message, RepoError> {
    owned_chat(state, owner, chat_id)?;
    let messages = state.messages.entry(chat_id).or_default();
    if !messages.iter().any(|m| m.id == new.parent_id) {
        return Err(RepoError::NotFound(Entity::Message));
    }
    if new.role == Role::System {
        return Err(RepoError::Conflict("only the root is a system message"));
    }
    let message = new.stored_in(chat_id);
    messages.push(message.clone());
    let chat = owned_chat(state, owner, chat_id)?;
    chat.message_count += 1;
    chat.updated_at = message.created_at;
    if move_leaf {
        chat.current_leaf_id = message.id;
    }
    Ok(message)
}

impl HealthCheck for InMemoryStore {
    async fn ping(&self) -> Result<(), RepoError> {
        self.with(|_| Ok(()))
    }
}

impl UserRepository for InMemoryStore {
    async fn create_user(&self, user: NewUser) -> Result<User, RepoError> {
        self.with(|s| {
            let canonical = user.username.canonical();
            if s.users
                .values()
                .any(|u| u.user.username.canonical() == canonical)
            {
                return Err(RepoError::Conflict("username taken"));
            }
            let stored = User {
                id: user.id,
                username: user.username,
                disabled: false,
                token_epoch: 0,
                created_at: user.created_at,
            };
            s.users.insert(
                user.id,
                UserCredentials {
                    user: stored.clone(),
                    password_hash: user.password_hash,
                },
            );
            Ok(stored)
        })
    }

    async fn find_credentials(
        &self,
        username: &Username,
    ) -> Result<Option<UserCredentials>, RepoError> {
        let canonical = username.canonical();
        self.with(|s| {
            Ok(s.users
                .values()
                .find(|u| u.user.username.canonical() == canonical)
                .cloned())
        })
    }

    async fn get_user(&self, id: UserId) -> Result<User, RepoError> {
        self.with(|s| {
            s.users
                .get(&id)
                .map(|u| u.user.clone())
                .ok_or(RepoError::NotFound(Entity::User))
        })
    }

    async fn list_users(&self, page: domain::PageRequest) -> Result<domain::Page<User>, RepoError> {
        self.with(|s| {
            let mut all: Vec<User> = s.users.values().map(|u| u.user.clone()).collect();
            all.sort_by_key(|u| (u.created_at, u.id));
            let total = all.len() as u64;
            let items = all
                .into_iter()
                .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
                .take(page.limit() as usize)
                .collect();
            Ok(domain::Page {
                items,
                total,
                request: page,
            })
        })
    }

    async fn update_user(
        &self,
        id: UserId,
        change: crate::ports::UserChange,
        now: Timestamp,
    ) -> Result<User, RepoError> {
        self.with(|s| {
            let u = s
                .users
                .get_mut(&id)
                .ok_or(RepoError::NotFound(Entity::User))?;
            if let Some(disabled) = change.disabled {
                u.user.disabled = disabled;
            }
            if let Some(hash) = change.password_hash {
                u.password_hash = hash;
            }
            if change.end_sessions {
                u.user.token_epoch += 1;
            }
            let user = u.user.clone();
            s.user_changes.push((id, now));
            Ok(user)
        })
    }
}

impl ChatRepository for InMemoryStore {
    async fn list_chats(
        &self,
        owner: UserId,
        query: crate::ports::ChatQuery,
    ) -> Result<crate::ports::ChatList, RepoError> {
        use crate::ports::{ChatCursor, ChatSort, CursorKey};
        use std::cmp::Ordering as O;
        // The list's order as a comparison of (key, id), ties broken by id in the same
        // direction; titles sort with `None` first.
        let order = |a: &ChatCursor, b: &ChatCursor| -> O {
            let by_key = match (&a.key, &b.key) {
                (CursorKey::Time(x), CursorKey::Time(y)) => x.cmp(y),
                (CursorKey::Title(x), CursorKey::Title(y)) => x.cmp(y),
                _ => O::Equal,
            };
            let ascending = by_key.then(a.id.cmp(&b.id));
            match query.sort {
                ChatSort::TitleAsc => ascending,
                _ => ascending.reverse(),
            }
        };
        self.with(|s| {
            let needle = query.title.as_ref().map(|q| q.as_str().to_lowercase());
            let mut chats: Vec<Chat> = s
                .chats
                .values()
                .filter(|c| c.owner == owner)
                .filter(|c| {
                    needle.as_deref().is_none_or(|n| {
                        c.title
                            .as_ref()
                            .is_some_and(|t| t.as_str().to_lowercase().contains(n))
                    })
                })
                .cloned()
                .collect();
            chats.sort_by(|a, b| {
                order(
                    &ChatCursor::after(a, query.sort),
                    &ChatCursor::after(b, query.sort),
                )
            });
            let total =
                (query.after.is_none() && !query.without_total).then_some(chats.len() as u64);
            let start = match &query.after {
                Some(after) => chats
                    .iter()
                    .position(|c| order(&ChatCursor::after(c, query.sort), after) == O::Greater)
                    .unwrap_or(chats.len()),
                None => usize::try_from(query.page.offset()).unwrap_or(usize::MAX),
            };
            let limit = query.page.limit() as usize;
            let rest: Vec<Chat> = chats.into_iter().skip(start).collect();
            let next =
                (rest.len() > limit).then(|| ChatCursor::after(&rest[limit - 1], query.sort));
            let items = rest
                .into_iter()
                .take(limit)
                .map(|chat| {
                    let preview = s
                        .messages
                        .get(&chat.id)
                        .and_then(|ms| ms.iter().find(|m| m.id == chat.current_leaf_id))
                        .map(|m| m.content.clone())
                        .unwrap_or_default();
                    crate::ports::ChatSummary { chat, preview }
                })
                .collect();
            Ok(crate::ports::ChatList { items, total, next })
        })
    }

    async fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: crate::ports::ChatPatch,
        now: Timestamp,
    ) -> Result<Chat, RepoError> {
        self.with(|s| {
            let c = owned_chat(s, owner, chat)?;
            if let Some(title) = patch.title {
                c.title = Some(title);
                c.title_set_by_user = true;
            }
            if let Some(prompt) = patch.system_prompt {
                c.system_prompt = prompt;
            }
            if let Some(model) = patch.model_id {
                c.model_id = model;
            }
            c.updated_at = now;
            Ok(c.clone())
        })
    }

    async fn search_messages(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: domain::SearchQuery,
        page: domain::PageRequest,
    ) -> Result<domain::Page<crate::ports::SearchHit>, RepoError> {
        self.with(|s| {
            if let Some(chat) = chat {
                owned_chat(s, owner, chat)?;
            }
            let needle = query.as_str().to_lowercase();
            let mut hits: Vec<crate::ports::SearchHit> = s
                .chats
                .values()
                .filter(|c| c.owner == owner && chat.is_none_or(|id| id == c.id))
                .flat_map(|c| {
                    s.messages
                        .get(&c.id)
                        .into_iter()
                        .flatten()
                        .filter(|m| m.content.to_lowercase().contains(&needle))
                        .map(|m| crate::ports::SearchHit {
                            message: m.clone(),
                            chat_title: c.title.clone(),
                        })
                })
                .collect();
            hits.sort_by_key(|h| std::cmp::Reverse((h.message.created_at, h.message.id)));
            let total = hits.len() as u64;
            let items = hits
                .into_iter()
                .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
                .take(page.limit() as usize)
                .collect();
            Ok(domain::Page {
                items,
                total,
                request: page,
            })
        })
    }

    async fn select_leaf(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        _now: Timestamp,
    ) -> Result<Chat, RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            if !s
                .messages
                .get(&chat)
                .is_some_and(|ms| ms.iter().any(|m| m.id == message))
            {
                return Err(RepoError::NotFound(Entity::Message));
            }
            let c = owned_chat(s, owner, chat)?;
            c.current_leaf_id = message;
            Ok(c.clone())
        })
    }

    async fn create_chat(&self, new: NewChat) -> Result<Chat, RepoError> {
        self.with(|s| {
            if !s.users.contains_key(&new.owner) {
                return Err(RepoError::NotFound(Entity::User));
            }
            let chat = Chat {
                id: new.id,
                owner: new.owner,
                title_set_by_user: new.title.is_some(),
                title: new.title,
                system_prompt: new.system_prompt,
                model_id: new.model_id,
                preset_id: new.preset_id,
                root_id: new.root_id,
                current_leaf_id: new.root_id,
                message_count: 1,
                created_at: new.created_at,
                updated_at: new.created_at,
            };
            let root = Message {
                id: new.root_id,
                chat_id: new.id,
                parent_id: None,
                role: Role::System,
                content: new.root_content,
                status: MessageStatus::Complete,
                created_at: new.created_at,
            };
            s.chats.insert(chat.id, chat.clone());
            s.messages.insert(chat.id, vec![root]);
            Ok(chat)
        })
    }

    async fn get_chat(&self, owner: UserId, chat: ChatId) -> Result<Chat, RepoError> {
        self.with(|s| owned_chat(s, owner, chat).map(|c| c.clone()))
    }

    async fn list_messages(&self, owner: UserId, chat: ChatId) -> Result<Vec<Message>, RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            Ok(s.messages.get(&chat).cloned().unwrap_or_default())
        })
    }

    async fn append_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        move_leaf: bool,
    ) -> Result<Message, RepoError> {
        self.with(|s| insert_message(s, owner, chat, message, move_leaf))
    }

    async fn append_turn(
        &self,
        owner: UserId,
        chat: ChatId,
        question: NewMessage,
        answer: NewMessage,
    ) -> Result<Message, RepoError> {
        self.with(|s| {
            let stored = insert_message(s, owner, chat, question, true)?;
            insert_message(s, owner, chat, answer, false)?;
            Ok(stored)
        })
    }

    async fn append_answer(
        &self,
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        record: GenerationRecord,
    ) -> Result<Message, RepoError> {
        self.with(|s| {
            let stored = insert_message(s, owner, chat, message, true)?;
            s.records.insert(stored.id, record);
            Ok(stored)
        })
    }

    async fn finish_answer(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: crate::ports::FinishedAnswer,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            let stored = s
                .messages
                .get_mut(&chat)
                .and_then(|list| list.iter_mut().find(|m| m.id == answer.message))
                .ok_or(RepoError::NotFound(Entity::Message))?;
            if stored.status != MessageStatus::Streaming {
                return Err(RepoError::Conflict("the answer has already ended"));
            }
            stored.content = answer.content;
            stored.status = answer.status;
            let stored = stored.clone();
            let question = stored.parent_id;
            if let Some(record) = answer.record {
                s.records.insert(stored.id, record);
            }
            if let Some(c) = s.chats.get_mut(&chat) {
                if c.current_leaf_id == answer.leaf_at_start || Some(c.current_leaf_id) == question
                {
                    c.current_leaf_id = stored.id;
                }
                c.updated_at = Timestamp::from_unix_micros(
                    answer
                        .now
                        .as_unix_micros()
                        .max(c.updated_at.as_unix_micros() + 1),
                );
            }
            Ok(())
        })
    }

    async fn interrupt_streaming(
        &self,
        created_before: Timestamp,
        now: Timestamp,
    ) -> Result<u64, RepoError> {
        self.with(|s| {
            let mut marked = 0;
            let mut touched = Vec::new();
            for (chat, list) in &mut s.messages {
                for m in list.iter_mut().filter(|m| {
                    m.status == MessageStatus::Streaming && m.created_at < created_before
                }) {
                    m.status = MessageStatus::Interrupted;
                    marked += 1;
                    touched.push((*chat, m.id, m.parent_id));
                }
            }
            for (chat, id, parent) in touched {
                if let Some(c) = s.chats.get_mut(&chat) {
                    c.updated_at = now;
                    if Some(c.current_leaf_id) == parent {
                        c.current_leaf_id = id;
                    }
                }
            }
            Ok(marked)
        })
    }

    async fn set_generated_title(
        &self,
        owner: UserId,
        chat: ChatId,
        title: domain::ChatTitle,
    ) -> Result<bool, RepoError> {
        self.with(|s| {
            let c = s
                .chats
                .get_mut(&chat)
                .filter(|c| c.owner == owner)
                .ok_or(RepoError::NotFound(Entity::Chat))?;
            if c.title.is_some() || c.title_set_by_user {
                return Ok(false);
            }
            c.title = Some(title);
            Ok(true)
        })
    }

    async fn delete_subtree(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<DeletedSubtree, RepoError> {
        self.with(|s| {
            let current = owned_chat(s, owner, chat)?.current_leaf_id;
            let messages = s.messages.get(&chat).cloned().unwrap_or_default();
            let mut tree = ConversationTree::build(chat, messages)
                .map_err(|e| RepoError::Corrupt(Box::new(e)))?;
            let (removed, parent) = tree.remove_subtree(message).map_err(|e| match e {
                domain::TreeError::RootRemoval => RepoError::Conflict("the root cannot be deleted"),
                _ => RepoError::NotFound(Entity::Message),
            })?;
            let leaf = if removed.contains(&current) {
                parent
            } else {
                current
            };
            if let Some(list) = s.messages.get_mut(&chat) {
                list.retain(|m| !removed.contains(&m.id));
            }
            for id in &removed {
                s.records.remove(id);
            }
            let c = owned_chat(s, owner, chat)?;
            c.current_leaf_id = leaf;
            c.message_count -= removed.len() as u64;
            Ok(DeletedSubtree {
                removed,
                current_leaf: leaf,
            })
        })
    }

    async fn delete_chat(&self, owner: UserId, chat: ChatId) -> Result<(), RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            s.chats.remove(&chat);
            for m in s.messages.remove(&chat).unwrap_or_default() {
                s.records.remove(&m.id);
            }
            Ok(())
        })
    }
}

impl TemplateRepository for InMemoryStore {
    async fn create_template(&self, template: PromptTemplate) -> Result<PromptTemplate, RepoError> {
        self.with(|s| {
            if !s.users.contains_key(&template.owner) {
                return Err(RepoError::NotFound(Entity::User));
            }
            s.templates.insert(template.id, template.clone());
            Ok(template)
        })
    }

    async fn get_template(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> Result<PromptTemplate, RepoError> {
        self.with(|s| {
            s.templates
                .get(&id)
                .filter(|t| t.owner == viewer || t.is_public)
                .cloned()
                .ok_or(RepoError::NotFound(Entity::Template))
        })
    }

    async fn update_template(&self, t: PromptTemplate) -> Result<PromptTemplate, RepoError> {
        self.with(|s| {
            let stored = s
                .templates
                .get_mut(&t.id)
                .filter(|x| x.owner == t.owner)
                .ok_or(RepoError::NotFound(Entity::Template))?;
            let (usage, created) = (stored.usage_count, stored.created_at);
            *stored = PromptTemplate {
                usage_count: usage,
                created_at: created,
                ..t
            };
            Ok(stored.clone())
        })
    }

    async fn delete_template(&self, owner: UserId, id: TemplateId) -> Result<(), RepoError> {
        self.with(|s| {
            if s.templates.get(&id).is_none_or(|t| t.owner != owner) {
                return Err(RepoError::NotFound(Entity::Template));
            }
            s.templates.remove(&id);
            Ok(())
        })
    }

    async fn list_templates(
        &self,
        viewer: UserId,
        q: crate::ports::TemplateQuery,
    ) -> Result<domain::Page<PromptTemplate>, RepoError> {
        self.with(|s| {
            let needle = q.search.as_ref().map(|x| x.as_str().to_lowercase());
            let mut all: Vec<PromptTemplate> = s
                .templates
                .values()
                .filter(|t| {
                    if q.mine_only {
                        t.owner == viewer
                    } else {
                        t.owner == viewer || t.is_public
                    }
                })
                .filter(|t| {
                    needle.as_deref().is_none_or(|n| {
                        t.name.as_str().to_lowercase().contains(n)
                            || t.content.as_str().to_lowercase().contains(n)
                            || t.description
                                .as_ref()
                                .is_some_and(|d| d.as_str().to_lowercase().contains(n))
                    })
                })
                .filter(|t| {
                    q.category
                        .as_ref()
                        .is_none_or(|c| t.category.as_ref() == Some(c))
                })
                .filter(|t| q.is_favorite.is_none_or(|f| t.is_favorite == f))
                .filter(|t| q.is_public.is_none_or(|p| t.is_public == p))
                .cloned()
                .collect();
            match q.sort {
                crate::ports::TemplateSort::Updated => {
                    all.sort_by_key(|t| std::cmp::Reverse(t.updated_at))
                }
                crate::ports::TemplateSort::Name => {
                    all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()))
                }
                crate::ports::TemplateSort::Usage => {
                    all.sort_by_key(|t| std::cmp::Reverse(t.usage_count))
                }
            }
            let total = all.len() as u64;
            let items = all
                .into_iter()
                .skip(usize::try_from(q.page.offset()).unwrap_or(usize::MAX))
                .take(q.page.limit() as usize)
                .collect();
            Ok(domain::Page {
                items,
                total,
                request: q.page,
            })
        })
    }

    async fn template_categories(&self, viewer: UserId) -> Result<Vec<(String, u64)>, RepoError> {
        self.with(|s| {
            let mut counts: std::collections::BTreeMap<String, u64> =
                std::collections::BTreeMap::new();
            for t in s
                .templates
                .values()
                .filter(|t| t.owner == viewer || t.is_public)
            {
                if let Some(c) = &t.category {
                    *counts.entry(c.as_str().to_owned()).or_default() += 1;
                }
            }
            Ok(counts.into_iter().collect())
        })
    }

    async fn increment_template_usage(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> Result<u64, RepoError> {
        self.with(|s| {
            let t = s
                .templates
                .get_mut(&id)
                .filter(|t| t.owner == viewer || t.is_public)
                .ok_or(RepoError::NotFound(Entity::Template))?;
            t.usage_count += 1;
            Ok(t.usage_count)
        })
    }
}

impl ModelCatalogRepository for InMemoryStore {
    async fn upsert_models(&self, models: Vec<ModelInfo>) -> Result<(), RepoError> {
        self.with(|s| {
            for m in models {
                s.models.insert(m.id.clone(), m);
            }
            Ok(())
        })
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RepoError> {
        self.with(|s| {
            let mut all: Vec<ModelInfo> = s.models.values().cloned().collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(all)
        })
    }

    async fn get_model(&self, id: &ModelId) -> Result<ModelInfo, RepoError> {
        self.with(|s| {
            s.models
                .get(id)
                .cloned()
                .ok_or(RepoError::NotFound(Entity::Model))
        })
    }
}

impl CredentialRepository for InMemoryStore {
    async fn store_refresh_token(&self, record: RefreshTokenRecord) -> Result<(), RepoError> {
        self.with(|s| {
            s.refresh.push(StoredRefresh {
                record,
                used: false,
                revoked: false,
            });
            Ok(())
        })
    }

    async fn rotate_refresh_token(
        &self,
        hash: &str,
        successor: RefreshSuccessor,
        now: Timestamp,
    ) -> Result<Rotation, RepoError> {
        self.with(|s| {
            let Some(found) = s
                .refresh
                .iter()
                .find(|t| t.record.token_hash == hash)
                .cloned()
            else {
                return Ok(Rotation::Unknown);
            };
            if found.used || found.revoked {
                for t in &mut s.refresh {
                    if t.record.family_id == found.record.family_id {
                        t.revoked = true;
                    }
                }
                return Ok(Rotation::Reused);
            }
            if found.record.expires_at <= now {
                return Ok(Rotation::Expired);
            }
            for t in &mut s.refresh {
                if t.record.id == found.record.id {
                    t.used = true;
                }
            }
            s.refresh.push(StoredRefresh {
                record: RefreshTokenRecord {
                    id: successor.id,
                    user_id: found.record.user_id,
                    family_id: found.record.family_id,
                    token_hash: successor.token_hash,
                    created_at: successor.created_at,
                    expires_at: successor.expires_at,
                },
                used: false,
                revoked: false,
            });
            Ok(Rotation::Rotated(found.record.user_id))
        })
    }

    async fn revoke_refresh_tokens(
        &self,
        user: UserId,
        hash: Option<&str>,
        _now: Timestamp,
    ) -> Result<u64, RepoError> {
        self.with(|s| {
            let mut n = 0;
            for t in &mut s.refresh {
                if t.record.user_id == user
                    && !t.revoked
                    && hash.is_none_or(|h| h == t.record.token_hash)
                {
                    t.revoked = true;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<(), RepoError> {
        self.with(|s| {
            if s.api_keys.iter().any(|(k, _)| k.prefix == key.prefix) {
                return Err(RepoError::Conflict("prefix taken"));
            }
            s.api_keys.push((key, false));
            Ok(())
        })
    }

    async fn list_api_keys(&self, user: UserId) -> Result<Vec<ApiKeyRecord>, RepoError> {
        self.with(|s| {
            Ok(s.api_keys
                .iter()
                .rev()
                .filter(|(k, revoked)| k.user_id == user && !revoked)
                .map(|(k, _)| k.clone())
                .collect())
        })
    }

    async fn revoke_api_key(
        &self,
        user: UserId,
        id: domain::ApiKeyId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            let key = s
                .api_keys
                .iter_mut()
                .find(|(k, revoked)| k.id == id && k.user_id == user && !revoked)
                .ok_or(RepoError::NotFound(Entity::User))?;
            key.1 = true;
            let prefix = key.0.prefix.clone();
            s.key_revocations.push((prefix, now));
            Ok(())
        })
    }

    async fn account_changes_since(
        &self,
        since: Timestamp,
    ) -> Result<crate::auth::AccountChanges, RepoError> {
        self.with(|s| {
            Ok(crate::auth::AccountChanges {
                users: s
                    .user_changes
                    .iter()
                    .filter(|(_, at)| *at >= since)
                    .map(|(id, _)| *id)
                    .collect(),
                api_keys: s
                    .key_revocations
                    .iter()
                    .filter(|(_, at)| *at >= since)
                    .map(|(prefix, _)| prefix.clone())
                    .collect(),
            })
        })
    }

    async fn use_api_key(
        &self,
        prefix: &str,
        now: Timestamp,
    ) -> Result<Option<ApiKeyRecord>, RepoError> {
        self.with(|s| {
            Ok(s.api_keys
                .iter_mut()
                .find(|(k, revoked)| k.prefix == prefix && !revoked)
                .map(|(k, _)| {
                    k.last_used_at = Some(now);
                    k.clone()
                }))
        })
    }
}

/// A transparent "hasher": `plain:<password>`. Fast and obviously not for production.
#[derive(Debug, Default)]
pub struct PlainHasher;

impl PasswordHasher for PlainHasher {
    async fn hash(&self, password: &domain::Password) -> Result<String, CryptoError> {
        Ok(format!("plain:{}", password.expose()))
    }

    async fn verify(
        &self,
        password: &domain::Password,
        hash: Option<&str>,
    ) -> Result<bool, CryptoError> {
        Ok(hash == Some(format!("plain:{}", password.expose()).as_str()))
    }
}

/// Unsigned, readable tokens `user:<id>:<exp-micros>`; secrets are a counter; digests prefix `d:`.
#[derive(Debug, Default)]
pub struct ReadableTokens {
    counter: AtomicU64,
}

impl ReadableTokens {
    /// Access token lifetime of the fake, in seconds.
    pub const TTL_SECS: u64 = 60;
}

impl TokenCodec for ReadableTokens {
    fn issue_access(&self, user: &User, now: Timestamp) -> Result<AccessToken, CryptoError> {
        let exp = now
            .plus_micros(Self::TTL_SECS as i64 * 1_000_000)
            .as_unix_micros();
        Ok(AccessToken {
            token: format!("user:{}:{exp}:{}", user.id, user.token_epoch),
            expires_in: Self::TTL_SECS,
        })
    }

    fn verify_access(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenRejection> {
        let mut parts = token.split(':');
        let (Some("user"), Some(id), Some(exp), Some(epoch)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Invalid);
        };
        let exp: i64 = exp.parse().map_err(|_| TokenRejection::Invalid)?;
        if exp <= now.as_unix_micros() {
            return Err(TokenRejection::Expired);
        }
        Ok(AccessClaims {
            user: id.parse().map_err(|_| TokenRejection::Invalid)?,
            epoch: epoch.parse().map_err(|_| TokenRejection::Invalid)?,
        })
    }

    fn random_secret(&self) -> Result<String, CryptoError> {
        Ok(format!(
            "secret{:040}",
            self.counter.fetch_add(1, Ordering::SeqCst)
        ))
    }

    fn digest(&self, secret: &str) -> String {
        format!("d:{secret}")
    }
}

/// A scripted [`crate::llm::LlmGateway`]: answers `echo: <last message>`, serves a settable
/// model list, can be made to fail, and counts calls. Clones share their state.
#[derive(Debug, Default, Clone)]
pub struct FakeLlm {
    models: std::sync::Arc<Mutex<Vec<ModelInfo>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `list_models` calls so far.
    pub model_calls: std::sync::Arc<AtomicU64>,
}

impl FakeLlm {
    /// A provider serving `models`.
    #[must_use]
    pub fn with_models(models: Vec<ModelInfo>) -> Self {
        Self {
            models: std::sync::Arc::new(Mutex::new(models)),
            ..Self::default()
        }
    }

    /// Makes every call fail with `Unavailable` (or recover).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Replaces the model list.
    pub fn set_models(&self, models: Vec<ModelInfo>) {
        if let Ok(mut m) = self.models.lock() {
            *m = models;
        }
    }

    fn check(&self) -> Result<(), crate::llm::LlmError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(crate::llm::LlmError::Unavailable { retry_after: None });
        }
        Ok(())
    }
}

impl crate::llm::LlmGateway for FakeLlm {
    async fn complete(
        &self,
        request: crate::llm::CompletionRequest,
    ) -> Result<crate::llm::Completion, crate::llm::LlmError> {
        self.check()?;
        let last = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        Ok(crate::llm::Completion {
            content: format!("echo: {last}"),
            usage: None,
            finish_reason: Some("stop".into()),
            provider: None,
        })
    }

    async fn stream(
        &self,
        request: crate::llm::CompletionRequest,
    ) -> Result<crate::llm::CompletionStream, crate::llm::LlmError> {
        let answer = self.complete(request).await?;
        let mut items: Vec<Result<crate::llm::StreamEvent, crate::llm::LlmError>> = answer
            .content
            .split_inclusive(' ')
            .map(|w| Ok(crate::llm::StreamEvent::Delta(w.to_owned())))
            .collect();
        items.push(Ok(crate::llm::StreamEvent::Done {
            finish_reason: answer.finish_reason,
            usage: None,
            provider: None,
        }));
        Ok(Box::pin(VecStream(items.into_iter())))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, crate::llm::LlmError> {
        self.model_calls.fetch_add(1, Ordering::SeqCst);
        // Yield so concurrent callers really overlap with this call.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.check()?;
        Ok(self.models.lock().map(|m| m.clone()).unwrap_or_default())
    }
}

struct VecStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for VecStream<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

impl crate::catalog::SettingsRepository for InMemoryStore {
    async fn get_settings(&self, user: UserId) -> Result<crate::catalog::UserSettings, RepoError> {
        self.with(|s| Ok(s.settings.get(&user).cloned().unwrap_or_default()))
    }

    async fn put_settings(
        &self,
        user: UserId,
        settings: crate::catalog::UserSettings,
        _now: Timestamp,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            if !s.users.contains_key(&user) {
                return Err(RepoError::NotFound(Entity::User));
            }
            s.settings.insert(user, settings);
            Ok(())
        })
    }
}

impl crate::ports::PresetRepository for InMemoryStore {
    async fn create_preset(&self, preset: domain::Preset) -> Result<domain::Preset, RepoError> {
        self.with(|s| {
            if !s.users.contains_key(&preset.owner) {
                return Err(RepoError::NotFound(Entity::User));
            }
            s.presets.insert(preset.id, preset.clone());
            Ok(preset)
        })
    }

    async fn get_preset(
        &self,
        owner: UserId,
        id: domain::PresetId,
    ) -> Result<domain::Preset, RepoError> {
        self.with(|s| {
            s.presets
                .get(&id)
                .filter(|p| p.owner == owner)
                .cloned()
                .ok_or(RepoError::NotFound(Entity::Preset))
        })
    }

    async fn update_preset(&self, preset: domain::Preset) -> Result<domain::Preset, RepoError> {
        self.with(|s| {
            let stored = s
                .presets
                .get_mut(&preset.id)
                .filter(|p| p.owner == preset.owner)
                .ok_or(RepoError::NotFound(Entity::Preset))?;
            let (usage, created) = (stored.usage_count, stored.created_at);
            *stored = domain::Preset {
                usage_count: usage,
                created_at: created,
                ..preset
            };
            Ok(stored.clone())
        })
    }

    async fn delete_preset(&self, owner: UserId, id: domain::PresetId) -> Result<(), RepoError> {
        self.with(|s| {
            if s.presets.get(&id).is_none_or(|p| p.owner != owner) {
                return Err(RepoError::NotFound(Entity::Preset));
            }
            s.presets.remove(&id);
            Ok(())
        })
    }

    async fn list_presets(
        &self,
        owner: UserId,
        query: crate::ports::PresetQuery,
    ) -> Result<domain::Page<domain::Preset>, RepoError> {
        self.with(|s| {
            let needle = query.search.as_ref().map(|q| q.as_str().to_lowercase());
            let mut all: Vec<domain::Preset> = s
                .presets
                .values()
                .filter(|p| p.owner == owner && (!query.favorites_only || p.is_favorite))
                .filter(|p| {
                    needle.as_deref().is_none_or(|n| {
                        p.name.as_str().to_lowercase().contains(n)
                            || p.description
                                .as_ref()
                                .is_some_and(|d| d.as_str().to_lowercase().contains(n))
                    })
                })
                .cloned()
                .collect();
            all.sort_by_key(|p| std::cmp::Reverse((p.updated_at, p.id)));
            let total = all.len() as u64;
            let items = all
                .into_iter()
                .skip(usize::try_from(query.page.offset()).unwrap_or(usize::MAX))
                .take(query.page.limit() as usize)
                .collect();
            Ok(domain::Page {
                items,
                total,
                request: query.page,
            })
        })
    }

    async fn increment_preset_usage(
        &self,
        owner: UserId,
        id: domain::PresetId,
    ) -> Result<u64, RepoError> {
        self.with(|s| {
            let p = s
                .presets
                .get_mut(&id)
                .filter(|p| p.owner == owner)
                .ok_or(RepoError::NotFound(Entity::Preset))?;
            p.usage_count += 1;
            Ok(p.usage_count)
        })
    }
}
