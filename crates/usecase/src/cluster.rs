//! Replicas that share one database: the [`Coordination`] port (leases, shared caps, shared
//! rate limits, a message bus between replicas) and what the generation registry does with
//! it: status, cancel and re-attach of a generation that runs on another replica, answered
//! by that replica over the bus; a heartbeat that keeps this replica's leases alive, saves the
//! partial text of what it generates, and recovers what dead replicas left streaming.
//!
//! A replica id is random per process start. Every running generation has a lease row (its
//! chat, its replica, a claim id); a replica whose heartbeat stops for a whole lease is dead,
//! and another replica that has itself been alive for a whole lease marks its answers
//! `interrupted` with the text last saved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{ChatId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::generation::{Generation, GenerationEvent, GenerationStatus, Generations};
use crate::ports::RepoError;

pub use crate::ports::cluster::{
    Ask, Beat, ClusterMessage, Coordination, Lease, LeaseTiming, ReplicaId, Spend,
};

/// A pending request to another replica.
#[derive(Debug)]
enum Pending {
    Status(oneshot::Sender<Option<GenerationStatus>>),
    Attach {
        chat: ChatId,
        owner: UserId,
        first: u64,
        replica: ReplicaId,
        reply: oneshot::Sender<Option<Arc<Generation>>>,
    },
}

/// This replica's end of the coordination: the port, the requests waiting for answers, the
/// generations mirrored from other replicas and those forwarded to them.
#[derive(Debug)]
pub struct Cluster {
    port: Arc<dyn Coordination>,
    timing: LeaseTiming,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    mirrors: Mutex<HashMap<u64, Arc<Generation>>>,
    forwards: Mutex<HashMap<(ReplicaId, u64), CancellationToken>>,
    /// Stops the heartbeat (when this replica leaves).
    stop: CancellationToken,
}

struct PendingGuard<'a> {
    cluster: &'a Cluster,
    req: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.cluster.pending).remove(&self.req);
    }
}

/// How long another replica gets to answer a status or attach request.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a remote cancel may take (the owner waits up to 10 s for the save).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(15);

/// A write of state shared with other replicas, retried briefly (about 3 s) while the
/// database does not answer; what still fails expires (a lease or slot older than any
/// generation lives counts for nothing).
async fn shared_write<F, Fut>(failed: &'static str, write: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), RepoError>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=6 {
        match write().await {
            Ok(()) => return,
            Err(e) if attempt == 6 => tracing::warn!(error = %e, "{failed}; it expires"),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// This replica's coordination over `port`.
    #[must_use]
    pub fn new(port: Arc<dyn Coordination>, timing: LeaseTiming) -> Self {
        Self {
            port,
            timing,
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            forwards: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        }
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> &Arc<dyn Coordination> {
        &self.port
    }

    /// Leaves the replicas: stops the heartbeat, drops this replica's leases and slots.
    pub(crate) async fn leave(&self) {
        self.stop.cancel();
        if let Err(e) = self.port.leave().await {
            tracing::warn!(error = %e, "this replica's leases could not be dropped; they expire");
        }
    }

    /// Ends lease `claim` of `chat` (its chat may start another generation).
    pub(crate) async fn end_claim(&self, chat: ChatId, claim: u128) {
        shared_write("the generation's lease could not be ended", || {
            self.port.end_claim(chat, claim)
        })
        .await;
    }

    /// Forgets lease `claim` of `chat`.
    pub(crate) async fn release_claim(&self, chat: ChatId, claim: u128) {
        shared_write("a chat's lease could not be released", || {
            self.port.release_claim(chat, claim)
        })
        .await;
    }

    /// Frees generation slot `id`.
    pub(crate) async fn free_slot(&self, id: u128) {
        shared_write("a generation slot could not be freed", || {
            self.port.free_slot(id)
        })
        .await;
    }

    /// An id unique among replicas: this replica's random high half and a counter.
    pub(crate) fn unique_id(&self) -> u128 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (self.port.replica().0 & !u128::from(u64::MAX)) | u128::from(n)
    }

    fn request_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a request waiting for its answer; the guard forgets it, answered or not
    /// (also when the asking request is dropped).
    fn pending(&self, req: u64, pending: Pending) -> PendingGuard<'_> {
        lock(&self.pending).insert(req, pending);
        PendingGuard { cluster: self, req }
    }

    async fn send(&self, to: ReplicaId, message: ClusterMessage) -> Result<(), RepoError> {
        self.port.send(to, message).await
    }

    /// Asks the replica holding `chat`'s generation how it stands.
    ///
    /// # Errors
    /// Storage failures, or an owner that did not answer in time.
    pub async fn status(
        &self,
        lease: Lease,
        owner: UserId,
        chat: ChatId,
        cancel: bool,
    ) -> Result<Option<GenerationStatus>, RepoError> {
        let req = self.request_id();
        let (tx, rx) = oneshot::channel();
        let _pending = self.pending(req, Pending::Status(tx));
        let what = if cancel { Ask::Cancel } else { Ask::Status };
        let ask = ClusterMessage::Ask {
            req,
            from: self.port.replica(),
            chat,
            user: owner,
            what,
        };
        self.send(lease.replica, ask).await?;
        let wait = if cancel { CANCEL_TIMEOUT } else { ASK_TIMEOUT };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(status)) => Ok(status),
            _ => Err(RepoError::Unavailable(
                "the replica running the generation did not answer".into(),
            )),
        }
    }

    /// Follows `chat`'s generation on the replica holding it: a local mirror fed with its
    /// events after `after`. `None` when that replica has no such generation.
    ///
    /// # Errors
    /// As [`Cluster::status`].
    pub async fn attach(
        &self,
        lease: Lease,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> Result<Option<Arc<Generation>>, RepoError> {
        let req = self.request_id();
        let (reply, rx) = oneshot::channel();
        let first = after.map_or(0, |a| a.saturating_add(1));
        let _pending = self.pending(
            req,
            Pending::Attach {
                chat,
                owner,
                first,
                replica: lease.replica,
                reply,
            },
        );
        let ask = ClusterMessage::Ask {
            req,
            from: self.port.replica(),
            chat,
            user: owner,
            what: Ask::Attach { after },
        };
        self.send(lease.replica, ask).await?;
        match tokio::time::timeout(ASK_TIMEOUT, rx).await {
            Ok(Ok(mirror)) => Ok(mirror),
            _ => {
                // A late answer would start forwarding to nobody: say we are gone.
                let _ = self
                    .send(
                        lease.replica,
                        ClusterMessage::Detach {
                            sub: req,
                            from: self.port.replica(),
                        },
                    )
                    .await;
                Err(RepoError::Unavailable(
                    "the replica running the generation did not answer".into(),
                ))
            }
        }
    }

    /// Handles one message from another replica.
    fn dispatch(self: &Arc<Self>, registry: &Generations, message: ClusterMessage) {
        match message {
            ClusterMessage::Ask {
                req,
                from,
                chat,
                user,
                what,
            } => {
                let this = Arc::clone(self);
                let registry = registry.clone();
                tokio::spawn(async move {
                    this.answer(&registry, req, from, (chat, user), what).await;
                });
            }
            ClusterMessage::Reply { req, status } => self.replied(req, status),
            ClusterMessage::Event {
                sub,
                from,
                id,
                event,
            } => self.mirror_event(sub, from, id, event),
            ClusterMessage::Detach { sub, from } => {
                if let Some(token) = lock(&self.forwards).remove(&(from, sub)) {
                    token.cancel();
                }
            }
        }
    }

    fn replied(self: &Arc<Self>, req: u64, status: Option<GenerationStatus>) {
        let Some(pending) = lock(&self.pending).remove(&req) else {
            return;
        };
        match pending {
            Pending::Status(tx) => {
                let _ = tx.send(status);
            }
            Pending::Attach {
                chat,
                owner,
                first,
                replica,
                reply,
            } => {
                let mirror = status.map(|s| Generation::mirror(chat, owner, &s, first, replica));
                if let Some(mirror) = &mirror {
                    lock(&self.mirrors).insert(req, Arc::clone(mirror));
                    self.watch_mirror(req, Arc::clone(mirror));
                }
                if let Err(Some(unwanted)) = reply.send(mirror) {
                    // The asker gave up meanwhile: its watcher detaches it.
                    unwanted.cancellation().cancel();
                }
            }
        }
    }

    /// Ends a mirror whose listeners all left (telling its owner to stop forwarding), whose
    /// source is gone (its lease moved, vanished, or ended a lease ago without the end
    /// reaching us: messages were lost), or that outlived any generation's deadline.
    fn watch_mirror(self: &Arc<Self>, sub: u64, mirror: Arc<Generation>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let source = mirror.mirrored_from();
            let watched = async {
                let mut check = tokio::time::interval(this.timing.lease);
                check.tick().await;
                let mut ended_at_last_check = false;
                loop {
                    check.tick().await;
                    let lease = this.port.lease(mirror.chat()).await;
                    match lease {
                        Ok(Some(l)) if Some(l.replica) == source && l.running => {
                            ended_at_last_check = false;
                        }
                        Ok(Some(l)) if Some(l.replica) == source && !ended_at_last_check => {
                            ended_at_last_check = true;
                        }
                        Err(_) => {}
                        Ok(_) => return,
                    }
                }
            };
            tokio::select! {
                () = mirror.ended() => {}
                () = mirror.cancellation().cancelled() => {
                    if let Some(replica) = source {
                        let _ = this.send(replica, ClusterMessage::Detach { sub, from: this.port.replica() }).await;
                    }
                    mirror.end_as_lost();
                }
                () = watched => mirror.end_as_lost(),
                () = tokio::time::sleep(this.timing.slot_max_age) => mirror.end_as_lost(),
            }
            lock(&this.mirrors).remove(&sub);
        });
    }

    fn mirror_event(
        self: &Arc<Self>,
        sub: u64,
        from: ReplicaId,
        id: u64,
        event: Option<GenerationEvent>,
    ) {
        let mirror = lock(&self.mirrors).get(&sub).cloned();
        let Some(mirror) = mirror else {
            // Nobody follows it (any more): tell the forwarder to stop.
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let me = this.port.replica();
                let _ = this
                    .send(from, ClusterMessage::Detach { sub, from: me })
                    .await;
            });
            return;
        };
        let Some(event) = event.filter(|_| id == mirror.next_id()) else {
            tracing::warn!(
                expected = mirror.next_id(),
                got = id,
                "events from another replica were lost"
            );
            mirror.end_as_lost();
            return;
        };
        mirror.publish(event);
    }

    /// Answers a request about one of this replica's generations.
    async fn answer(
        self: &Arc<Self>,
        registry: &Generations,
        req: u64,
        from: ReplicaId,
        (chat, owner): (ChatId, UserId),
        what: Ask,
    ) {
        let local = registry.get(owner, chat);
        let status = match &what {
            Ask::Status | Ask::Attach { .. } => local.as_ref().map(|g| g.status()),
            Ask::Cancel => registry.cancel(owner, chat).await,
        };
        // Registered before the reply, so a detach that follows it is never missed.
        let forward = matches!(what, Ask::Attach { .. }) && local.is_some();
        let token = CancellationToken::new();
        if forward {
            lock(&self.forwards).insert((from, req), token.clone());
        }
        let replied = self.send(from, ClusterMessage::Reply { req, status }).await;
        if let (Ok(()), Ask::Attach { after }, Some(generation)) = (replied, what, local) {
            let mut subscription = generation.subscribe(after);
            loop {
                let next = tokio::select! {
                    () = token.cancelled() => break,
                    next = subscription.next() => next,
                };
                let Some((id, event)) = next else { break };
                let forwarded = ClusterMessage::Event {
                    sub: req,
                    from: self.port.replica(),
                    id,
                    event: Some(event.as_ref().clone()),
                };
                if self.send(from, forwarded).await.is_err() {
                    break;
                }
            }
        }
        if forward {
            lock(&self.forwards).remove(&(from, req));
        }
    }

    /// Reads the bus until it closes.
    pub(crate) async fn serve(
        self: Arc<Self>,
        registry: Generations,
        mut inbox: mpsc::Receiver<ClusterMessage>,
    ) {
        while let Some(message) = inbox.recv().await {
            self.dispatch(&registry, message);
        }
    }

    /// Renews the lease every heartbeat, saving partial answers and recovering dead
    /// replicas' generations.
    pub(crate) async fn beat(self: Arc<Self>, registry: Generations) {
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut renewed = tokio::time::Instant::now();
        let mut fenced = false;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let partial = registry.partial_answers();
            let saved: Vec<_> = partial
                .iter()
                .map(|(g, len, _)| (Arc::clone(g), *len))
                .collect();
            let texts = partial
                .into_iter()
                .map(|(g, _, text)| (g.message_id(), text))
                .collect();
            match self.port.heartbeat(texts).await {
                Ok(beat) => {
                    renewed = tokio::time::Instant::now();
                    fenced = false;
                    if beat.saved_partial {
                        for (g, len) in saved {
                            g.checkpointed(len);
                        }
                    }
                    if failing {
                        failing = false;
                        tracing::info!("the replica heartbeat is back");
                    }
                    if beat.recovered > 0 {
                        tracing::warn!(
                            count = beat.recovered,
                            "answers of a replica that stopped were marked interrupted"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "the replica heartbeat failed; retrying");
                    }
                    // Other replicas may soon take this one for dead and recover its answers:
                    // stop generating them, so no chat ever has two generations.
                    if !fenced && renewed.elapsed() + self.timing.heartbeat >= self.timing.lease {
                        fenced = true;
                        let stopped = registry.interrupt_running();
                        tracing::error!(
                            count = stopped,
                            "this replica could not renew its lease; its running generations are stopped"
                        );
                    }
                }
            }
        }
    }
}
