//! Streamed generations: each runs as its own task owned by the [`Generations`] registry, with
//! a cancellation token and a log of every event it produced. HTTP responses only subscribe
//! to that log, so a client can leave, re-attach (replaying what it missed) or cancel, and the
//! generation's fate follows the configured [`DisconnectPolicy`], never the connection.
//!
//! The registry also bounds how many generations run at once, per user and in total (blocking
//! replies take the same slots), and refuses new ones while the server shuts down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use domain::{ChatId, MessageId, ModelId, Timestamp, TokenUsage, UserId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, Coordination, Lease, LeaseTiming, ReplicaId};
use crate::llm::LlmError;
use crate::ports::RepoError;

/// What happens to a generation whose last listener goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DisconnectPolicy {
    /// It completes and is saved; the client can fetch it or re-attach.
    #[default]
    Finish,
    /// It stops at once (saved `interrupted`) and the provider connection is released.
    Cancel,
}

/// Bounds of the generation registry.
#[derive(Debug, Clone)]
pub struct GenerationLimits {
    /// Concurrent generations per user (streamed and blocking together).
    pub per_user: usize,
    /// Concurrent generations in this process.
    pub global: usize,
    /// No generation runs longer than this.
    pub deadline: Duration,
    /// How long a finished generation stays attachable (its final events replayable).
    pub linger: Duration,
    /// What a departed client means.
    pub on_client_disconnect: DisconnectPolicy,
    /// The `Retry-After` advised when a cap is full.
    pub retry_after: Duration,
}

impl Default for GenerationLimits {
    fn default() -> Self {
        Self {
            per_user: 3,
            global: 1_000,
            deadline: Duration::from_secs(300),
            linger: Duration::from_secs(60),
            on_client_disconnect: DisconnectPolicy::Finish,
            retry_after: Duration::from_secs(5),
        }
    }
}

/// The end of a successful generation, as sent to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalAnswer {
    /// The stored answer.
    pub message: MessageId,
    /// Its whole content.
    pub content: String,
    /// Tokens used, when reported.
    pub usage: Option<TokenUsage>,
    /// The model that answered.
    pub model: ModelId,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// What the generation used and cost (its record), when known.
    pub stats: Option<domain::GenerationStats>,
}

/// Why a generation did not complete. The partial text is saved in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerationFailure {
    /// The provider failed (saved `failed`).
    #[error("the language model failed: {0}")]
    Provider(LlmError),
    /// Stopped by its owner, or its client left under the `cancel` policy (saved
    /// `interrupted`).
    #[error("the generation was cancelled")]
    Cancelled,
    /// It ran into the configured deadline (saved `failed`).
    #[error("the generation took too long")]
    Deadline,
    /// The server shut down before it finished (saved `interrupted`).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The answer could not be saved (e.g. it was deleted meanwhile).
    #[error("the answer could not be saved")]
    Storage,
    /// Its task ended without finishing it (a bug: it panicked).
    #[error("the generation failed unexpectedly")]
    Internal,
    /// It ran on another replica, which stopped answering before it finished.
    #[error("the replica running the generation stopped answering")]
    Lost,
}

/// One item of a generation's event log. Clients number them from 0 in order.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// First: the user message and the answer being written.
    Start {
        /// The question (committed before the provider was called).
        user_message: MessageId,
        /// The answer (stored with status `streaming` until the end).
        message: MessageId,
        /// The model answering.
        model: ModelId,
    },
    /// New text only.
    Chunk(String),
    /// The answer, stored `complete`.
    Final(FinalAnswer),
    /// The generation ended without completing.
    Error(GenerationFailure),
    /// Always last.
    Done,
}

/// How a generation stands.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStatus {
    /// The answer being written.
    pub message: MessageId,
    /// Its question.
    pub user_message: MessageId,
    /// The model.
    pub model: ModelId,
    /// When it started.
    pub started_at: Timestamp,
    /// Whether it is still producing.
    pub running: bool,
    /// Characters produced so far.
    pub characters: usize,
    /// Events logged so far (the next event's id).
    pub events: u64,
    /// How it ended (`complete`, `interrupted`, `failed`), once it has.
    pub outcome: Option<&'static str>,
}

/// Why a generation could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// A per-user or global cap is full.
    #[error("too many generations are running")]
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
    /// The chat already has a running generation.
    #[error("a generation is already running in this chat")]
    ChatBusy,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The state shared with other replicas could not be read or written.
    #[error("the shared generation state is unavailable")]
    Unavailable,
}

const CANCEL_NONE: u8 = 0;
const CANCEL_USER: u8 = 1;
const CANCEL_SHUTDOWN: u8 = 2;

/// One logged event. Chunks, nearly all of a long answer's events, are kept as a range of
/// [`Log::text`] (8 bytes each plus their text, instead of an allocation of their own).
#[derive(Debug)]
enum Entry {
    Chunk { start: u32, end: u32 },
    Other(Arc<GenerationEvent>),
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Entry>,
    /// The text of every chunk, in order.
    text: String,
    characters: usize,
    outcome: Option<&'static str>,
}

impl Log {
    fn get(&self, index: usize) -> Option<Arc<GenerationEvent>> {
        Some(match self.events.get(index)? {
            Entry::Chunk { start, end } => Arc::new(GenerationEvent::Chunk(
                self.text[*start as usize..*end as usize].to_owned(),
            )),
            Entry::Other(event) => Arc::clone(event),
        })
    }

    fn push(&mut self, event: GenerationEvent) {
        match event {
            GenerationEvent::Chunk(delta) => {
                // An answer is far below 4 GiB (the request's max_tokens and the deadline
                // bound it); past that, chunks are kept as events of their own.
                let start = u32::try_from(self.text.len());
                let end = u32::try_from(self.text.len() + delta.len());
                if let (Ok(start), Ok(end)) = (start, end) {
                    self.text.push_str(&delta);
                    self.events.push(Entry::Chunk { start, end });
                } else {
                    self.events
                        .push(Entry::Other(Arc::new(GenerationEvent::Chunk(delta))));
                }
            }
            other => self.events.push(Entry::Other(Arc::new(other))),
        }
    }
}

/// One running (or recently finished) generation.
#[derive(Debug)]
pub struct Generation {
    chat: ChatId,
    owner: UserId,
    message: MessageId,
    user_message: MessageId,
    model: ModelId,
    started_at: Timestamp,
    cancel: CancellationToken,
    cancel_reason: AtomicU8,
    policy: DisconnectPolicy,
    log: Mutex<Log>,
    published: watch::Sender<usize>,
    listeners: AtomicUsize,
    /// The id of the first logged event (a mirror starts where its client resumes).
    first: u64,
    /// Its lease among replicas, when replicas share the database.
    claim: Option<Claim>,
    /// Bytes of text saved by the heartbeat so far.
    checkpointed: AtomicUsize,
    /// For a mirror of a generation running on another replica: that replica.
    mirrored_from: Option<ReplicaId>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Generation {
    /// The token the generation task stops on.
    #[must_use]
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The failure a cancellation stands for.
    #[must_use]
    pub fn cancel_failure(&self) -> GenerationFailure {
        if self.cancel_reason.load(Ordering::Acquire) == CANCEL_SHUTDOWN {
            GenerationFailure::ShuttingDown
        } else {
            GenerationFailure::Cancelled
        }
    }

    fn cancel_for(&self, reason: u8) {
        let _ = self.cancel_reason.compare_exchange(
            CANCEL_NONE,
            reason,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cancel.cancel();
    }

    /// Appends an event and wakes every listener.
    pub fn publish(&self, event: GenerationEvent) {
        let len = {
            let mut log = lock(&self.log);
            match &event {
                GenerationEvent::Chunk(delta) => log.characters += delta.chars().count(),
                GenerationEvent::Final(_) => log.outcome = Some("complete"),
                GenerationEvent::Error(
                    GenerationFailure::Cancelled | GenerationFailure::ShuttingDown,
                ) => log.outcome = Some("interrupted"),
                GenerationEvent::Error(_) => log.outcome = Some("failed"),
                _ => {}
            }
            log.push(event);
            log.events.len()
        };
        self.published.send_replace(len);
    }

    fn finished(log: &Log) -> bool {
        matches!(
            log.events.last(),
            Some(Entry::Other(event)) if matches!(event.as_ref(), GenerationEvent::Done)
        )
    }

    /// Where it stands.
    #[must_use]
    pub fn status(&self) -> GenerationStatus {
        let log = lock(&self.log);
        GenerationStatus {
            message: self.message,
            user_message: self.user_message,
            model: self.model.clone(),
            started_at: self.started_at,
            running: !Self::finished(&log),
            characters: log.characters,
            events: self.first + log.events.len() as u64,
            outcome: log.outcome,
        }
    }

    /// Resolves once the generation has ended and published its last event.
    pub async fn ended(&self) {
        let mut published = self.published.subscribe();
        loop {
            if Self::finished(&lock(&self.log)) {
                return;
            }
            if published.changed().await.is_err() {
                return;
            }
        }
    }

    /// A listener that first replays the events after `after` (all when `None`).
    #[must_use]
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        self.listeners.fetch_add(1, Ordering::AcqRel);
        Subscription {
            generation: Arc::clone(self),
            next: after.map_or(0, |a| {
                usize::try_from(a.saturating_add(1).saturating_sub(self.first))
                    .unwrap_or(usize::MAX)
            }),
            published: self.published.subscribe(),
        }
    }
}

/// A listener of one generation: yields `(id, event)` in order, ending after
/// [`GenerationEvent::Done`]. Dropping the last listener of a running generation cancels it
/// under [`DisconnectPolicy::Cancel`].
#[derive(Debug)]
pub struct Subscription {
    generation: Arc<Generation>,
    next: usize,
    published: watch::Receiver<usize>,
}

impl Subscription {
    /// The next event, waiting for it if need be; `None` after the last.
    pub async fn next(&mut self) -> Option<(u64, Arc<GenerationEvent>)> {
        loop {
            {
                let log = lock(&self.generation.log);
                if let Some(event) = log.get(self.next) {
                    let id = self.generation.first + self.next as u64;
                    self.next += 1;
                    return Some((id, event));
                }
                if Generation::finished(&log) {
                    return None;
                }
            }
            // The sender lives as long as the generation we hold.
            if self.published.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The answer this subscription follows.
    #[must_use]
    pub fn message(&self) -> MessageId {
        self.generation.message
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let g = &self.generation;
        let left = g.listeners.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && g.policy == DisconnectPolicy::Cancel && !g.cancel.is_cancelled() {
            let running = !Generation::finished(&lock(&g.log));
            if running {
                tracing::debug!(answer = %g.message, "last listener left; cancelling the generation");
                g.cancel_for(CANCEL_USER);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_user: HashMap<UserId, usize>,
    global: usize,
    by_chat: HashMap<ChatId, Arc<Generation>>,
    /// Chats whose generation is being prepared (question stored, not registered yet).
    reserved: std::collections::HashSet<ChatId>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    limits: GenerationLimits,
    counts: Mutex<Counts>,
    idle: tokio::sync::Notify,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
    cluster: OnceLock<Arc<Cluster>>,
}

/// A taken concurrency slot; dropping it frees the slot (call [`Slot::release`] to wait
/// until other replicas see it free).
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    owner: UserId,
    /// The slot's row among replicas.
    shared_id: Option<u128>,
}

impl Slot {
    /// Frees the slot, waiting until the other replicas see it free.
    pub async fn release(mut self) {
        if let (Some(id), Some(cluster)) = (self.shared_id.take(), self.shared.cluster.get()) {
            cluster.free_slot(id).await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(id), Some(cluster)) = (self.shared_id.take(), self.shared.cluster.get()) {
            let cluster = Arc::clone(cluster);
            self.shared
                .runtime
                .spawn(async move { cluster.free_slot(id).await });
        }
        let mut c = lock(&self.shared.counts);
        c.global = c.global.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(&self.owner);
            }
        }
        let idle = c.global == 0;
        drop(c);
        if idle {
            self.shared.idle.notify_waiters();
        }
    }
}

/// A chat claimed for a generation being prepared.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    chat: ChatId,
    /// Still holding the claim (not yet turned into a registered generation).
    armed: bool,
    /// The chat's lease among replicas.
    claim: Option<u128>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.shared.counts).reserved.remove(&self.chat);
            if let (Some(claim), Some(cluster)) = (self.claim, self.shared.cluster.get()) {
                let (cluster, chat) = (Arc::clone(cluster), self.chat);
                self.shared
                    .runtime
                    .spawn(async move { cluster.release_claim(chat, claim).await });
            }
        }
    }
}

/// Runs when a generation's task is gone: ends a generation the task did not end (a panic),
/// so listeners get an error and `Done` and the chat is free again; then forgets it after the
/// linger time.
struct EndGuard {
    shared: Arc<Shared>,
    generation: Arc<Generation>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let generation = Arc::clone(&self.generation);
        if !Generation::finished(&lock(&generation.log)) {
            tracing::error!(answer = %generation.message, "a generation task ended without finishing");
            generation.publish(GenerationEvent::Error(GenerationFailure::Internal));
            generation.publish(GenerationEvent::Done);
        }
        let shared = Arc::clone(&self.shared);
        // Not tracked: shutdown need not wait for the linger.
        self.shared.runtime.spawn(async move {
            if let Some(claim) = &generation.claim {
                claim.end().await;
            }
            tokio::time::sleep(shared.limits.linger).await;
            if let Some(claim) = &generation.claim {
                claim.cluster.release_claim(claim.chat, claim.id).await;
            }
            let mut c = lock(&shared.counts);
            if c.by_chat
                .get(&generation.chat)
                .is_some_and(|g| Arc::ptr_eq(g, &generation))
            {
                c.by_chat.remove(&generation.chat);
            }
        });
    }
}

/// The registry of generations of this process. Clones share it.
#[derive(Debug, Clone)]
pub struct Generations {
    shared: Arc<Shared>,
}

/// What a new streamed generation needs to register.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// Its owner.
    pub owner: UserId,
    /// The question.
    pub user_message: MessageId,
    /// The answer row (status `streaming`).
    pub message: MessageId,
    /// The model.
    pub model: ModelId,
    /// Start time.
    pub started_at: Timestamp,
}

impl Generations {
    /// A registry whose tasks run on the current Tokio runtime (call it from the runtime that
    /// outlives the HTTP workers, so shutdown can still save what runs).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[must_use]
    pub fn new(limits: GenerationLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                counts: Mutex::new(Counts::default()),
                idle: tokio::sync::Notify::new(),
                tasks: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// The configured bounds.
    #[must_use]
    pub fn limits(&self) -> &GenerationLimits {
        &self.shared.limits
    }

    /// Takes a slot for `owner`, or says why not. With replicas, the per-user cap counts
    /// the slots taken on every replica; the global cap is this process's.
    ///
    /// # Errors
    /// [`AdmissionError::Busy`] when a cap is full, [`AdmissionError::ShuttingDown`],
    /// [`AdmissionError::Unavailable`].
    pub async fn acquire(&self, owner: UserId) -> Result<Slot, AdmissionError> {
        let mut slot = self.acquire_here(owner)?;
        if let Some(cluster) = self.cluster() {
            let id = cluster.unique_id();
            let per_user = self.shared.limits.per_user;
            match cluster.port().take_slot(owner, id, per_user).await {
                Ok(true) => slot.shared_id = Some(id),
                Ok(false) => {
                    return Err(AdmissionError::Busy {
                        retry_after: self.shared.limits.retry_after,
                    });
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(slot)
    }

    fn acquire_here(&self, owner: UserId) -> Result<Slot, AdmissionError> {
        let limits = &self.shared.limits;
        let mut c = lock(&self.shared.counts);
        if c.closed {
            return Err(AdmissionError::ShuttingDown);
        }
        let mine = c.per_user.get(&owner).copied().unwrap_or(0);
        if mine >= limits.per_user || c.global >= limits.global {
            return Err(AdmissionError::Busy {
                retry_after: limits.retry_after,
            });
        }
        c.global += 1;
        *c.per_user.entry(owner).or_insert(0) += 1;
        Ok(Slot {
            shared: Arc::clone(&self.shared),
            owner,
            shared_id: None,
        })
    }

    /// Claims `chat` for a new generation before anything is written, so two concurrent
    /// sends cannot both start one; dropping the reservation releases it.
    ///
    /// With replicas, the chat is claimed among them too.
    ///
    /// # Errors
    /// [`AdmissionError::ChatBusy`] when a generation runs or is being prepared there,
    /// [`AdmissionError::Unavailable`].
    pub async fn reserve(
        &self,
        chat: ChatId,
        owner: UserId,
    ) -> Result<Reservation, AdmissionError> {
        let mut reservation = {
            let mut c = lock(&self.shared.counts);
            let running = c
                .by_chat
                .get(&chat)
                .is_some_and(|g| !Generation::finished(&lock(&g.log)));
            if running || !c.reserved.insert(chat) {
                return Err(AdmissionError::ChatBusy);
            }
            Reservation {
                shared: Arc::clone(&self.shared),
                chat,
                armed: true,
                claim: None,
            }
        };
        if let Some(cluster) = self.cluster() {
            let claim = cluster.unique_id();
            match cluster.port().claim_chat(chat, owner, claim).await {
                Ok(true) => reservation.claim = Some(claim),
                Ok(false) => return Err(AdmissionError::ChatBusy),
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(reservation)
    }

    /// Registers a generation in its reserved chat and returns it with its first listener
    /// (subscribed before the task starts, so the `cancel` policy sees a listener from the
    /// first event on).
    #[must_use]
    pub fn register(
        &self,
        mut reservation: Reservation,
        new: NewGeneration,
    ) -> (Arc<Generation>, Subscription) {
        let (published, _) = watch::channel(0);
        let generation = Arc::new(Generation {
            chat: reservation.chat,
            owner: new.owner,
            message: new.message,
            user_message: new.user_message,
            model: new.model,
            started_at: new.started_at,
            cancel: CancellationToken::new(),
            cancel_reason: AtomicU8::new(CANCEL_NONE),
            policy: self.shared.limits.on_client_disconnect,
            log: Mutex::new(Log::default()),
            published,
            listeners: AtomicUsize::new(0),
            first: 0,
            claim: reservation
                .claim
                .zip(self.cluster())
                .map(|(id, cluster)| Claim {
                    cluster: Arc::clone(cluster),
                    chat: reservation.chat,
                    id,
                    ended: std::sync::atomic::AtomicBool::new(false),
                }),
            checkpointed: AtomicUsize::new(0),
            mirrored_from: None,
        });
        {
            let mut c = lock(&self.shared.counts);
            c.reserved.remove(&reservation.chat);
            c.by_chat.insert(reservation.chat, Arc::clone(&generation));
        }
        reservation.armed = false;
        let subscription = generation.subscribe(None);
        (generation, subscription)
    }

    /// Runs `task` (a generation's work) on the registry's runtime; then, after the linger
    /// time, forgets the generation.
    pub fn spawn<F>(&self, generation: Arc<Generation>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = EndGuard {
            shared: Arc::clone(&self.shared),
            generation,
        };
        // In the span of the request that started it: its log lines carry that request's id.
        self.shared.tasks.spawn_on(
            tracing::Instrument::in_current_span(async move {
                // Dropped when the task ends, normally or by a panic.
                let _guard = guard;
                task.await;
            }),
            &self.shared.runtime,
        );
    }

    /// Runs a provider call on the registry's (multi-threaded) runtime, so it makes progress
    /// while the request that started it waits for the database; dropping the handle
    /// cancels it.
    pub fn spawn_call<T, F>(&self, call: F) -> tokio_util::task::AbortOnDropHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        tokio_util::task::AbortOnDropHandle::new(
            self.shared
                .runtime
                .spawn(tracing::Instrument::in_current_span(call)),
        )
    }

    /// Runs a background job (a title) that shutdown waits for, briefly.
    pub fn spawn_background<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.tasks.spawn_on(
            tracing::Instrument::in_current_span(task),
            &self.shared.runtime,
        );
    }

    /// The generation of `chat` (running or recently finished), if it is `owner`'s.
    #[must_use]
    pub fn get(&self, owner: UserId, chat: ChatId) -> Option<Arc<Generation>> {
        lock(&self.shared.counts)
            .by_chat
            .get(&chat)
            .filter(|g| g.owner == owner)
            .cloned()
    }

    /// Cancels the running generation of `chat` and waits (briefly) until its partial
    /// answer is saved; returns its final status, `None` when nothing runs.
    pub async fn cancel(&self, owner: UserId, chat: ChatId) -> Option<GenerationStatus> {
        let g = self.get(owner, chat)?;
        if !g.status().running {
            return None;
        }
        g.cancel_for(CANCEL_USER);
        let _ = tokio::time::timeout(Duration::from_secs(10), g.ended()).await;
        Some(g.status())
    }

    /// How many generations (streamed and blocking) hold slots now.
    #[must_use]
    pub fn running(&self) -> usize {
        lock(&self.shared.counts).global
    }

    /// Graceful shutdown: refuses new generations, lets running ones finish for `grace`,
    /// then cancels the rest (saved `interrupted`) and waits for them to be saved.
    pub async fn shutdown(&self, grace: Duration) {
        let already_closed = {
            let mut c = lock(&self.shared.counts);
            std::mem::replace(&mut c.closed, true)
        };
        if already_closed {
            let _ = tokio::time::timeout(grace + Duration::from_secs(10), self.shared.tasks.wait())
                .await;
        } else {
            self.drain(grace).await;
        }
        // Both calls leave: the first may have been stopped before it did (leaving twice is
        // harmless).
        if let Some(cluster) = self.cluster() {
            cluster.leave().await;
        }
    }

    /// Lets running generations finish for `grace`, then interrupts the rest and waits for
    /// them to be saved.
    async fn drain(&self, grace: Duration) {
        self.shared.tasks.close();
        let idle = async {
            loop {
                let notified = self.shared.idle.notified();
                if lock(&self.shared.counts).global == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, idle).await.is_err() {
            let count = self.interrupt_running();
            tracing::warn!(
                count,
                "shutdown grace period over; interrupting running generations"
            );
        }
        // Saving an interrupted answer is one short transaction; titles are best effort.
        if tokio::time::timeout(Duration::from_secs(10), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some generation tasks did not finish saving in time");
        }
    }

    /// Stops every running generation of this process (each saved `interrupted`): on
    /// shutdown, or when this replica lost its lease. Returns how many were running.
    pub(crate) fn interrupt_running(&self) -> usize {
        let running: Vec<_> = lock(&self.shared.counts)
            .by_chat
            .values()
            .filter(|g| g.status().running)
            .cloned()
            .collect();
        for g in &running {
            g.cancel_for(CANCEL_SHUTDOWN);
        }
        running.len()
    }
}

mod replicas;

use replicas::{Claim, unavailable};

#[cfg(test)]
mod tests;
