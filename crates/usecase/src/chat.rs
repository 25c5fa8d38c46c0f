//! Conversations: chats as trees of messages, branching from any message, and blocking
//! replies from the model. Every route is scoped to its owner.
//!
//! Here the service and its turns; beside it `plan` (a generation's settings and prompt),
//! `stream` (one streamed generation start to end), `titles`, `cache` (message lists by chat
//! version), `quota`, `completions` (the OpenAI-compatible surface) and `use_case` (the
//! inbound port).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::AbortOnDropHandle;

use domain::{
    Chat, ChatId, ChatTitle, ConversationTree, GenerationRecord, Message, MessageContent,
    MessageId, MessageStatus, ModelId, PageRequest, PresetId, Role, SearchQuery, SystemPrompt,
    TokenUsage, UserId,
};

mod cache;
mod completions;
mod plan;
mod quota;
mod stream;
mod titles;
mod use_case;

pub use completions::{
    ChatTarget, CompletionEvent, CompletionInput, CompletionReply, CompletionStream,
    CompletionsUseCase, StoreIn,
};
pub use quota::QuotaUsage;
pub use use_case::ChatUseCase;

use cache::*;
pub use cache::{CacheStats, MessageCache};
use plan::Plan;
use stream::*;
use titles::*;

use crate::catalog::{CatalogError, CatalogUseCase};
use crate::generation::{
    AdmissionError, FinalAnswer, GenerationEvent, GenerationFailure, GenerationStatus, Generations,
    NewGeneration, Reservation, Slot, Subscription,
};
use crate::llm::{CompletionRequest, LlmError, LlmGateway, PromptMessage, StreamEvent};
use crate::ports::{
    ChatList, ChatPatch, ChatQuery, ChatRepository, ChatVersion, Clock, Entity, FinishedAnswer,
    IdGenerator, NewChat, NewMessage, PresetRepository, RepoError, SearchResults,
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
    /// A request's setting does not fit the model (e.g. `max_tokens` beyond its context).
    #[error("{0}")]
    Invalid(domain::InvalidInput),
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
    /// The account's quota for the day or the month is used up.
    #[error("the usage quota is exhausted until {resets_at}")]
    QuotaExceeded {
        /// Which limit (`daily_cost`, `monthly_cost`, `daily_tokens`, `monthly_tokens`).
        limit: &'static str,
        /// When it frees up (the next UTC day or month).
        resets_at: domain::Timestamp,
    },
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
            AdmissionError::Unavailable => Self::Storage(RepoError::Unavailable(
                "the state shared with other replicas is unavailable".into(),
            )),
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

/// A stored exchange.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The user's message.
    pub user_message: Message,
    /// The model's answer.
    pub answer: Message,
    /// Tokens used, when reported.
    pub usage: Option<TokenUsage>,
    /// Why generation stopped, when reported.
    pub finish_reason: Option<String>,
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
    /// Send this conversation instead of the chat's path (the OpenAI-compatible surface,
    /// whose clients send the whole conversation).
    pub prompt: Option<GivenPrompt>,
}

/// A conversation as the caller sends it whole.
#[derive(Debug, Clone, Default)]
pub struct GivenPrompt {
    /// Its messages, in order (text only; see `passthrough` for the rest).
    pub messages: Vec<PromptMessage>,
    /// Provider-protocol fields sent as given (see [`CompletionRequest::passthrough`]).
    pub passthrough: Option<crate::llm::RawJson>,
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
    /// Every account's quota limits unless it has its own.
    pub quota: domain::QuotaLimits,
    /// The text limits an operator set (at most the domain's ceilings).
    pub input: domain::InputLimits,
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

/// How long after its deadline an answer may still be saved. A sweep may end a row left
/// `streaming` only once it is older than the deadline plus this: no process still writes
/// it then (saves are retried for less, see `stream::SAVE_RETRY_FOR`).
pub const SAVE_MARGIN: Duration = Duration::from_secs(60);

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

/// What the chat service stores in: chats and their trees, presets, usage counters.
pub trait ChatStore: ChatRepository + PresetRepository + crate::ports::UsageRepository {}

impl<T: ChatRepository + PresetRepository + crate::ports::UsageRepository> ChatStore for T {}

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
    quota: domain::QuotaLimits,
    input: domain::InputLimits,
    overrides: quota::OverridesCache,
    cache: Arc<MessageCache>,
    generations: Generations,
}

impl<R, L, M, C, I> std::fmt::Debug for ChatService<R, L, M, C, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
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
            quota: defaults.quota,
            input: defaults.input,
            overrides: quota::OverridesCache::default(),
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
        let at = version(chat);
        if let Some(hit) = self.cache.get(chat.id, at) {
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
            self.cache.insert(chat.id, at, Arc::clone(&messages));
        }
        Ok(messages)
    }

    /// Asks the provider for a blocking answer at once, in a task of its own (aborted when
    /// the handle is dropped), so the question can be committed meanwhile.
    fn start_completion(&self, request: CompletionRequest) -> Upstream<crate::llm::Completion> {
        let llm = Arc::clone(&self.llm);
        self.generations
            .spawn_call(async move { llm.complete(request).await })
    }

    /// The outcome of a provider call under way, or a timeout at the generation deadline.
    async fn within_deadline<T: Send + 'static>(&self, call: Upstream<T>) -> Result<T, LlmError> {
        tokio::time::timeout(self.generations.limits().deadline, call)
            .await
            .map_or(Err(LlmError::Timeout), joined)
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

    /// The blocking answer to `turn.question` from the call already under way, stored with
    /// its generation record.
    async fn answer(
        &self,
        owner: UserId,
        chat: &Chat,
        plan: Plan,
        slot: Slot,
        turn: Turn<crate::llm::Completion>,
    ) -> Result<Reply, ChatError> {
        let Turn {
            question: under,
            path,
            upstream: (started, upstream),
            after,
            ..
        } = turn;
        let model = plan.info.id.clone();
        let title = self.title_job(chat, &path, &plan);
        let mut ids: Vec<MessageId> = path.iter().map(|m| m.id).collect();
        let completion = self.within_deadline(upstream).await;
        slot.release().await;
        metrics::counter!(
            "arbor_generations_total",
            "outcome" => if completion.is_ok() { "complete" } else { "failed" },
            "mode" => "blocking"
        )
        .increment(1);
        metrics::histogram!("arbor_generation_duration_seconds", "mode" => "blocking")
            .record(started.elapsed().as_secs_f64());
        let completion = completion.map_err(ChatError::Llm)?;
        let text_bytes = Some((Self::prompt_bytes(&path, &plan), completion.content.len()));
        let answer = self.new_message(
            under.id,
            Role::Assistant,
            completion.content,
            MessageStatus::Complete,
        );
        let end = StreamEnd {
            finish_reason: completion.finish_reason.clone(),
            usage: completion.usage,
            provider: completion.provider,
            cost: completion.cost,
        };
        let record = end.record(
            &CallOf {
                owner,
                model: &plan.model,
                pricing: &plan.info.pricing,
                provider: &self.provider,
                started,
                first_token: None,
                text_bytes,
            },
            (Some(chat.id), Some(answer.id)),
            domain::GenerationKind::Answer,
            answer.created_at,
        );
        let stats = record.stats();
        let mut stored = answer.stored_in(chat.id);
        stored.generation = Some(Box::new(stats.clone()));
        let detached = record.clone().detached();
        let appended = self
            .repo
            .append_answer_from(
                owner,
                chat.id,
                (answer, record),
                after.as_ref().map(|a| a.0),
            )
            .await;
        let (answer, version) = match appended {
            Ok(appended) => appended,
            // The chat or the question was deleted during the call: what it used still
            // counts (its record is kept, detached).
            Err(e @ RepoError::NotFound(_)) => {
                completions::keep_record(&*self.repo, detached).await;
                return Err(repo(e));
            }
            Err(e) => return Err(repo(e)),
        };
        let answer = Message {
            generation: Some(Box::new(stats)),
            ..answer
        };
        if let (Some(version), Some((_, known))) = (version, after) {
            self.cache
                .put(chat.id, version, extended(&known, vec![stored]));
        }
        if let Some(job) = title {
            self.spawn_title(job, answer.content.clone());
        }
        ids.push(answer.id);
        Ok(Reply {
            user_message: under,
            answer,
            usage: completion.usage,
            finish_reason: completion.finish_reason,
            model,
            path: ids,
        })
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
            prompt_bytes: Self::prompt_bytes(&path, &plan),
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
                registry.spawn_background(write_title((repo, llm, clock), title, answer));
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
        let known = version(chat);
        let stored = match &answer_row {
            Some(row) => {
                added.push(row.stored_in(chat.id));
                self.repo
                    .append_turn_from(owner, chat.id, (question, row.clone()), Some(known))
                    .await
            }
            None => {
                self.repo
                    .append_message_from(owner, chat.id, (question, true), Some(known))
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

    /// The message an edit replaces (as a new sibling) and its parent; `answered` when the
    /// edit is to be answered, which only a question can be.
    fn edit_target(
        tree: &ConversationTree,
        message: MessageId,
        answered: bool,
    ) -> Result<(&Message, MessageId), ChatError> {
        let target = tree.get(message).ok_or(ChatError::MessageNotFound)?;
        let parent = target.parent_id.ok_or(ChatError::InvalidTarget(
            "the root message cannot be edited",
        ))?;
        if answered && target.role != Role::User {
            return Err(ChatError::InvalidTarget(
                "only a question can be edited and answered again",
            ));
        }
        Ok((target, parent))
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

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
{
    /// Stops `chat`'s running generation, on whichever replica runs it, when `which` accepts
    /// its answer, and waits (briefly) until its partial text and record are saved. When the
    /// replicas cannot be asked it is only logged: the answer then finds its message gone
    /// and keeps its record detached.
    async fn stop_generation_if(
        &self,
        owner: UserId,
        chat: ChatId,
        which: impl Fn(MessageId) -> bool + Send,
    ) {
        let stopped = match self.generations.status_anywhere(owner, chat).await {
            Ok(Some(status)) if status.running && which(status.message) => self
                .generations
                .cancel_anywhere(owner, chat)
                .await
                .map(|_| ()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = stopped {
            tracing::warn!(error = %e, chat = %chat, "a running answer could not be stopped");
        }
    }
}

#[cfg(test)]
mod tests;
