//! [`InMemoryStore`]: every repository port over one mutex-guarded state.

use super::*;

mod admin;
mod chats;

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
    /// Records of calls that stored no answer.
    unattached_records: Vec<GenerationRecord>,
    audit: Vec<crate::auth::admin::AuditEntry>,
    invites: Vec<crate::auth::admin::Invite>,
    server_settings: HashMap<&'static str, String>,
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

    /// Adds plain users (role `user`, no password) for tests that need owners.
    ///
    /// # Panics
    /// When a name is not a valid username or is taken.
    #[allow(clippy::expect_used)] // test support: a bad fixture should stop the test
    pub async fn with_users(self, users: &[(UserId, &str)]) -> Self {
        for (id, name) in users {
            self.create_user(NewUser {
                id: *id,
                username: domain::Username::parse(*name).expect("a valid username"),
                password_hash: String::new(),
                role: domain::AccountRole::User,
                pending: false,
                created_at: Timestamp::from_unix_micros(0),
            })
            .await
            .expect("a new user");
        }
        self
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

    /// The records of calls that stored no answer, oldest first, for assertions.
    #[must_use]
    pub fn unattached_records(&self) -> Vec<GenerationRecord> {
        self.state
            .lock()
            .map(|s| s.unattached_records.clone())
            .unwrap_or_default()
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
                role: user.role,
                pending: user.pending,
                quota: domain::QuotaOverrides::default(),
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
            if let Some(role) = change.role {
                u.user.role = role;
            }
            if let Some(pending) = change.pending {
                u.user.pending = pending;
            }
            if let Some(quota) = change.quota {
                u.user.quota = quota;
            }
            let user = u.user.clone();
            s.user_changes.push((id, now));
            Ok(user)
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
                .filter(|t| q.is_favorite.is_none_or(|f| t.is_favorite_of(viewer) == f))
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
        if models.is_empty() {
            return Ok(());
        }
        self.with(|s| {
            // Absent models are dropped here (the database adapter keeps them, inactive):
            // neither lists nor finds them.
            s.models.clear();
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
                // Each account once, as the adapters list them.
                users: s
                    .user_changes
                    .iter()
                    .filter(|(_, at)| *at >= since)
                    .map(|(id, _)| *id)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
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

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, RepoError> {
        self.with(|s| {
            Ok(s.api_keys
                .iter()
                .find(|(k, revoked)| k.prefix == prefix && !revoked)
                .map(|(k, _)| k.clone()))
        })
    }

    async fn record_api_key_use(
        &self,
        id: domain::ApiKeyId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            // As the adapters: a use within the resolution of the last one writes nothing.
            let resolution = crate::auth::API_KEY_USE_RESOLUTION_MICROS;
            for (k, _) in &mut s.api_keys {
                let recent = k
                    .last_used_at
                    .is_some_and(|at| now.as_unix_micros() - at.as_unix_micros() < resolution);
                if k.id == id && !recent {
                    k.last_used_at = Some(now);
                }
            }
            Ok(())
        })
    }

    async fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: String,
    ) -> Result<bool, RepoError> {
        self.with(|s| {
            Ok(match s.users.get_mut(&user) {
                Some(u) if u.password_hash == old => {
                    u.password_hash = new;
                    true
                }
                _ => false,
            })
        })
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
