//! The PostgreSQL coordination adapter against a real PostgreSQL: several "replicas" (adapters
//! with their own ids on one database) racing for the same slots, chats and rate-limit
//! buckets, messages between them, and the lease rule for recovering a dead one.

#![expect(
    clippy::expect_used,
    reason = "test code: a failed step must abort the test with its reason"
)]

use infra_db::or_skip;
use std::sync::Arc;
use std::time::Duration;

use domain::{ChatId, UserId};
use infra_db::PgCoordination;
use infra_db::testing::{Backend, TestDatabase};
use tokio::sync::mpsc::Receiver;
use usecase::cluster::{Ask, ClusterMessage, Coordination, LeaseTiming, Spend};

/// Short leases, for the test of how a dead replica is recovered: its heartbeats are sent by
/// hand.
const TIMING: LeaseTiming = LeaseTiming {
    lease: Duration::from_millis(600),
    heartbeat: Duration::from_millis(200),
    slot_max_age: Duration::from_secs(60),
};

/// Leases no test outlives, for the tests whose replicas must stay alive however slowly the
/// machine runs them (nothing beats for them: with `TIMING`, a race that took longer than
/// 600 ms saw the other replica's slots as a dead one's and granted more than the cap).
const STEADY: LeaseTiming = LeaseTiming {
    lease: Duration::from_secs(120),
    heartbeat: Duration::from_secs(40),
    slot_max_age: Duration::from_secs(120),
};

async fn replica(db: &TestDatabase) -> (Arc<PgCoordination>, Receiver<ClusterMessage>) {
    replica_with(db, STEADY).await
}

async fn replica_with(
    db: &TestDatabase,
    timing: LeaseTiming,
) -> (Arc<PgCoordination>, Receiver<ClusterMessage>) {
    let store = db.store().await;
    let (port, inbox) = PgCoordination::join(&store, timing)
        .await
        .expect("PostgreSQL");
    (Arc::new(port), inbox)
}

fn id() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_cap_holds_when_replicas_race_for_slots() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let (a, _) = replica(&db).await;
    let (b, _) = replica(&db).await;
    let alice = UserId::from_u128(id());
    let mut races = tokio::task::JoinSet::new();
    for i in 0..24 {
        let port = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        races.spawn(async move {
            let slot = id();
            port.take_slot(alice, slot, 3)
                .await
                .unwrap()
                .then_some(slot)
        });
    }
    let mut taken = Vec::new();
    while let Some(done) = races.join_next().await {
        taken.extend(done.unwrap());
    }
    assert_eq!(taken.len(), 3, "exactly the cap, across replicas");
    // Another user is not affected; a freed slot comes back.
    assert!(a.take_slot(UserId::from_u128(id()), id(), 3).await.unwrap());
    a.free_slot(taken[0]).await.unwrap();
    assert!(b.take_slot(alice, id(), 3).await.unwrap());
    assert!(!b.take_slot(alice, id(), 3).await.unwrap());
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_budget_is_one_for_all_replicas() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let (a, _) = replica(&db).await;
    let (b, _) = replica(&db).await;
    let mut races = tokio::task::JoinSet::new();
    for i in 0..30 {
        let port = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        races.spawn(async move {
            port.spend("send:carol".into(), 10, Duration::from_secs(60))
                .await
                .unwrap()
        });
    }
    let mut allowed = 0;
    let mut waits = Vec::new();
    while let Some(done) = races.join_next().await {
        match done.unwrap() {
            Spend::Allowed => allowed += 1,
            Spend::Denied(wait) => waits.push(wait),
        }
    }
    assert_eq!(allowed, 10);
    // The next request is allowed one interval (6 s) after the budget was spent.
    assert!(
        waits
            .iter()
            .all(|w| *w > Duration::from_secs(5) && *w <= Duration::from_secs(6)),
        "{waits:?}"
    );
    assert_eq!(
        a.spend("send:dave".into(), 10, Duration::from_secs(60))
            .await
            .unwrap(),
        Spend::Allowed,
        "keys are separate"
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_claimed_by_one_replica_until_its_generation_ends() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let (a, _) = replica(&db).await;
    let (b, _) = replica(&db).await;
    let (chat, owner) = (ChatId::from_u128(id()), UserId::from_u128(id()));
    let claim = id();
    assert!(a.claim_chat(chat, owner, claim).await.unwrap());
    assert!(!b.claim_chat(chat, owner, id()).await.unwrap());
    let lease = b.lease(chat).await.unwrap().unwrap();
    assert_eq!(
        (lease.replica, lease.owner, lease.running),
        (a.replica(), owner, true)
    );
    a.end_claim(chat, claim).await.unwrap();
    assert!(!b.lease(chat).await.unwrap().unwrap().running, "lingering");
    assert!(
        b.claim_chat(chat, owner, id()).await.unwrap(),
        "an ended one is taken over"
    );
    // The old claim's release does not drop the new one.
    a.release_claim(chat, claim).await.unwrap();
    assert_eq!(b.lease(chat).await.unwrap().unwrap().replica, b.replica());

    // A lease whose end was never written stops holding the chat once it is older than any
    // generation can live.
    let short = LeaseTiming {
        slot_max_age: Duration::from_millis(300),
        ..STEADY
    };
    let (c, _) = replica_with(&db, short).await;
    let stuck = ChatId::from_u128(id());
    assert!(a.claim_chat(stuck, owner, id()).await.unwrap());
    assert!(!c.claim_chat(stuck, owner, id()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.claim_chat(stuck, owner, id()).await.unwrap());
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_their_replica_in_order_whatever_their_size() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let (a, _) = replica(&db).await;
    let (b, mut inbox) = replica(&db).await;
    let long = "長い答え ".repeat(5_000);
    let sent = vec![
        ClusterMessage::Ask {
            req: 1,
            from: a.replica(),
            chat: ChatId::from_u128(id()),
            user: UserId::from_u128(id()),
            what: Ask::Attach { after: Some(3) },
        },
        ClusterMessage::Event {
            sub: 1,
            from: a.replica(),
            id: 4,
            event: Some(usecase::generation::GenerationEvent::Chunk(long)),
        },
        ClusterMessage::Detach {
            sub: 1,
            from: a.replica(),
        },
    ];
    for message in &sent {
        a.send(b.replica(), message.clone()).await.unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..sent.len() {
        received.push(
            tokio::time::timeout(Duration::from_secs(5), inbox.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(received, sent);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_replica_alive_a_whole_lease_recovers_and_only_dead_ones() {
    let db = or_skip!(TestDatabase::create(Backend::Postgres));
    let (dead, _) = replica_with(&db, TIMING).await;
    let (alive, _) = replica_with(&db, TIMING).await;
    let (chat, owner) = (ChatId::from_u128(id()), UserId::from_u128(id()));
    let other_chat = ChatId::from_u128(id());
    assert!(dead.claim_chat(chat, owner, id()).await.unwrap());
    assert!(alive.claim_chat(other_chat, owner, id()).await.unwrap());
    // A newcomer that has not been alive a whole lease recovers nothing, even though the
    // dead replica's heartbeat is already stale.
    tokio::time::sleep(TIMING.lease + Duration::from_millis(100)).await;
    let (newcomer, _) = replica_with(&db, TIMING).await;
    alive.heartbeat(Vec::new()).await.unwrap();
    newcomer.heartbeat(Vec::new()).await.unwrap();
    assert!(
        newcomer.lease(chat).await.unwrap().is_some(),
        "not recovered yet"
    );
    // `alive` keeps beating; the newcomer, once alive a lease, recovers the dead one only.
    for _ in 0..6 {
        tokio::time::sleep(TIMING.heartbeat).await;
        alive.heartbeat(Vec::new()).await.unwrap();
        newcomer.heartbeat(Vec::new()).await.unwrap();
    }
    assert!(
        alive.lease(chat).await.unwrap().is_none(),
        "the dead replica's lease is gone"
    );
    assert_eq!(
        alive.lease(other_chat).await.unwrap().unwrap().replica,
        alive.replica(),
        "a live replica's lease stays"
    );
    db.drop_database().await;
}
