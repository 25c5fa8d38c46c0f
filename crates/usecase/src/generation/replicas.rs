//! The registry's side of replicas sharing one database: leases of its generations, mirrors
//! of generations running elsewhere, status, cancel and re-attach wherever a generation runs,
//! and stopping its own generations when it loses its lease.

use super::*;

/// A generation's lease among replicas.
#[derive(Debug)]
pub(super) struct Claim {
    pub(super) cluster: Arc<Cluster>,
    pub(super) chat: ChatId,
    pub(super) id: u128,
    pub(super) ended: std::sync::atomic::AtomicBool,
}

impl Claim {
    /// Ends the lease, retrying briefly while the database does not answer (until then
    /// other replicas see the chat busy; a lease past any generation's life frees it anyway).
    pub(super) async fn end(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        self.cluster.end_claim(self.chat, self.id).await;
    }
}

impl Generation {
    /// A mirror of a generation that runs on another replica, fed with its events from id
    /// `first` on.
    pub(crate) fn mirror(
        chat: ChatId,
        owner: UserId,
        status: &GenerationStatus,
        first: u64,
        from: ReplicaId,
    ) -> Arc<Self> {
        Arc::new(Self {
            chat,
            owner,
            message: status.message,
            user_message: status.user_message,
            model: status.model.clone(),
            started_at: status.started_at,
            cancel: CancellationToken::new(),
            cancel_reason: AtomicU8::new(CANCEL_NONE),
            // Its last listener leaving cancels the mirror, which detaches it.
            policy: DisconnectPolicy::Cancel,
            log: Mutex::new(Log::default()),
            published: watch::channel(0).0,
            listeners: AtomicUsize::new(0),
            first,
            claim: None,
            checkpointed: AtomicUsize::new(0),
            mirrored_from: Some(from),
        })
    }

    /// Its chat.
    pub(crate) fn chat(&self) -> ChatId {
        self.chat
    }

    /// The replica a mirror follows.
    pub(crate) fn mirrored_from(&self) -> Option<ReplicaId> {
        self.mirrored_from
    }

    /// The id the next event will have.
    pub(crate) fn next_id(&self) -> u64 {
        self.first + lock(&self.log).events.len() as u64
    }

    /// Ends a mirror whose source stopped answering.
    pub(crate) fn end_as_lost(&self) {
        if !Self::finished(&lock(&self.log)) {
            self.publish(GenerationEvent::Error(GenerationFailure::Lost));
            self.publish(GenerationEvent::Done);
        }
    }

    /// The answer it writes.
    #[must_use]
    pub fn message_id(&self) -> MessageId {
        self.message
    }

    /// The heartbeat saved the first `len` bytes of the text.
    pub(crate) fn checkpointed(&self, len: usize) {
        self.checkpointed.fetch_max(len, Ordering::AcqRel);
    }

    /// Tells the other replicas the generation ended (its chat may start another), before
    /// its end is published. Nothing to do without replicas.
    pub async fn end_lease(&self) {
        if let Some(claim) = &self.claim {
            claim.end().await;
        }
    }
}

impl Generations {
    /// Shares this registry's state with other replicas through `port`: caps, chat
    /// reservations, and status, cancel and re-attach of generations wherever they run.
    /// `inbox` carries the messages other replicas send to this one. Starts the heartbeat.
    pub fn join_cluster(
        &self,
        port: Arc<dyn Coordination>,
        timing: LeaseTiming,
        inbox: tokio::sync::mpsc::Receiver<crate::cluster::ClusterMessage>,
    ) {
        let cluster = Arc::new(Cluster::new(port, timing));
        if self.shared.cluster.set(Arc::clone(&cluster)).is_err() {
            return;
        }
        self.shared
            .runtime
            .spawn(Arc::clone(&cluster).serve(self.clone(), inbox));
        self.shared.runtime.spawn(cluster.beat(self.clone()));
    }

    pub(super) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.shared.cluster.get()
    }

    /// The text of this replica's running generations that grew since the last heartbeat
    /// saved it: `(generation, length, text)`.
    pub(crate) fn partial_answers(&self) -> Vec<(Arc<Generation>, usize, String)> {
        let running: Vec<_> = lock(&self.shared.counts)
            .by_chat
            .values()
            .cloned()
            .collect();
        running
            .into_iter()
            .filter_map(|g| {
                let log = lock(&g.log);
                let len = log.text.len();
                let grew = len > g.checkpointed.load(Ordering::Acquire);
                let text = (grew && !Generation::finished(&log)).then(|| log.text.clone())?;
                drop(log);
                Some((g, len, text))
            })
            .collect()
    }

    /// Who holds `chat`'s generation among the replicas, when it is another one (and the
    /// generation is `owner`'s).
    async fn remote(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<Option<(&Arc<Cluster>, Lease)>, AdmissionError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        let lease = cluster.port().lease(chat).await.map_err(unavailable)?;
        Ok(lease
            .filter(|l| l.owner == owner && l.replica != cluster.port().replica())
            .map(|l| (cluster, l)))
    }

    /// How `chat`'s generation stands, on whichever replica it runs.
    ///
    /// # Errors
    /// [`AdmissionError::Unavailable`] when the shared state or the owning replica cannot
    /// be reached.
    pub async fn status_anywhere(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<Option<GenerationStatus>, AdmissionError> {
        let local = self.get(owner, chat);
        if let Some(g) = local.as_ref().filter(|g| g.status().running) {
            return Ok(Some(g.status()));
        }
        // A finished one here may have been followed by a newer one elsewhere.
        match self.remote(owner, chat).await? {
            Some((cluster, lease)) => cluster
                .status(lease, owner, chat, false)
                .await
                .map_err(unavailable),
            None => Ok(local.map(|g| g.status())),
        }
    }

    /// Cancels `chat`'s running generation on whichever replica it runs.
    ///
    /// # Errors
    /// As [`Generations::status_anywhere`].
    pub async fn cancel_anywhere(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<Option<GenerationStatus>, AdmissionError> {
        if self.get(owner, chat).is_some_and(|g| g.status().running) {
            return Ok(self.cancel(owner, chat).await);
        }
        match self.remote(owner, chat).await? {
            Some((cluster, lease)) if lease.running => cluster
                .status(lease, owner, chat, true)
                .await
                .map_err(unavailable),
            _ => Ok(None),
        }
    }

    /// Follows `chat`'s generation on whichever replica it runs, replaying the events after
    /// `after`.
    ///
    /// # Errors
    /// As [`Generations::status_anywhere`].
    pub async fn attach_anywhere(
        &self,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> Result<Option<Subscription>, AdmissionError> {
        let local = self.get(owner, chat);
        if let Some(g) = local.as_ref().filter(|g| g.status().running) {
            return Ok(Some(g.subscribe(after)));
        }
        match self.remote(owner, chat).await? {
            Some((cluster, lease)) => Ok(cluster
                .attach(lease, owner, chat, after)
                .await
                .map_err(unavailable)?
                .map(|mirror| mirror.subscribe(after))),
            None => Ok(local.map(|g| g.subscribe(after))),
        }
    }
}

pub(super) fn unavailable(e: RepoError) -> AdmissionError {
    tracing::warn!(error = %e, "the state shared with other replicas is unavailable");
    AdmissionError::Unavailable
}
