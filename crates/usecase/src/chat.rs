//! Conversations: chats as trees of messages, branching from any message, and blocking
//! replies from the model. Every route is scoped to its owner.

use std::sync::Arc;
use std::time::Instant;

use domain::{
    Chat, ChatId, ChatTitle, ConversationTree, GenerationRecord, Message, MessageContent,
    MessageId, MessageStatus, ModelId, Page, PageRequest, PresetId, Role, SearchQuery,
    SystemPrompt, TokenUsage, UserId,
};

use crate::catalog::{CatalogError, CatalogUseCase};
use crate::llm::{CompletionRequest, LlmError, LlmGateway, PromptMessage};
use crate::ports::{
    ChatPatch, ChatQuery, ChatRepository, ChatSummary, Clock, Entity, IdGenerator, NewChat,
    NewMessage, PresetRepository, RepoError, SearchHit,
};

/// Why a chat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such chat for this user.
    #[error("chat not found")]
    ChatNotFound,
    /// No such message in this chat.
    #[error("message not found")]
    MessageNotFound,
    /// The model is not in the catalogue.
    #[error("model {0} is not in the catalogue")]
    UnknownModel(ModelId),
    /// The preset does not exist (for this user).
    #[error("preset not found")]
    UnknownPreset,
    /// The root message cannot be deleted or answered again.
    #[error("{0}")]
    InvalidTarget(&'static str),
    /// The provider failed; the user message was kept.
    #[error("the language model failed")]
    Llm(#[source] LlmError),
    /// The catalogue could not be consulted.
    #[error("the model catalogue is unavailable")]
    Catalog(#[source] CatalogError),
    /// Storage failure.
    #[error("storage failure")]
    Storage(#[source] RepoError),
}

fn repo(e: RepoError) -> ChatError {
    match e {
        RepoError::NotFound(Entity::Chat) => ChatError::ChatNotFound,
        RepoError::NotFound(Entity::Message) => ChatError::MessageNotFound,
        other => ChatError::Storage(other),
    }
}

/// Fields of a new chat.
#[derive(Debug, Clone, Default)]
pub struct NewChatInput {
    /// Title (the chat is titled automatically later when absent).
    pub title: Option<ChatTitle>,
    /// Sent to the model before every path.
    pub system_prompt: Option<SystemPrompt>,
    /// The chat's model.
    pub model_id: Option<ModelId>,
    /// Content of the root (system) message.
    pub initial_message: Option<String>,
    /// A preset whose settings apply to this chat's answers.
    pub preset_id: Option<PresetId>,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct SendInput {
    /// The text.
    pub content: MessageContent,
    /// Branch from this message instead of the current leaf.
    pub parent: Option<MessageId>,
    /// Model, preset and sampling overrides.
    pub options: GenerationOptions,
}

/// The resolved settings of one generation.
#[derive(Debug)]
struct Plan {
    model: ModelId,
    info: domain::ModelInfo,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    system_prompt: Option<SystemPrompt>,
}

/// A stored exchange.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The user's message.
    pub user_message: Message,
    /// The model's answer.
    pub answer: Message,
    /// Tokens used, when reported.
    pub usage: Option<TokenUsage>,
    /// The model that answered.
    pub model: ModelId,
    /// Root → answer.
    pub path: Vec<MessageId>,
}

/// A chat with every message (the client's session recovery).
#[derive(Debug, Clone)]
pub struct ChatWithTree {
    /// The chat.
    pub chat: Chat,
    /// Its validated tree.
    pub tree: ConversationTree,
}

/// Inbound port of the conversation capability.
pub trait ChatUseCase: Send + Sync + 'static {
    /// Creates a chat and its root message in one transaction.
    ///
    /// # Errors
    /// [`ChatError::UnknownModel`].
    fn create_chat(
        &self,
        owner: UserId,
        input: NewChatInput,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// One chat.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn get_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// A page of chats.
    ///
    /// # Errors
    /// Storage failures.
    fn list_chats(
        &self,
        owner: UserId,
        query: ChatQuery,
    ) -> impl Future<Output = Result<Page<ChatSummary>, ChatError>> + Send;

    /// Deletes a chat with everything in it.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn delete_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;

    /// The chat with its whole tree.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn tree(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<ChatWithTree, ChatError>> + Send;

    /// The current branch, root → current leaf.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn current_branch(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Vec<Message>, ChatError>> + Send;

    /// Moves the current leaf to `message`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::MessageNotFound`].
    fn select(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// Removes a message and its subtree.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found errors.
    fn delete_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> impl Future<Output = Result<MessageId, ChatError>> + Send;

    /// Sends a user message (under `input.parent` or the current leaf) and stores the
    /// model's answer. The user message is committed before the provider is called and stays
    /// if the provider fails.
    ///
    /// # Errors
    /// Not-found errors, [`ChatError::UnknownModel`], [`ChatError::Llm`].
    fn send(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> impl Future<Output = Result<Reply, ChatError>> + Send;

    /// Changes title, system prompt or model.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::UnknownModel`].
    fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// Messages containing `query` in one chat or in all of the owner's chats.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn search(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: SearchQuery,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<SearchHit>, ChatError>> + Send;

    /// A new answer as a sibling of the old one: on a user message, answers it again; on an
    /// assistant message, answers its user message again.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found and provider errors.
    fn retry(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> impl Future<Output = Result<Reply, ChatError>> + Send;

    /// "Edits" a message: a sibling with the new content becomes the current leaf (completed
    /// messages are immutable). For a user message with `regenerate`, also answers it.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found and provider errors.
    fn edit(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        regenerate: bool,
    ) -> impl Future<Output = Result<Edited, ChatError>> + Send;
}

/// What an edit produced.
#[derive(Debug, Clone)]
pub struct Edited {
    /// The new sibling.
    pub message: Message,
    /// The answer to it, when one was asked for.
    pub reply: Option<Reply>,
}

/// Generation settings a request may give.
#[derive(Debug, Clone, Default)]
pub struct GenerationOptions {
    /// Override the model.
    pub model_id: Option<ModelId>,
    /// Apply this preset (instead of the chat's).
    pub preset_id: Option<PresetId>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Answer cap.
    pub max_tokens: Option<u32>,
}

/// Server-wide defaults of the chat service.
#[derive(Debug, Clone)]
pub struct ChatDefaults {
    /// The model when neither request, chat nor user settings name one.
    pub model: ModelId,
    /// The provider's name in generation records when it reports none.
    pub provider: String,
}

/// The canonical chat service.
pub struct ChatService<R, L, M, C, I> {
    repo: R,
    llm: L,
    catalog: Arc<M>,
    clock: C,
    ids: I,
    default_model: ModelId,
    provider: String,
    cache: MessageCache,
}

/// Cache key: a chat at one version. Every change of a chat's messages bumps its
/// `updated_at` or `message_count`, so a key never names stale data, on any replica.
type CacheKey = (ChatId, i64, u64);

/// Weighs an entry by the bytes it holds.
#[derive(Debug, Clone, Copy)]
struct MessagesWeighter;

impl quick_cache::Weighter<CacheKey, Arc<Vec<Message>>> for MessagesWeighter {
    fn weight(&self, _key: &CacheKey, messages: &Arc<Vec<Message>>) -> u64 {
        messages
            .iter()
            .map(|m| m.content.len() as u64 + 128)
            .sum::<u64>()
            .max(1)
    }
}

/// Hot reads of a chat's messages, bounded by total bytes, with hit and miss counters.
pub struct MessageCache {
    entries: quick_cache::sync::Cache<CacheKey, Arc<Vec<Message>>, MessagesWeighter>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MessageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCache")
            .field("weight", &self.entries.weight())
            .finish_non_exhaustive()
    }
}

/// Cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
    /// Bytes held now (by the weigher's estimate).
    pub weight: u64,
}

impl MessageCache {
    /// A cache holding at most about `max_bytes` of messages.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        // quick_cache sizes its tables from an estimated item count.
        let estimated_items =
            usize::try_from((max_bytes / 4_096).clamp(16, 1_000_000)).unwrap_or(16);
        Self {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                max_bytes.max(1),
                MessagesWeighter,
            ),
            hits: std::sync::atomic::AtomicU64::new(0),
            misses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            weight: self.entries.weight(),
        }
    }
}

impl<R, L, M, C, I> std::fmt::Debug for ChatService<R, L, M, C, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl<R, L, M, C, I> ChatService<R, L, M, C, I>
where
    R: ChatRepository + PresetRepository,
    L: LlmGateway,
    M: CatalogUseCase,
    C: Clock,
    I: IdGenerator,
{
    /// Wires the service.
    pub fn new(
        repo: R,
        llm: L,
        catalog: Arc<M>,
        clock: C,
        ids: I,
        defaults: ChatDefaults,
        cache: MessageCache,
    ) -> Self {
        Self {
            repo,
            llm,
            catalog,
            clock,
            ids,
            default_model: defaults.model,
            provider: defaults.provider,
            cache,
        }
    }

    /// The read cache's counters.
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The chat's messages at the version `chat` shows, from the cache when possible.
    async fn cached_messages(
        &self,
        owner: UserId,
        chat: &Chat,
    ) -> Result<Arc<Vec<Message>>, ChatError> {
        use std::sync::atomic::Ordering::Relaxed;
        let key = (
            chat.id,
            chat.updated_at.as_unix_micros(),
            chat.message_count,
        );
        if let Some(hit) = self.cache.entries.get(&key) {
            self.cache.hits.fetch_add(1, Relaxed);
            return Ok(hit);
        }
        self.cache.misses.fetch_add(1, Relaxed);
        let messages = Arc::new(
            self.repo
                .list_messages(owner, chat.id)
                .await
                .map_err(repo)?,
        );
        // A write may have landed between reading the chat and its messages; cache only a
        // list that matches the version it is keyed by.
        if messages.len() as u64 == chat.message_count
            && messages.iter().all(|m| m.created_at <= chat.updated_at)
        {
            self.cache.entries.insert(key, Arc::clone(&messages));
        }
        Ok(messages)
    }

    async fn check_model(&self, model: &ModelId) -> Result<domain::ModelInfo, ChatError> {
        match self.catalog.get_model(model).await {
            Ok((info, _)) => Ok(info),
            Err(CatalogError::UnknownModel(id)) => Err(ChatError::UnknownModel(id)),
            Err(e) => Err(ChatError::Catalog(e)),
        }
    }

    /// The settings of one generation. Each resolves in the order request > preset
    /// (the request's, else the chat's) > chat > user default > server default; the model is
    /// validated against the catalogue.
    async fn plan(
        &self,
        owner: UserId,
        chat: &Chat,
        options: GenerationOptions,
    ) -> Result<Plan, ChatError> {
        let preset = match options.preset_id.or(chat.preset_id) {
            Some(id) => Some(self.repo.get_preset(owner, id).await.map_err(|e| match e {
                RepoError::NotFound(_) => ChatError::UnknownPreset,
                other => ChatError::Storage(other),
            })?),
            None => None,
        };
        let model = match options
            .model_id
            .or_else(|| preset.as_ref().and_then(|p| p.model_id.clone()))
            .or_else(|| chat.model_id.clone())
        {
            Some(m) => m,
            None => self
                .catalog
                .settings(owner)
                .await
                .map_err(ChatError::Catalog)?
                .default_model_id
                .unwrap_or_else(|| self.default_model.clone()),
        };
        let info = self.check_model(&model).await?;
        Ok(Plan {
            temperature: options.temperature.or_else(|| {
                preset
                    .as_ref()
                    .and_then(|p| p.temperature.map(domain::Temperature::value))
            }),
            max_tokens: options.max_tokens.or_else(|| {
                preset
                    .as_ref()
                    .and_then(|p| p.max_tokens.map(domain::MaxTokens::value))
            }),
            system_prompt: preset
                .and_then(|p| p.system_prompt)
                .or_else(|| chat.system_prompt.clone()),
            model,
            info,
        })
    }

    async fn answer(
        &self,
        owner: UserId,
        chat: &Chat,
        under: &Message,
        plan: Plan,
    ) -> Result<(Message, Option<TokenUsage>, Vec<MessageId>), ChatError> {
        let Plan {
            model,
            info,
            temperature,
            max_tokens,
            system_prompt,
        } = plan;
        let messages = self
            .repo
            .list_messages(owner, chat.id)
            .await
            .map_err(repo)?;
        let tree = ConversationTree::build(chat.id, messages)
            .map_err(|e| ChatError::Storage(RepoError::Corrupt(Box::new(e))))?;
        let path = tree
            .path_to(under.id)
            .map_err(|_| ChatError::MessageNotFound)?;
        let mut prompt = Vec::new();
        if let Some(system) = system_prompt
            .as_ref()
            .filter(|p| !p.as_str().trim().is_empty())
        {
            prompt.push(PromptMessage {
                role: Role::System,
                content: system.as_str().to_owned(),
            });
        }
        for m in &path {
            if m.role == Role::System && m.content.trim().is_empty() {
                continue;
            }
            prompt.push(PromptMessage {
                role: m.role,
                content: m.content.clone(),
            });
        }
        let mut ids: Vec<MessageId> = path.iter().map(|m| m.id).collect();
        let started = Instant::now();
        let completion = self
            .llm
            .complete(CompletionRequest {
                model: model.clone(),
                messages: prompt,
                temperature,
                max_tokens,
            })
            .await
            .map_err(ChatError::Llm)?;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let usage = completion.usage.unwrap_or_default();
        let answer_id = MessageId::from_u128(self.ids.next_id());
        let now = self.clock.now();
        let answer = self
            .repo
            .append_answer(
                owner,
                chat.id,
                NewMessage {
                    id: answer_id,
                    parent_id: under.id,
                    role: Role::Assistant,
                    content: completion.content,
                    status: MessageStatus::Complete,
                    created_at: now,
                },
                GenerationRecord {
                    message_id: answer_id,
                    chat_id: chat.id,
                    user_id: owner,
                    provider: completion.provider.unwrap_or_else(|| self.provider.clone()),
                    model,
                    usage,
                    cost: info
                        .pricing
                        .cost(usage.prompt_tokens, usage.completion_tokens),
                    latency_ms,
                    time_to_first_token_ms: None,
                    finish_reason: completion.finish_reason,
                    created_at: now,
                },
            )
            .await
            .map_err(repo)?;
        ids.push(answer.id);
        Ok((answer, completion.usage, ids))
    }
}

impl<R, L, M, C, I> ChatUseCase for ChatService<R, L, M, C, I>
where
    R: ChatRepository + PresetRepository,
    L: LlmGateway,
    M: CatalogUseCase,
    C: Clock,
    I: IdGenerator,
{
    /// Creates a chat and its root message in one transaction.
    ///
    /// # Errors
    /// [`ChatError::UnknownModel`].
    async fn create_chat(&self, owner: UserId, input: NewChatInput) -> Result<Chat, ChatError> {
        if let Some(model) = &input.model_id {
            self.check_model(model).await?;
        }
        if let Some(preset) = input.preset_id {
            self.repo
                .get_preset(owner, preset)
                .await
                .map_err(|e| match e {
                    RepoError::NotFound(_) => ChatError::UnknownPreset,
                    other => ChatError::Storage(other),
                })?;
        }
        self.repo
            .create_chat(NewChat {
                id: ChatId::from_u128(self.ids.next_id()),
                owner,
                title: input.title,
                system_prompt: input.system_prompt,
                model_id: input.model_id,
                preset_id: input.preset_id,
                root_id: MessageId::from_u128(self.ids.next_id()),
                root_content: input.initial_message.unwrap_or_default(),
                created_at: self.clock.now(),
            })
            .await
            .map_err(repo)
    }

    /// One chat.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn get_chat(&self, owner: UserId, chat: ChatId) -> Result<Chat, ChatError> {
        self.repo.get_chat(owner, chat).await.map_err(repo)
    }

    /// A page of chats.
    ///
    /// # Errors
    /// Storage failures.
    async fn list_chats(
        &self,
        owner: UserId,
        query: ChatQuery,
    ) -> Result<Page<ChatSummary>, ChatError> {
        self.repo.list_chats(owner, query).await.map_err(repo)
    }

    /// Deletes a chat with everything in it.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn delete_chat(&self, owner: UserId, chat: ChatId) -> Result<(), ChatError> {
        self.repo.delete_chat(owner, chat).await.map_err(repo)
    }

    /// The chat with its whole tree.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn tree(&self, owner: UserId, chat: ChatId) -> Result<ChatWithTree, ChatError> {
        let chat = self.get_chat(owner, chat).await?;
        let messages = self.cached_messages(owner, &chat).await?;
        let tree = ConversationTree::build(chat.id, messages.as_ref().clone())
            .map_err(|e| ChatError::Storage(RepoError::Corrupt(Box::new(e))))?;
        Ok(ChatWithTree { chat, tree })
    }

    /// The current branch, root → current leaf.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn current_branch(&self, owner: UserId, chat: ChatId) -> Result<Vec<Message>, ChatError> {
        let t = self.tree(owner, chat).await?;
        let path = t
            .tree
            .path_to(t.chat.current_leaf_id)
            .map_err(|e| ChatError::Storage(RepoError::Corrupt(Box::new(e))))?;
        Ok(path.into_iter().cloned().collect())
    }

    /// Moves the current leaf to `message`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::MessageNotFound`].
    async fn select(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<Chat, ChatError> {
        self.repo
            .select_leaf(owner, chat, message, self.clock.now())
            .await
            .map_err(repo)
    }

    /// Removes a message and its subtree.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found errors.
    async fn delete_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<MessageId, ChatError> {
        match self.repo.delete_subtree(owner, chat, message).await {
            Ok(d) => Ok(d.current_leaf),
            Err(RepoError::Conflict(_)) => Err(ChatError::InvalidTarget(
                "the root message cannot be deleted",
            )),
            Err(e) => Err(repo(e)),
        }
    }

    /// Sends a user message (under `input.parent` or the current leaf) and stores the
    /// model's answer. The user message is committed before the provider is called and stays
    /// if the provider fails.
    ///
    /// # Errors
    /// Not-found errors, [`ChatError::UnknownModel`], [`ChatError::Llm`].
    async fn send(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> Result<Reply, ChatError> {
        let current = self.get_chat(owner, chat).await?;
        let plan = self.plan(owner, &current, input.options).await?;
        let model_used = plan.info.id.clone();
        let parent = input.parent.unwrap_or(current.current_leaf_id);
        let user_message = self
            .repo
            .append_message(
                owner,
                chat,
                NewMessage {
                    id: MessageId::from_u128(self.ids.next_id()),
                    parent_id: parent,
                    role: Role::User,
                    content: input.content.into_inner(),
                    status: MessageStatus::Complete,
                    created_at: self.clock.now(),
                },
                true,
            )
            .await
            .map_err(repo)?;
        self.answer(owner, &current, &user_message, plan)
            .await
            .map(|(answer, usage, path)| Reply {
                user_message,
                answer,
                usage,
                model: model_used,
                path,
            })
    }

    async fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
    ) -> Result<Chat, ChatError> {
        if let Some(Some(model)) = &patch.model_id {
            self.check_model(model).await?;
        }
        self.repo
            .update_chat(owner, chat, patch, self.clock.now())
            .await
            .map_err(repo)
    }

    async fn search(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: SearchQuery,
        page: PageRequest,
    ) -> Result<Page<SearchHit>, ChatError> {
        self.repo
            .search_messages(owner, chat, query, page)
            .await
            .map_err(repo)
    }

    async fn retry(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> Result<Reply, ChatError> {
        let t = self.tree(owner, chat).await?;
        let target = t.tree.get(message).ok_or(ChatError::MessageNotFound)?;
        let user_message = match target.role {
            Role::System => {
                return Err(ChatError::InvalidTarget(
                    "the root message cannot be answered again",
                ));
            }
            Role::User => target.clone(),
            Role::Assistant => target
                .parent_id
                .and_then(|p| t.tree.get(p))
                .filter(|p| p.role == Role::User)
                .cloned()
                .ok_or(ChatError::InvalidTarget(
                    "this answer has no question to answer again",
                ))?,
        };
        let plan = self.plan(owner, &t.chat, options).await?;
        let model = plan.info.id.clone();
        let (answer, usage, path) = self.answer(owner, &t.chat, &user_message, plan).await?;
        Ok(Reply {
            user_message,
            answer,
            usage,
            model,
            path,
        })
    }

    async fn edit(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        regenerate: bool,
    ) -> Result<Edited, ChatError> {
        let t = self.tree(owner, chat).await?;
        let target = t.tree.get(message).ok_or(ChatError::MessageNotFound)?;
        let parent = target.parent_id.ok_or(ChatError::InvalidTarget(
            "the root message cannot be edited",
        ))?;
        let role = target.role;
        let edited = self
            .repo
            .append_message(
                owner,
                chat,
                NewMessage {
                    id: MessageId::from_u128(self.ids.next_id()),
                    parent_id: parent,
                    role,
                    content: content.into_inner(),
                    status: MessageStatus::Complete,
                    created_at: self.clock.now(),
                },
                true,
            )
            .await
            .map_err(repo)?;
        let reply = if regenerate && role == Role::User {
            let plan = self
                .plan(owner, &t.chat, GenerationOptions::default())
                .await?;
            let model = plan.info.id.clone();
            let (answer, usage, path) = self.answer(owner, &t.chat, &edited, plan).await?;
            Some(Reply {
                user_message: edited.clone(),
                answer,
                usage,
                model,
                path,
            })
        } else {
            None
        };
        Ok(Edited {
            message: edited,
            reply,
        })
    }
}

#[cfg(test)]
mod tests {
    use domain::{ModelInfo, Pricing, Timestamp, Username};

    use super::*;
    use crate::catalog::CatalogService;
    use crate::ports::{NewUser, UserRepository};
    use crate::testing::{FakeLlm, InMemoryStore, ManualClock, SequentialIds};

    type Catalog = CatalogService<InMemoryStore, FakeLlm, ManualClock>;
    type Service = ChatService<InMemoryStore, FakeLlm, Catalog, ManualClock, SequentialIds>;

    async fn service(cache_bytes: u64) -> (Service, UserId) {
        let store = InMemoryStore::new();
        let llm = FakeLlm::with_models(vec![ModelInfo {
            id: ModelId::parse("m/one").unwrap(),
            name: "one".into(),
            description: None,
            context_length: None,
            pricing: Pricing::default(),
            input_modalities: vec![],
            output_modalities: vec![],
            created: None,
            fetched_at: Timestamp::from_unix_micros(0),
        }]);
        let clock = || ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000));
        let catalog = Arc::new(CatalogService::new(
            store.clone(),
            llm.clone(),
            clock(),
            std::time::Duration::from_secs(60),
        ));
        let owner = UserId::from_u128(999);
        store
            .create_user(NewUser {
                id: owner,
                username: Username::parse("alice").unwrap(),
                password_hash: String::new(),
                created_at: Timestamp::from_unix_micros(0),
            })
            .await
            .unwrap();
        let s = ChatService::new(
            store,
            llm,
            catalog,
            clock(),
            SequentialIds::default(),
            ChatDefaults {
                model: ModelId::parse("m/one").unwrap(),
                provider: "fake".into(),
            },
            MessageCache::new(cache_bytes),
        );
        (s, owner)
    }

    fn say(text: &str) -> SendInput {
        SendInput {
            content: MessageContent::parse(text).unwrap(),
            parent: None,
            options: GenerationOptions::default(),
        }
    }

    #[tokio::test]
    async fn repeated_reads_hit_the_cache_and_every_write_changes_what_is_read() {
        let (s, owner) = service(1 << 20).await;
        let chat = s.create_chat(owner, NewChatInput::default()).await.unwrap();
        s.send(owner, chat.id, say("hello")).await.unwrap();
        assert_eq!(s.tree(owner, chat.id).await.unwrap().tree.len(), 3);
        assert_eq!(s.tree(owner, chat.id).await.unwrap().tree.len(), 3);
        assert_eq!(s.cache_stats().hits, 1);
        s.send(owner, chat.id, say("again")).await.unwrap();
        assert_eq!(
            s.tree(owner, chat.id).await.unwrap().tree.len(),
            5,
            "a write is never hidden"
        );
        let branch = s.current_branch(owner, chat.id).await.unwrap();
        let leaf = branch.last().unwrap().id;
        s.delete_message(owner, chat.id, leaf).await.unwrap();
        assert_eq!(s.tree(owner, chat.id).await.unwrap().tree.len(), 4);
        assert!(s.cache_stats().weight > 0);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_byte_budget() {
        let (s, owner) = service(4_096).await;
        for i in 0..50 {
            let chat = s.create_chat(owner, NewChatInput::default()).await.unwrap();
            s.send(
                owner,
                chat.id,
                say(&format!("message {i} {}", "x".repeat(500))),
            )
            .await
            .unwrap();
            s.tree(owner, chat.id).await.unwrap();
        }
        assert!(s.cache_stats().weight <= 4_096, "{:?}", s.cache_stats());
    }
}
