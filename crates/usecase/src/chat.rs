//! Conversations: chats as trees of messages, branching from any message, and blocking
//! replies from the model. Every route is scoped to its owner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::AbortOnDropHandle;

use domain::{
    Chat, ChatId, ChatTitle, ConversationTree, GenerationRecord, Message, MessageContent,
    MessageId, MessageStatus, ModelId, Page, PageRequest, PresetId, Role, SearchQuery,
    SystemPrompt, TokenUsage, UserId,
};

use crate::catalog::{CatalogError, CatalogUseCase};
use crate::generation::{
    AdmissionError, FinalAnswer, GenerationEvent, GenerationFailure, GenerationStatus, Generations,
    NewGeneration, Reservation, Slot, Subscription,
};
use crate::llm::{CompletionRequest, LlmError, LlmGateway, PromptMessage, StreamEvent};
use crate::ports::{
    ChatList, ChatPatch, ChatQuery, ChatRepository, ChatVersion, Clock, Entity, FinishedAnswer,
    IdGenerator, NewChat, NewMessage, PresetRepository, RepoError, SearchHit,
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
    /// A per-user or global cap on concurrent generations is full.
    #[error("too many generations are running")]
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
    /// The chat already has a running generation.
    #[error("a generation is already running in this chat")]
    GenerationRunning,
    /// The chat has no generation (running or recently finished).
    #[error("no generation in this chat")]
    NoGeneration,
    /// The server is shutting down and starts no new generation.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Storage failure.
    #[error("storage failure")]
    Storage(#[source] RepoError),
}

impl From<AdmissionError> for ChatError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Busy { retry_after } => Self::Busy { retry_after },
            AdmissionError::ChatBusy => Self::GenerationRunning,
            AdmissionError::ShuttingDown => Self::ShuttingDown,
        }
    }
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

    /// A page of chats (by offset, or after a cursor), with the next page's cursor.
    ///
    /// # Errors
    /// Storage failures.
    fn list_chats(
        &self,
        owner: UserId,
        query: ChatQuery,
    ) -> impl Future<Output = Result<ChatList, ChatError>> + Send;

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

    /// The current branch as `render` makes it (an HTTP body, say), kept with the chat's
    /// version under `kind`: reading an unchanged chat again costs neither its messages nor
    /// the rendering.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn current_branch_rendered<F>(
        &self,
        owner: UserId,
        chat: ChatId,
        kind: &'static str,
        render: F,
    ) -> impl Future<Output = Result<Arc<Vec<u8>>, ChatError>> + Send
    where
        F: FnOnce(&[Message]) -> Vec<u8> + Send;

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

    /// Like [`ChatUseCase::send`], but the answer is generated by a task of its own and
    /// followed through the returned subscription: `Start`, `Chunk`s, then `Final` or
    /// `Error`, then `Done`. The user message and the `streaming` answer row are committed
    /// before this returns.
    ///
    /// # Errors
    /// As [`ChatUseCase::send`] for what is found before the stream starts, plus
    /// [`ChatError::Busy`], [`ChatError::GenerationRunning`], [`ChatError::ShuttingDown`].
    fn send_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// [`ChatUseCase::retry`], streamed as [`ChatUseCase::send_stream`].
    ///
    /// # Errors
    /// As [`ChatUseCase::retry`] and [`ChatUseCase::send_stream`].
    fn retry_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// The chat's generation (running or recently finished), if any.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Option<GenerationStatus>, ChatError>> + Send;

    /// Stops the chat's running generation; its partial answer is saved `interrupted`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::NoGeneration`] when none runs.
    fn cancel_generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<GenerationStatus, ChatError>> + Send;

    /// Re-attaches to the chat's generation: replays the events after `after` (all when
    /// `None`), then follows live.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::NoGeneration`].
    fn attach(
        &self,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;
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
    /// Whether untitled chats get a generated title after their first answer.
    pub titles: bool,
    /// The model that writes titles (the chat's answering model when `None`).
    pub title_model: Option<ModelId>,
}

/// What the service keeps in this process: the read cache and the generation registry.
#[derive(Debug)]
pub struct ProcessState {
    /// Hot reads of chat trees.
    pub cache: MessageCache,
    /// Running generations and the concurrency caps.
    pub generations: Generations,
}

/// The longest answer kept; a longer one is cut and completed with finish reason `length`.
pub const ANSWER_MAX_BYTES: usize = 1 << 20;
/// How long a title may take before the chat keeps its fallback.
const TITLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A provider call under way in a task of its own; dropping the handle cancels it (and so
/// releases its upstream connection).
type Upstream<T> = AbortOnDropHandle<Result<T, LlmError>>;

/// The outcome of a provider call's task.
fn joined<T>(done: Result<Result<T, LlmError>, tokio::task::JoinError>) -> Result<T, LlmError> {
    done.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a provider call's task failed");
        Err(LlmError::BrokenStream("the provider call failed".into()))
    })
}

/// `base` followed by `added`.
fn extended(base: &[Message], added: Vec<Message>) -> Vec<Message> {
    let mut messages = Vec::with_capacity(base.len() + added.len());
    messages.extend_from_slice(base);
    messages.extend(added);
    messages
}

/// The cache key of `chat` at the version it shows.
fn version(chat: &Chat) -> CacheKey {
    (
        chat.id,
        chat.updated_at.as_unix_micros(),
        chat.message_count,
    )
}

/// Whether `messages` are the chat's at the version `chat` shows: a write may have landed
/// between reading the chat and its messages, and only a matching list may be cached.
fn matches_version(chat: &Chat, messages: &[Message]) -> bool {
    messages.len() as u64 == chat.message_count
        && messages.iter().all(|m| m.created_at <= chat.updated_at)
}

/// The path root → `to` among `messages` (one chat's), or `None` when `to` is not there.
fn path_in(messages: &[Message], to: MessageId) -> Option<Vec<Message>> {
    let by_id: std::collections::HashMap<MessageId, &Message> =
        messages.iter().map(|m| (m.id, m)).collect();
    let mut path = Vec::new();
    let mut next = Some(to);
    while let Some(id) = next {
        let message = by_id.get(&id)?;
        path.push((*message).clone());
        if path.len() > messages.len() {
            return None; // a cycle: corrupt data, answered as not found
        }
        next = message.parent_id;
    }
    path.reverse();
    Some(path)
}

/// The canonical chat service.
pub struct ChatService<R, L, M, C, I> {
    repo: Arc<R>,
    llm: Arc<L>,
    catalog: Arc<M>,
    clock: Arc<C>,
    ids: I,
    default_model: ModelId,
    provider: String,
    titles: bool,
    title_model: Option<ModelId>,
    cache: Arc<MessageCache>,
    generations: Generations,
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

/// Counts what the cache evicts to stay within its budget.
#[derive(Debug, Clone, Copy, Default)]
struct CountEvictions;

impl quick_cache::Lifecycle<CacheKey, Arc<Vec<Message>>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _key: CacheKey, _messages: Arc<Vec<Message>>) {
        metrics::counter!("arbor_cache_evictions_total", "cache" => "messages").increment(1);
    }
}

type Entries = quick_cache::sync::Cache<
    CacheKey,
    Arc<Vec<Message>>,
    MessagesWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// A rendering of a chat at one version with one current leaf (moving the leaf changes no
/// message, so it is not part of the version), e.g. its current branch as an HTTP body.
type RenderedKey = (CacheKey, MessageId, &'static str);

/// Weighs a rendering by its bytes.
#[derive(Debug, Clone, Copy)]
struct BytesWeighter;

impl quick_cache::Weighter<RenderedKey, Arc<Vec<u8>>> for BytesWeighter {
    fn weight(&self, _key: &RenderedKey, bytes: &Arc<Vec<u8>>) -> u64 {
        (bytes.len() as u64 + 64).max(1)
    }
}

/// Hot reads of a chat's messages (and renderings of them, a quarter of the budget again),
/// bounded by total bytes, with hit and miss counters.
pub struct MessageCache {
    entries: Entries,
    rendered: quick_cache::sync::Cache<RenderedKey, Arc<Vec<u8>>, BytesWeighter>,
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
            entries: quick_cache::sync::Cache::with(
                estimated_items,
                max_bytes.max(1),
                MessagesWeighter,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions,
            ),
            rendered: Self::renderings(max_bytes / 4),
            hits: std::sync::atomic::AtomicU64::new(0),
            misses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The cache of renderings: two shards, so that one rendering may take almost half of
    /// the budget (quick_cache refuses an item heavier than its shard; the branch of a
    /// 10,000-message chat is a few MB of JSON).
    fn renderings(
        max_bytes: u64,
    ) -> quick_cache::sync::Cache<RenderedKey, Arc<Vec<u8>>, BytesWeighter> {
        let options = quick_cache::OptionsBuilder::new()
            .shards(2)
            .estimated_items_capacity(
                usize::try_from((max_bytes / 65_536).clamp(64, 65_536)).unwrap_or(64),
            )
            .weight_capacity(max_bytes.max(1))
            .build();
        match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                BytesWeighter,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(64, max_bytes.max(1), BytesWeighter),
        }
    }

    /// Keeps `messages` as the chat's at `version` (a write that knows exactly what it
    /// changed extends the copy it started from, so the next read needs no query); returns
    /// them.
    fn put(&self, chat: ChatId, version: ChatVersion, messages: Vec<Message>) -> Arc<Vec<Message>> {
        let messages = Arc::new(messages);
        self.entries
            .insert((chat, version.0, version.1), Arc::clone(&messages));
        messages
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            weight: self.entries.weight() + self.rendered.weight(),
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
        local: ProcessState,
    ) -> Self {
        let ProcessState { cache, generations } = local;
        Self {
            repo: Arc::new(repo),
            llm: Arc::new(llm),
            catalog,
            clock: Arc::new(clock),
            ids,
            default_model: defaults.model,
            provider: defaults.provider,
            titles: defaults.titles,
            title_model: defaults.title_model,
            cache: Arc::new(cache),
            generations,
        }
    }

    /// The generation registry (for shutdown and monitoring).
    #[must_use]
    pub fn generations(&self) -> &Generations {
        &self.generations
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
        let key = version(chat);
        if let Some(hit) = self.cache.entries.get(&key) {
            self.cache.hits.fetch_add(1, Relaxed);
            metrics::counter!("arbor_cache_hits_total", "cache" => "messages").increment(1);
            return Ok(hit);
        }
        self.cache.misses.fetch_add(1, Relaxed);
        metrics::counter!("arbor_cache_misses_total", "cache" => "messages").increment(1);
        let messages = Arc::new(
            self.repo
                .list_messages(owner, chat.id)
                .await
                .map_err(repo)?,
        );
        if matches_version(chat, &messages) {
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

    /// The request for an answer at the end of `path`: the system prompt, then the path.
    fn request_for(path: &[Message], plan: &Plan) -> CompletionRequest {
        let mut prompt = Vec::with_capacity(path.len() + 1);
        if let Some(system) = plan
            .system_prompt
            .as_ref()
            .filter(|p| !p.as_str().trim().is_empty())
        {
            prompt.push(PromptMessage {
                role: Role::System,
                content: system.as_str().to_owned(),
            });
        }
        for m in path {
            if m.role == Role::System && m.content.trim().is_empty() {
                continue;
            }
            prompt.push(PromptMessage {
                role: m.role,
                content: m.content.clone(),
            });
        }
        CompletionRequest {
            model: plan.model.clone(),
            messages: prompt,
            temperature: plan.temperature,
            max_tokens: plan.max_tokens,
        }
    }

    /// Asks the provider for a blocking answer at once, in a task of its own (aborted when
    /// the handle is dropped), so the question can be committed meanwhile.
    fn start_completion(&self, request: CompletionRequest) -> Upstream<crate::llm::Completion> {
        let llm = Arc::clone(&self.llm);
        self.generations
            .spawn_call(async move { llm.complete(request).await })
    }

    /// Opens the provider's stream at once (see [`Self::start_completion`]).
    fn start_stream(&self, request: CompletionRequest) -> Upstream<crate::llm::CompletionStream> {
        let llm = Arc::clone(&self.llm);
        self.generations
            .spawn_call(async move { llm.stream(request).await })
    }

    /// A new message under `parent`, not stored yet.
    fn new_message(
        &self,
        parent: MessageId,
        role: Role,
        content: String,
        status: MessageStatus,
    ) -> NewMessage {
        NewMessage {
            id: MessageId::from_u128(self.ids.next_id()),
            parent_id: parent,
            role,
            content,
            status,
            created_at: self.clock.now(),
        }
    }

    /// A title job when this answer is the chat's first: the chat has no title and the path
    /// holds no answer yet.
    fn title_job(&self, chat: &Chat, path: &[Message], plan: &Plan) -> Option<TitleJob> {
        let first_answer = !path.iter().any(|m| m.role == Role::Assistant);
        (self.titles && chat.title.is_none() && !chat.title_set_by_user && first_answer).then(
            || TitleJob {
                owner: chat.owner,
                chat: chat.id,
                model: self
                    .title_model
                    .clone()
                    .unwrap_or_else(|| plan.model.clone()),
                conversation: path.iter().map(|m| (m.role, m.content.clone())).collect(),
            },
        )
    }

    /// Generates a title in the background; the caller never waits for it.
    fn spawn_title(&self, job: TitleJob, answer: String) {
        let repo = Arc::clone(&self.repo);
        let llm = Arc::clone(&self.llm);
        self.generations
            .spawn_background(write_title(repo, llm, job, answer));
    }

    /// The blocking answer to `turn.question` from the call already under way, stored with
    /// its generation record.
    async fn answer(
        &self,
        owner: UserId,
        chat: &Chat,
        plan: Plan,
        slot: Slot,
        turn: Turn<crate::llm::Completion>,
    ) -> Result<(Message, Option<TokenUsage>, Vec<MessageId>), ChatError> {
        let Turn {
            question: under,
            path,
            upstream: (started, upstream),
            after,
            ..
        } = turn;
        let title = self.title_job(chat, &path, &plan);
        let mut ids: Vec<MessageId> = path.iter().map(|m| m.id).collect();
        let completion = tokio::time::timeout(self.generations.limits().deadline, upstream)
            .await
            .map_or(Err(LlmError::Timeout), joined);
        drop(slot);
        metrics::counter!(
            "arbor_generations_total",
            "outcome" => if completion.is_ok() { "complete" } else { "failed" },
            "mode" => "blocking"
        )
        .increment(1);
        metrics::histogram!("arbor_generation_duration_seconds", "mode" => "blocking")
            .record(started.elapsed().as_secs_f64());
        let completion = completion.map_err(ChatError::Llm)?;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let usage = completion.usage.unwrap_or_default();
        let answer = self.new_message(
            under.id,
            Role::Assistant,
            completion.content,
            MessageStatus::Complete,
        );
        let record = GenerationRecord {
            message_id: answer.id,
            chat_id: chat.id,
            user_id: owner,
            provider: completion.provider.unwrap_or_else(|| self.provider.clone()),
            model: plan.model,
            usage,
            cost: plan
                .info
                .pricing
                .cost(usage.prompt_tokens, usage.completion_tokens),
            latency_ms,
            time_to_first_token_ms: None,
            finish_reason: completion.finish_reason,
            created_at: answer.created_at,
        };
        let answer = match after {
            Some((at, known)) => {
                let stored = answer.stored_in(chat.id);
                let (answer, version) = self
                    .repo
                    .append_answer_from(owner, chat.id, (answer, record), at)
                    .await
                    .map_err(repo)?;
                if let Some(version) = version {
                    self.cache
                        .put(chat.id, version, extended(&known, vec![stored]));
                }
                answer
            }
            None => self
                .repo
                .append_answer(owner, chat.id, answer, record)
                .await
                .map_err(repo)?,
        };
        if let Some(job) = title {
            self.spawn_title(job, answer.content.clone());
        }
        ids.push(answer.id);
        Ok((answer, completion.usage, ids))
    }

    /// Registers the generation in its reserved chat and starts its task, which streams the
    /// answer from `upstream` (already under way) into the `streaming` row `answer`, stored
    /// by the caller just before (no await in between). Once the task is spawned nothing
    /// depends on this request. A row left `streaming` by a request that died between the
    /// two (a crash) is ended by the sweep. `slot` is held until the answer is saved.
    fn begin_stream(
        &self,
        chat: &Chat,
        plan: Plan,
        admission: (Slot, Reservation),
        leaf_at_start: MessageId,
        turn: Turn<crate::llm::CompletionStream>,
        answer: &NewMessage,
    ) -> Subscription {
        let owner = chat.owner;
        let (slot, reservation) = admission;
        let Turn {
            question: under,
            path,
            upstream,
            after,
            ..
        } = turn;
        let title = self.title_job(chat, &path, &plan);
        let job = StreamJob {
            owner,
            chat: chat.id,
            message: answer.id,
            user_message: under.id,
            plan,
            provider: self.provider.clone(),
            deadline: self.generations.limits().deadline,
            leaf_at_start,
            slot,
            after: after.map(|(version, known)| (version, known, Arc::clone(&self.cache))),
        };
        let (generation, subscription) = self.generations.register(
            reservation,
            NewGeneration {
                owner,
                user_message: under.id,
                message: answer.id,
                model: job.plan.model.clone(),
                started_at: answer.created_at,
            },
        );
        let repo = Arc::clone(&self.repo);
        let llm = Arc::clone(&self.llm);
        let clock = Arc::clone(&self.clock);
        let registry = self.generations.clone();
        let task_generation = Arc::clone(&generation);
        self.generations.spawn(generation, async move {
            let generation = task_generation;
            // The question and the answer row are committed: only now may the client hear
            // of the answer.
            generation.publish(GenerationEvent::Start {
                user_message: job.user_message,
                message: job.message,
                model: job.plan.model.clone(),
            });
            let answer = run_stream(&*repo, &*clock, &generation, job, upstream).await;
            if let (Some(title), Some(answer)) = (title, answer) {
                registry.spawn_background(write_title(repo, llm, title, answer));
            }
        });
        subscription
    }

    /// Sends `content` under `parent` (the current leaf when `None`): assembles the prompt
    /// from the cached path, starts the provider call, and meanwhile commits the question
    /// (with the streamed answer's `streaming` row when `with_answer_row`). A failed commit
    /// drops the call, which cancels it.
    async fn commit_question<T: Send + 'static>(
        &self,
        owner: UserId,
        chat: &Chat,
        (parent, content): (Option<MessageId>, MessageContent),
        plan: &Plan,
        start: impl FnOnce(&Self, CompletionRequest) -> Upstream<T>,
        with_answer_row: bool,
    ) -> Result<Turn<T>, ChatError> {
        let parent = parent.unwrap_or(chat.current_leaf_id);
        let base = self.cached_messages(owner, chat).await?;
        let mut path = path_in(&base, parent).ok_or(ChatError::MessageNotFound)?;
        let question = self.new_message(
            parent,
            Role::User,
            content.into_inner(),
            MessageStatus::Complete,
        );
        path.push(question.stored_in(chat.id));
        let answer_row = with_answer_row.then(|| {
            self.new_message(
                question.id,
                Role::Assistant,
                String::new(),
                MessageStatus::Streaming,
            )
        });
        let started = Instant::now();
        let upstream = start(self, Self::request_for(&path, plan));
        let mut added = path.last().cloned().into_iter().collect::<Vec<_>>();
        let (_, at, count) = version(chat);
        let stored = match &answer_row {
            Some(row) => {
                added.push(row.stored_in(chat.id));
                self.repo
                    .append_turn_from(owner, chat.id, (question, row.clone()), (at, count))
                    .await
            }
            None => {
                self.repo
                    .append_message_from(owner, chat.id, (question, true), (at, count))
                    .await
            }
        };
        // On failure `upstream` is dropped here, which aborts the provider call.
        let (question, after) = stored.map_err(repo)?;
        let after = after
            .filter(|_| matches_version(chat, &base))
            .map(|v| (v, self.cache.put(chat.id, v, extended(&base, added))));
        Ok(Turn {
            question,
            path,
            upstream: (started, upstream),
            answer_row,
            after,
        })
    }

    /// The question a retry of `message` answers again.
    fn retry_target(tree: &ConversationTree, message: MessageId) -> Result<Message, ChatError> {
        let target = tree.get(message).ok_or(ChatError::MessageNotFound)?;
        match target.role {
            Role::System => Err(ChatError::InvalidTarget(
                "the root message cannot be answered again",
            )),
            Role::User => Ok(target.clone()),
            Role::Assistant => target
                .parent_id
                .and_then(|p| tree.get(p))
                .filter(|p| p.role == Role::User)
                .cloned()
                .ok_or(ChatError::InvalidTarget(
                    "this answer has no question to answer again",
                )),
        }
    }
}

/// A question with the call for its answer under way.
struct Turn<T> {
    /// The stored question (for a retry, the question answered again).
    question: Message,
    /// Root → the question.
    path: Vec<Message>,
    /// When the call started, and the call.
    upstream: (Instant, Upstream<T>),
    /// The streamed answer's `streaming` row, stored with the question.
    answer_row: Option<NewMessage>,
    /// The chat's messages and version right after the question was stored, when known
    /// exactly (nobody else wrote in between): the next write extends them in the cache.
    after: Option<(ChatVersion, Arc<Vec<Message>>)>,
}

/// The path root → `to` in a built tree.
fn tree_path(tree: &ConversationTree, to: MessageId) -> Result<Vec<Message>, ChatError> {
    Ok(tree
        .path_to(to)
        .map_err(|_| ChatError::MessageNotFound)?
        .into_iter()
        .cloned()
        .collect())
}

/// What a generation task needs besides the adapters.
#[derive(Debug)]
struct StreamJob {
    owner: UserId,
    chat: ChatId,
    message: MessageId,
    user_message: MessageId,
    plan: Plan,
    provider: String,
    deadline: Duration,
    leaf_at_start: MessageId,
    /// The concurrency slot, freed once the answer is saved.
    slot: Slot,
    /// The chat's version and messages once the turn was stored (when known exactly), and
    /// the cache to extend when the answer ends.
    after: Option<(ChatVersion, Arc<Vec<Message>>, Arc<MessageCache>)>,
}

/// A chat to title after its first answer.
#[derive(Debug)]
struct TitleJob {
    owner: UserId,
    chat: ChatId,
    model: ModelId,
    conversation: Vec<(Role, String)>,
}

/// How the provider's stream ended well.
struct StreamEnd {
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
    provider: Option<String>,
}

/// The most text one chunk event carries when deltas arrive faster than they are read.
const CHUNK_COALESCE_BYTES: usize = 4_096;

/// The next item if one is ready now, without waiting.
fn ready_now(
    stream: &mut crate::llm::CompletionStream,
) -> Option<Option<Result<StreamEvent, LlmError>>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match stream.as_mut().poll_next(&mut cx) {
        std::task::Poll::Ready(item) => Some(item),
        std::task::Poll::Pending => None,
    }
}

/// Reads the provider's stream into `content`, publishing the new text. Deltas that are
/// already waiting are merged into one chunk (up to [`CHUNK_COALESCE_BYTES`]), so a fast
/// provider cannot make the event log grow one tiny event per byte.
async fn pump(
    upstream: Upstream<crate::llm::CompletionStream>,
    generation: &crate::generation::Generation,
    content: &mut String,
    first_token: &mut Option<Instant>,
) -> Result<StreamEnd, GenerationFailure> {
    let mut stream = joined(upstream.await).map_err(GenerationFailure::Provider)?;
    let mut next = None;
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await,
        };
        let Some(item) = item else {
            return Err(GenerationFailure::Provider(LlmError::BrokenStream(
                "the stream ended without a finish".into(),
            )));
        };
        match item.map_err(GenerationFailure::Provider)? {
            StreamEvent::Delta(mut delta) => {
                first_token.get_or_insert_with(Instant::now);
                while delta.len() < CHUNK_COALESCE_BYTES {
                    match ready_now(&mut stream) {
                        Some(Some(Ok(StreamEvent::Delta(more)))) => delta.push_str(&more),
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                if content.len() + delta.len() > ANSWER_MAX_BYTES {
                    return Ok(StreamEnd {
                        finish_reason: Some("length".into()),
                        usage: None,
                        provider: None,
                    });
                }
                content.push_str(&delta);
                generation.publish(GenerationEvent::Chunk(delta));
            }
            StreamEvent::Done {
                finish_reason,
                usage,
                provider,
            } => {
                if content.is_empty() {
                    return Err(GenerationFailure::Provider(LlmError::BrokenStream(
                        "the model returned an empty answer".into(),
                    )));
                }
                return Ok(StreamEnd {
                    finish_reason,
                    usage,
                    provider,
                });
            }
        }
    }
}

/// One generation, start to end: streams the answer (until it completes, fails, is
/// cancelled or hits the deadline), saves it with the partial text in every case, and
/// publishes the outcome. Returns the content when it completed.
async fn run_stream<R: ChatRepository, C: Clock>(
    repo: &R,
    clock: &C,
    generation: &crate::generation::Generation,
    job: StreamJob,
    upstream: (Instant, Upstream<crate::llm::CompletionStream>),
) -> Option<String> {
    let (started, upstream) = upstream;
    let mut content = String::new();
    let mut first_token = None;
    let result = tokio::select! {
        biased;
        () = generation.cancellation().cancelled() => Err(generation.cancel_failure()),
        () = tokio::time::sleep(job.deadline.saturating_sub(started.elapsed())) => Err(GenerationFailure::Deadline),
        end = pump(upstream, generation, &mut content, &mut first_token) => end,
    };
    let now = clock.now();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (status, record, event) = match result {
        Ok(end) => {
            let usage = end.usage.unwrap_or_default();
            let record = GenerationRecord {
                message_id: job.message,
                chat_id: job.chat,
                user_id: job.owner,
                provider: end.provider.unwrap_or(job.provider),
                model: job.plan.model.clone(),
                usage,
                cost: job
                    .plan
                    .info
                    .pricing
                    .cost(usage.prompt_tokens, usage.completion_tokens),
                latency_ms: ms(started.elapsed()),
                time_to_first_token_ms: first_token.map(|t| ms(t.duration_since(started))),
                finish_reason: end.finish_reason.clone(),
                created_at: now,
            };
            let event = GenerationEvent::Final(FinalAnswer {
                message: job.message,
                content: content.clone(),
                usage: end.usage,
                model: job.plan.model.clone(),
                finish_reason: end.finish_reason,
            });
            (MessageStatus::Complete, Some(record), event)
        }
        Err(failure) => {
            let status = match failure {
                GenerationFailure::Cancelled | GenerationFailure::ShuttingDown => {
                    MessageStatus::Interrupted
                }
                _ => MessageStatus::Failed,
            };
            tracing::info!(message = %job.message, outcome = status.as_str(), reason = %failure, "generation ended early");
            (status, None, GenerationEvent::Error(failure))
        }
    };
    let finished = FinishedAnswer {
        message: job.message,
        question: job.user_message,
        content: content.clone(),
        status,
        record,
        leaf_at_start: job.leaf_at_start,
        now,
    };
    let outcome = status.as_str();
    metrics::counter!("arbor_generations_total", "outcome" => outcome, "mode" => "stream")
        .increment(1);
    metrics::histogram!("arbor_generation_duration_seconds", "mode" => "stream")
        .record(started.elapsed().as_secs_f64());
    if let Some(first) = first_token {
        metrics::histogram!("arbor_generation_ttft_seconds")
            .record(first.duration_since(started).as_secs_f64());
    }
    let saved = match job.after {
        Some((at, known, cache)) => {
            let (message, content) = (finished.message, finished.content.clone());
            let (saved, version) =
                save_with_retries(repo, job.owner, job.chat, finished, Some(at)).await;
            if let Some(version) = version {
                // The turn's messages with the answer as it ended.
                let mut messages = known.as_ref().clone();
                if let Some(answer) = messages.iter_mut().find(|m| m.id == message) {
                    answer.content = content;
                    answer.status = status;
                }
                cache.put(job.chat, version, messages);
            }
            saved
        }
        None => {
            save_with_retries(repo, job.owner, job.chat, finished, None)
                .await
                .0
        }
    };
    // Free the slot before anyone hears of the end: a client that reacts at once may start
    // the next generation.
    drop(job.slot);
    if saved {
        generation.publish(event);
    } else {
        generation.publish(GenerationEvent::Error(GenerationFailure::Storage));
    }
    generation.publish(GenerationEvent::Done);
    (saved && status == MessageStatus::Complete).then_some(content)
}

/// How long the end of an answer keeps being retried: the client may already have read it,
/// so a busy or briefly unreachable database must not lose it.
const SAVE_RETRY_FOR: Duration = Duration::from_secs(120);
/// The longest pause between two attempts.
const SAVE_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Saves the end of an answer, retrying (bounded by [`SAVE_RETRY_FOR`]) on any failure
/// that is not final: a full pool, a busy or restarting database, a lost connection.
/// With `expected`, the first attempt writes from that chat version and returns the version
/// after it when the chat was still there.
async fn save_with_retries<R: ChatRepository>(
    repo: &R,
    owner: UserId,
    chat: ChatId,
    finished: FinishedAnswer,
    expected: Option<ChatVersion>,
) -> (bool, Option<ChatVersion>) {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let result = match expected.filter(|_| attempt == 1) {
            Some(at) => {
                repo.finish_answer_from(owner, chat, finished.clone(), at)
                    .await
            }
            None => repo
                .finish_answer(owner, chat, finished.clone())
                .await
                .map(|()| None),
        };
        match result {
            Ok(version) => {
                if attempt > 1 {
                    tracing::info!(message = %finished.message, attempt, "the answer was saved after retrying");
                }
                return (true, version);
            }
            // The previous attempt committed but its acknowledgement was lost.
            Err(RepoError::Conflict(_)) if attempt > 1 => return (true, None),
            Err(e @ (RepoError::Unavailable(_) | RepoError::Unexpected(_)))
                if started.elapsed() < SAVE_RETRY_FOR =>
            {
                tracing::warn!(error = %e, attempt, message = %finished.message, "saving an answer failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SAVE_RETRY_MAX_DELAY);
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, message = %finished.message, "the answer could not be saved");
                return (false, None);
            }
        }
    }
}

/// Asks the model for a title and stores it (or the fallback) unless the chat got one
/// meanwhile. Failures are logged, never surfaced.
async fn write_title<R: ChatRepository, L: LlmGateway>(
    repo: Arc<R>,
    llm: Arc<L>,
    job: TitleJob,
    answer: String,
) {
    let mut conversation: Vec<(Role, &str)> = job
        .conversation
        .iter()
        .map(|(role, text)| (*role, text.as_str()))
        .collect();
    conversation.push((Role::Assistant, &answer));
    let request = CompletionRequest {
        model: job.model.clone(),
        messages: vec![PromptMessage {
            role: Role::User,
            content: domain::title_prompt(&conversation),
        }],
        temperature: Some(0.3),
        max_tokens: Some(60),
    };
    let generated = match tokio::time::timeout(TITLE_TIMEOUT, llm.complete(request)).await {
        Ok(Ok(c)) => domain::clean_title(&c.content),
        Ok(Err(e)) => {
            tracing::info!(error = %e, chat = %job.chat, "title generation failed; using the fallback");
            None
        }
        Err(_) => {
            tracing::info!(chat = %job.chat, "title generation timed out; using the fallback");
            None
        }
    };
    let Some(title) = generated.or_else(|| domain::fallback_title(&conversation)) else {
        return;
    };
    if let Err(e) = repo.set_generated_title(job.owner, job.chat, title).await {
        tracing::warn!(error = %e, chat = %job.chat, "the generated title could not be saved");
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
    async fn list_chats(&self, owner: UserId, query: ChatQuery) -> Result<ChatList, ChatError> {
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
    async fn current_branch_rendered<F>(
        &self,
        owner: UserId,
        chat: ChatId,
        kind: &'static str,
        render: F,
    ) -> Result<Arc<Vec<u8>>, ChatError>
    where
        F: FnOnce(&[Message]) -> Vec<u8> + Send,
    {
        let chat = self.get_chat(owner, chat).await?;
        let key = (version(&chat), chat.current_leaf_id, kind);
        if let Some(hit) = self.cache.rendered.get(&key) {
            metrics::counter!("arbor_cache_hits_total", "cache" => "rendered").increment(1);
            return Ok(hit);
        }
        metrics::counter!("arbor_cache_misses_total", "cache" => "rendered").increment(1);
        let messages = self.cached_messages(owner, &chat).await?;
        let path = path_in(&messages, chat.current_leaf_id).ok_or_else(|| {
            ChatError::Storage(RepoError::Corrupt(
                "the current leaf is not in the chat".into(),
            ))
        })?;
        let bytes = Arc::new(render(&path));
        if matches_version(&chat, &messages) {
            self.cache.rendered.insert(key, Arc::clone(&bytes));
        }
        Ok(bytes)
    }

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
        let slot = self.generations.acquire(owner)?;
        let turn = self
            .commit_question(
                owner,
                &current,
                (input.parent, input.content),
                &plan,
                Self::start_completion,
                false,
            )
            .await?;
        let user_message = turn.question.clone();
        self.answer(owner, &current, plan, slot, turn)
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
        let user_message = Self::retry_target(&t.tree, message)?;
        let plan = self.plan(owner, &t.chat, options).await?;
        let model = plan.info.id.clone();
        let slot = self.generations.acquire(owner)?;
        let path = tree_path(&t.tree, user_message.id)?;
        let turn = Turn {
            upstream: (
                Instant::now(),
                self.start_completion(Self::request_for(&path, &plan)),
            ),
            question: user_message.clone(),
            path,
            answer_row: None,
            after: None,
        };
        let (answer, usage, path) = self.answer(owner, &t.chat, plan, slot, turn).await?;
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
        // Everything that can refuse the answer is checked before the edit is stored.
        let generation = if regenerate && role == Role::User {
            let plan = self
                .plan(owner, &t.chat, GenerationOptions::default())
                .await?;
            let slot = self.generations.acquire(owner)?;
            Some((plan, slot))
        } else {
            None
        };
        let edited = self.new_message(parent, role, content.into_inner(), MessageStatus::Complete);
        // The answer to an edited question is asked for while the edit is committed.
        let upstream = match &generation {
            Some((plan, _)) => {
                let mut path = tree_path(&t.tree, parent)?;
                path.push(edited.stored_in(chat));
                let request = Self::request_for(&path, plan);
                Some((path, (Instant::now(), self.start_completion(request))))
            }
            None => None,
        };
        let edited = self
            .repo
            .append_message(owner, chat, edited, true)
            .await
            .map_err(repo)?;
        let reply = if let (Some((plan, slot)), Some((path, upstream))) = (generation, upstream) {
            let model = plan.info.id.clone();
            let turn = Turn {
                question: edited.clone(),
                path,
                upstream,
                answer_row: None,
                after: None,
            };
            let (answer, usage, path) = self.answer(owner, &t.chat, plan, slot, turn).await?;
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

    async fn send_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> Result<Subscription, ChatError> {
        let current = self.get_chat(owner, chat).await?;
        let plan = self.plan(owner, &current, input.options).await?;
        let slot = self.generations.acquire(owner)?;
        let reservation = self.generations.reserve(chat)?;
        let turn = self
            .commit_question(
                owner,
                &current,
                (input.parent, input.content),
                &plan,
                Self::start_stream,
                true,
            )
            .await?;
        let answer = turn.answer_row.clone().ok_or_else(|| {
            ChatError::Storage(RepoError::Unexpected("no answer row was made".into()))
        })?;
        let leaf = turn.question.id;
        Ok(self.begin_stream(&current, plan, (slot, reservation), leaf, turn, &answer))
    }

    async fn retry_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> Result<Subscription, ChatError> {
        let t = self.tree(owner, chat).await?;
        let user_message = Self::retry_target(&t.tree, message)?;
        let plan = self.plan(owner, &t.chat, options).await?;
        let slot = self.generations.acquire(owner)?;
        let reservation = self.generations.reserve(chat)?;
        let path = tree_path(&t.tree, user_message.id)?;
        let upstream = (
            Instant::now(),
            self.start_stream(Self::request_for(&path, &plan)),
        );
        // The answer row is committed while the provider is already asked; a failure drops
        // (cancels) the call.
        let answer = self.new_message(
            user_message.id,
            Role::Assistant,
            String::new(),
            MessageStatus::Streaming,
        );
        self.repo
            .append_message(owner, chat, answer.clone(), false)
            .await
            .map_err(repo)?;
        let turn = Turn {
            question: user_message,
            path,
            upstream,
            answer_row: None,
            after: None,
        };
        Ok(self.begin_stream(
            &t.chat,
            plan,
            (slot, reservation),
            t.chat.current_leaf_id,
            turn,
            &answer,
        ))
    }

    async fn generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<Option<GenerationStatus>, ChatError> {
        self.get_chat(owner, chat).await?;
        Ok(self.generations.get(owner, chat).map(|g| g.status()))
    }

    async fn cancel_generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<GenerationStatus, ChatError> {
        self.get_chat(owner, chat).await?;
        self.generations
            .cancel(owner, chat)
            .await
            .ok_or(ChatError::NoGeneration)
    }

    async fn attach(
        &self,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> Result<Subscription, ChatError> {
        self.get_chat(owner, chat).await?;
        let generation = self
            .generations
            .get(owner, chat)
            .ok_or(ChatError::NoGeneration)?;
        Ok(generation.subscribe(after))
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
                titles: true,
                title_model: None,
            },
            ProcessState {
                cache: MessageCache::new(cache_bytes),
                generations: Generations::new(crate::generation::GenerationLimits::default()),
            },
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
        // A rendering is made once per version.
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let render = |path: &[Message]| {
            renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            path.iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("|")
                .into_bytes()
        };
        let first = s
            .current_branch_rendered(owner, chat.id, "test", render)
            .await
            .unwrap();
        let again = s
            .current_branch_rendered(owner, chat.id, "test", render)
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(String::from_utf8_lossy(&first).ends_with("again|echo: again"));
        // Moving the leaf changes no message but does change the branch.
        s.select(owner, chat.id, branch[1].id).await.unwrap();
        let moved = s
            .current_branch_rendered(owner, chat.id, "test", render)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&moved).ends_with("hello"),
            "{moved:?}"
        );
        s.select(owner, chat.id, branch.last().unwrap().id)
            .await
            .unwrap();
        let leaf = branch.last().unwrap().id;
        s.delete_message(owner, chat.id, leaf).await.unwrap();
        assert_eq!(s.tree(owner, chat.id).await.unwrap().tree.len(), 4);
        let after = s
            .current_branch_rendered(owner, chat.id, "test", render)
            .await
            .unwrap();
        assert_eq!(
            renders.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "a moved leaf and a write render anew"
        );
        assert!(String::from_utf8_lossy(&after).ends_with("again"));
        assert!(s.cache_stats().weight > 0);
    }

    #[tokio::test]
    async fn a_streamed_answer_is_saved_complete_and_the_chat_titled_in_the_background() {
        let (s, owner) = service(1 << 20).await;
        let chat = s.create_chat(owner, NewChatInput::default()).await.unwrap();
        let mut events = s
            .send_stream(owner, chat.id, say("hello there"))
            .await
            .unwrap();
        let mut text = String::new();
        let mut last = None;
        while let Some((_, event)) = events.next().await {
            if let GenerationEvent::Chunk(delta) = event.as_ref() {
                text.push_str(delta);
            }
            last = Some(event);
        }
        assert_eq!(last.as_deref(), Some(&GenerationEvent::Done));
        assert_eq!(text, "echo: hello there");
        let branch = s.current_branch(owner, chat.id).await.unwrap();
        let answer = branch.last().unwrap();
        assert_eq!(answer.content, text);
        assert_eq!(answer.status, MessageStatus::Complete);
        let status = s.generation(owner, chat.id).await.unwrap().unwrap();
        assert_eq!(status.outcome, Some("complete"));
        s.generations().shutdown(Duration::from_secs(1)).await;
        let titled = s.get_chat(owner, chat.id).await.unwrap();
        assert!(
            titled.title.is_some(),
            "titled once background work drained"
        );
        assert!(matches!(
            s.send_stream(owner, chat.id, say("more")).await,
            Err(ChatError::ShuttingDown)
        ));
    }

    fn rss_mib() -> f64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// R5 of the reliability suite: a million distinct keys through the read cache; memory
    /// stays within its capacity plus a stated slack.
    #[test]
    #[ignore = "reliability suite (make test-reliability): a million inserts"]
    #[expect(clippy::print_stdout, reason = "the figure is the suite's report")]
    fn r5_a_million_distinct_keys_stay_within_the_cache_budget() {
        const CAPACITY: u64 = 16 << 20;
        const SLACK_MIB: f64 = 32.0;
        let cache = MessageCache::new(CAPACITY);
        let before = rss_mib();
        let message = |i: u128| Message {
            id: MessageId::from_u128(i),
            chat_id: ChatId::from_u128(i),
            parent_id: None,
            role: Role::User,
            content: format!("message number {i} with some ordinary text"),
            status: MessageStatus::Complete,
            created_at: domain::Timestamp::from_unix_micros(0),
        };
        let mut peak = before;
        for i in 0..1_000_000_u128 {
            let key = (ChatId::from_u128(i), i as i64, 1);
            cache.entries.insert(key, Arc::new(vec![message(i)]));
            if i % 100_000 == 0 {
                peak = peak.max(rss_mib());
            }
        }
        peak = peak.max(rss_mib());
        let weight = cache.stats().weight;
        let growth = peak - before;
        println!(
            "R5 message cache: 1,000,000 distinct keys, capacity {} MiB: weight {:.1} MiB, RSS growth {growth:.1} MiB (allowed {} + {SLACK_MIB})",
            CAPACITY >> 20,
            weight as f64 / 1_048_576.0,
            CAPACITY >> 20
        );
        assert!(weight <= CAPACITY);
        assert!(
            growth <= (CAPACITY >> 20) as f64 + SLACK_MIB,
            "RSS grew {growth:.1} MiB"
        );
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
