use super::*;

fn registry(policy: DisconnectPolicy, per_user: usize) -> Generations {
    Generations::new(GenerationLimits {
        per_user,
        global: 4,
        on_client_disconnect: policy,
        ..GenerationLimits::default()
    })
}

fn new(chat: u128) -> NewGeneration {
    NewGeneration {
        owner: UserId::from_u128(1),
        user_message: MessageId::from_u128(chat * 10),
        message: MessageId::from_u128(chat * 10 + 1),
        model: ModelId::parse("m/one").unwrap(),
        started_at: Timestamp::from_unix_micros(0),
    }
}

async fn register(r: &Generations, chat: u128) -> (Arc<Generation>, Subscription) {
    let reservation = r
        .reserve(ChatId::from_u128(chat), UserId::from_u128(1))
        .await
        .unwrap();
    r.register(reservation, new(chat))
}

#[tokio::test]
async fn caps_are_per_user_and_global_and_slots_come_back() {
    let r = registry(DisconnectPolicy::Finish, 2);
    let alice = UserId::from_u128(1);
    let a1 = r.acquire(alice).await.unwrap();
    let _a2 = r.acquire(alice).await.unwrap();
    assert!(matches!(
        r.acquire(alice).await,
        Err(AdmissionError::Busy { .. })
    ));
    let _b1 = r.acquire(UserId::from_u128(2)).await.unwrap();
    let _b2 = r.acquire(UserId::from_u128(2)).await.unwrap();
    assert!(
        matches!(
            r.acquire(UserId::from_u128(3)).await,
            Err(AdmissionError::Busy { .. })
        ),
        "the global cap of 4 is full"
    );
    drop(a1);
    assert!(r.acquire(alice).await.is_ok());
}

#[tokio::test]
async fn listeners_replay_from_an_id_and_follow_live() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let (g, mut first) = register(&r, 7).await;
    g.publish(GenerationEvent::Chunk("a".into()));
    g.publish(GenerationEvent::Chunk("b".into()));
    let mut late = g.subscribe(Some(0));
    assert_eq!(late.next().await.unwrap().0, 1, "resumes after id 0");
    let follower = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((id, _)) = late.next().await {
            seen.push(id);
        }
        seen
    });
    tokio::task::yield_now().await;
    g.publish(GenerationEvent::Chunk("c".into()));
    g.publish(GenerationEvent::Done);
    assert_eq!(follower.await.unwrap(), vec![2, 3]);
    let mut all = Vec::new();
    while let Some((id, _)) = first.next().await {
        all.push(id);
    }
    assert_eq!(all, vec![0, 1, 2, 3]);
    assert!(!g.status().running);
    assert_eq!(g.status().characters, 3);
}

#[tokio::test]
async fn a_replay_gives_back_every_chunk_exactly_between_the_other_events() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let (g, _first) = register(&r, 5).await;
    let deltas = ["こんにちは", "", " wörld\n", "🙂", "x"];
    for d in deltas {
        g.publish(GenerationEvent::Chunk(d.into()));
    }
    g.publish(GenerationEvent::Error(GenerationFailure::Cancelled));
    g.publish(GenerationEvent::Done);
    let mut replay = g.subscribe(Some(1));
    let mut seen = Vec::new();
    while let Some((id, event)) = replay.next().await {
        seen.push((id, event.as_ref().clone()));
    }
    let mut expected: Vec<(u64, GenerationEvent)> = deltas[2..]
        .iter()
        .zip(2..)
        .map(|(d, id)| (id, GenerationEvent::Chunk((*d).into())))
        .collect();
    expected.push((5, GenerationEvent::Error(GenerationFailure::Cancelled)));
    expected.push((6, GenerationEvent::Done));
    assert_eq!(seen, expected);
    let status = g.status();
    assert_eq!(status.characters, 5 + 7 + 1 + 1);
    assert_eq!(status.outcome, Some("interrupted"));
    assert_eq!(status.events, 7);
}

#[tokio::test]
async fn the_last_listener_leaving_cancels_only_under_the_cancel_policy() {
    let r = registry(DisconnectPolicy::Cancel, 3);
    let (g, first) = register(&r, 1).await;
    let second = g.subscribe(None);
    drop(first);
    assert!(!g.cancellation().is_cancelled(), "one listener remains");
    drop(second);
    assert!(g.cancellation().is_cancelled());
    assert_eq!(g.cancel_failure(), GenerationFailure::Cancelled);

    let r = registry(DisconnectPolicy::Finish, 3);
    let (g, first) = register(&r, 2).await;
    drop(first);
    assert!(!g.cancellation().is_cancelled());
}

#[tokio::test]
async fn one_generation_per_chat_from_reservation_to_the_end() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let chat = ChatId::from_u128(5);
    let reserved = r.reserve(chat, UserId::from_u128(1)).await.unwrap();
    assert_eq!(
        r.reserve(chat, UserId::from_u128(1)).await.unwrap_err(),
        AdmissionError::ChatBusy
    );
    drop(reserved);
    let (g, _s) = register(&r, 5).await;
    assert_eq!(
        r.reserve(chat, UserId::from_u128(1)).await.unwrap_err(),
        AdmissionError::ChatBusy
    );
    g.publish(GenerationEvent::Done);
    let _again = r
        .reserve(chat, UserId::from_u128(1))
        .await
        .expect("a finished one is replaced");
}

#[tokio::test]
async fn a_task_that_dies_still_ends_its_generation() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let (g, mut s) = register(&r, 9).await;
    r.spawn(Arc::clone(&g), async { panic!("boom") });
    let mut events = Vec::new();
    while let Some((_, e)) = s.next().await {
        events.push(e);
    }
    assert_eq!(events.last().map(|e| &**e), Some(&GenerationEvent::Done));
    assert_eq!(g.status().outcome, Some("failed"));
    // Reported as what it was, not as a storage failure.
    let failure = events.iter().find_map(|e| match &**e {
        GenerationEvent::Error(f) => Some(f.clone()),
        _ => None,
    });
    assert_eq!(failure, Some(GenerationFailure::Internal));
    assert!(
        r.reserve(ChatId::from_u128(9), UserId::from_u128(1))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn shutdown_refuses_new_work_and_cancels_what_outlives_the_grace() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let slot = r.acquire(UserId::from_u128(1)).await.unwrap();
    let (g, _s) = register(&r, 3).await;
    let task_g = Arc::clone(&g);
    r.spawn(Arc::clone(&g), async move {
        task_g.cancellation().cancelled().await;
        task_g.publish(GenerationEvent::Error(task_g.cancel_failure()));
        task_g.publish(GenerationEvent::Done);
        drop(slot);
    });
    r.shutdown(Duration::from_millis(50)).await;
    assert_eq!(g.status().outcome, Some("interrupted"));
    assert!(matches!(
        r.acquire(UserId::from_u128(1)).await,
        Err(AdmissionError::ShuttingDown)
    ));
    assert_eq!(r.running(), 0);
}

/// A coordination port whose heartbeat never renews (the database is out of reach of this
/// replica only); everything else succeeds.
#[derive(Debug)]
struct CutOff;

impl crate::cluster::Coordination for CutOff {
    fn replica(&self) -> ReplicaId {
        ReplicaId(7)
    }
    fn claim_chat(
        &self,
        _: ChatId,
        _: UserId,
        _: u128,
    ) -> futures_core::future::BoxFuture<'_, Result<bool, RepoError>> {
        Box::pin(async { Ok(true) })
    }
    fn end_claim(
        &self,
        _: ChatId,
        _: u128,
    ) -> futures_core::future::BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async { Ok(()) })
    }
    fn release_claim(
        &self,
        _: ChatId,
        _: u128,
    ) -> futures_core::future::BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async { Ok(()) })
    }
    fn lease(
        &self,
        _: ChatId,
    ) -> futures_core::future::BoxFuture<'_, Result<Option<Lease>, RepoError>> {
        Box::pin(async { Ok(None) })
    }
    fn take_slot(
        &self,
        _: UserId,
        _: u128,
        _: usize,
    ) -> futures_core::future::BoxFuture<'_, Result<bool, RepoError>> {
        Box::pin(async { Ok(true) })
    }
    fn free_slot(&self, _: u128) -> futures_core::future::BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async { Ok(()) })
    }
    fn spend(
        &self,
        _: String,
        _: u32,
        _: Duration,
    ) -> futures_core::future::BoxFuture<'_, Result<crate::cluster::Spend, RepoError>> {
        Box::pin(async { Ok(crate::cluster::Spend::Allowed) })
    }
    fn send(
        &self,
        _: ReplicaId,
        _: crate::cluster::ClusterMessage,
    ) -> futures_core::future::BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async { Ok(()) })
    }
    fn heartbeat(
        &self,
        _: Vec<(MessageId, String)>,
    ) -> futures_core::future::BoxFuture<'_, Result<crate::cluster::Beat, RepoError>> {
        Box::pin(async { Err(RepoError::Unavailable("cut off".into())) })
    }
    fn leave(&self) -> futures_core::future::BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_replica_that_cannot_renew_its_lease_stops_its_generations() {
    let r = registry(DisconnectPolicy::Finish, 3);
    let (_inbox, messages) = tokio::sync::mpsc::channel(1);
    r.join_cluster(
        Arc::new(CutOff),
        LeaseTiming {
            lease: Duration::from_millis(300),
            heartbeat: Duration::from_millis(100),
            slot_max_age: Duration::from_secs(60),
        },
        messages,
    );
    let (g, _s) = register(&r, 4).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !g.cancellation().is_cancelled(),
        "within the lease it runs on"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        g.cancellation().is_cancelled(),
        "before others may take it for dead"
    );
    assert_eq!(g.cancel_failure(), GenerationFailure::ShuttingDown);
}
