//! Coordination between replicas over the shared database: who runs which chat's generation,
//! per-user generation slots, rate-limit budgets, heartbeats, and messages between replicas.

use domain::{ChatId, MessageId, UserId};
use futures_core::future::BoxFuture;
use std::time::Duration;

use super::RepoError;
use crate::generation::{GenerationEvent, GenerationStatus};

/// One process among the replicas (random per start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaId(pub u128);

/// What a replica asks the replica running a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// How it stands.
    Status,
    /// Stop it (the answer is its status once saved).
    Cancel,
    /// Forward its events after this id (all when `None`) until it ends or is detached.
    Attach {
        /// The last event the client has.
        after: Option<u64>,
    },
}

/// A message between replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterMessage {
    /// A question about `chat`'s generation, owned by `user`; answered with a `Reply` to
    /// `from` under `req` (and, for an attach, followed by `Event`s under `req`).
    Ask {
        /// The request's id at the asking replica.
        req: u64,
        /// The asking replica.
        from: ReplicaId,
        /// The chat.
        chat: ChatId,
        /// Its owner.
        user: UserId,
        /// What is asked.
        what: Ask,
    },
    /// The answer: the generation's status, `None` when there is none.
    Reply {
        /// The request answered.
        req: u64,
        /// The status.
        status: Option<GenerationStatus>,
    },
    /// One forwarded event of an attached generation.
    Event {
        /// The attach request.
        sub: u64,
        /// The replica forwarding it.
        from: ReplicaId,
        /// The event's id.
        id: u64,
        /// The event (`None` when it could not be read: the mirror ends as lost).
        event: Option<GenerationEvent>,
    },
    /// The asking replica stops following (its clients left).
    Detach {
        /// The attach request.
        sub: u64,
        /// The asking replica.
        from: ReplicaId,
    },
}

/// Who holds a chat's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The replica running (or lingering with) the generation.
    pub replica: ReplicaId,
    /// Its owner.
    pub owner: UserId,
    /// Still producing.
    pub running: bool,
}

/// A rate-limit decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Allowed (and counted).
    Allowed,
    /// Over the quota: try again after this long.
    Denied(Duration),
}

/// What a renewed heartbeat did besides renewing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Beat {
    /// The partial answers were saved.
    pub saved_partial: bool,
    /// Answers of dead replicas marked `interrupted`.
    pub recovered: u64,
}

/// How long leases last and how often they are renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// A replica silent this long is dead.
    pub lease: Duration,
    /// How often each replica renews its lease and saves partial answers.
    pub heartbeat: Duration,
    /// No generation holds a slot longer than this (a leaked slot row stops counting then).
    pub slot_max_age: Duration,
}

/// The state replicas share, kept in the database (PostgreSQL): every call is one short
/// statement or transaction.
pub trait Coordination: Send + Sync + std::fmt::Debug + 'static {
    /// This replica.
    fn replica(&self) -> ReplicaId;

    /// Claims `chat` for a generation of `owner` on this replica under `claim`: `false` when
    /// a generation runs there (on any replica). A claim of this replica's own that is not
    /// running any more (or whose generation this replica no longer knows) is taken over.
    fn claim_chat(
        &self,
        chat: ChatId,
        owner: UserId,
        claim: u128,
    ) -> BoxFuture<'_, Result<bool, RepoError>>;

    /// The generation under `claim` ended; its lease lingers (re-attachable) until released.
    fn end_claim(&self, chat: ChatId, claim: u128) -> BoxFuture<'_, Result<(), RepoError>>;

    /// Forgets `claim` (when it is still the chat's).
    fn release_claim(&self, chat: ChatId, claim: u128) -> BoxFuture<'_, Result<(), RepoError>>;

    /// Who holds `chat`'s generation, if anyone.
    fn lease(&self, chat: ChatId) -> BoxFuture<'_, Result<Option<Lease>, RepoError>>;

    /// Takes slot `id` for `owner` unless `per_user` slots of theirs are taken on live replicas.
    fn take_slot(
        &self,
        owner: UserId,
        id: u128,
        per_user: usize,
    ) -> BoxFuture<'_, Result<bool, RepoError>>;

    /// Frees slot `id`.
    fn free_slot(&self, id: u128) -> BoxFuture<'_, Result<(), RepoError>>;

    /// Spends one request of `key`, allowed `per_period` requests per `period` (a GCRA:
    /// `per_period` at once, then one every `period / per_period`).
    fn spend(
        &self,
        key: String,
        per_period: u32,
        period: Duration,
    ) -> BoxFuture<'_, Result<Spend, RepoError>>;

    /// Sends `message` to replica `to` (delivered in send order, or lost with the
    /// connection). The replica's inbox receives it.
    fn send(&self, to: ReplicaId, message: ClusterMessage) -> BoxFuture<'_, Result<(), RepoError>>;

    /// Renews this replica's lease and saves the partial text of its streaming answers;
    /// then, once this replica has itself been alive for a whole lease, marks `interrupted`
    /// the answers of dead replicas and drops their leases and slots. Fails only when the
    /// lease could not be renewed.
    fn heartbeat(
        &self,
        partial: Vec<(MessageId, String)>,
    ) -> BoxFuture<'_, Result<Beat, RepoError>>;

    /// Leaves: drops this replica's row, leases and slots (a clean shutdown).
    fn leave(&self) -> BoxFuture<'_, Result<(), RepoError>>;
}
