//! Coordination of replicas over PostgreSQL: leases, slots and rate-limit buckets in tables
//! (migration 6), messages between replicas with `NOTIFY` on one channel per replica,
//! received by a `LISTEN`ing connection of each. Times come from the database's clock, so
//! replicas whose clocks disagree still agree on who is alive.

use std::collections::HashMap;
use std::time::Duration;

use domain::{ChatId, MessageId, Timestamp, UserId};
use futures_core::future::BoxFuture;
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgListener};
use sea_orm::{ColumnTrait, DbBackend};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use usecase::RepoError;
use usecase::cluster::{Beat, ClusterMessage, Coordination, Lease, LeaseTiming, ReplicaId, Spend};
use uuid::Uuid;

use crate::SeaOrmStore;
use crate::entity::messages;
use crate::error::from_sqlx;

type Statement<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

mod wire;

/// The database's clock in microseconds.
macro_rules! now {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000000)::bigint"
    };
}

/// The largest `NOTIFY` payload part (PostgreSQL's limit is 8,000 bytes).
const PART_BYTES: usize = 7_000;
/// Messages being reassembled at most (parts of a lost message are dropped past this).
const PARTIAL_MAX: usize = 1_024;
/// Messages waiting to be handled before the listener waits for the handler.
const INBOX: usize = 4_096;
/// The control pool: the listener's connection, the heartbeat's, one spare.
const CONTROL_CONNECTIONS: u32 = 3;

/// The PostgreSQL coordination of one replica.
pub struct PgCoordination {
    pool: PgPool,
    /// A few connections of their own for the heartbeat, recovery and the listener, so a
    /// saturated request pool never makes a live replica look dead.
    control: PgPool,
    store: SeaOrmStore,
    replica: ReplicaId,
    timing: LeaseTiming,
    /// Messages sent (each message's parts share a key made from it).
    sent: std::sync::atomic::AtomicU64,
    /// Stops the listener (on leaving), so the pool can close.
    stop: CancellationToken,
}

impl std::fmt::Debug for PgCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCoordination")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// Runs one statement on `pool`; the rows it touched.
async fn run(pool: &PgPool, statement: Statement<'_>) -> Result<u64, RepoError> {
    Ok(statement
        .execute(pool)
        .await
        .map_err(from_sqlx)?
        .rows_affected())
}

fn channel(replica: ReplicaId) -> String {
    format!("arbor_{:032x}", replica.0)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn id(v: u128) -> Uuid {
    Uuid::from_u128(v)
}

impl PgCoordination {
    /// Joins the replicas on `store`'s PostgreSQL as a new replica: registers it (when the
    /// database answers; the heartbeat does otherwise), starts listening for its messages
    /// (connecting until it can), and returns the adapter with its inbox. `None` on other
    /// backends (one process: nothing to coordinate).
    pub async fn join(
        store: &SeaOrmStore,
        timing: LeaseTiming,
    ) -> Option<(Self, mpsc::Receiver<ClusterMessage>)> {
        if store.backend != DbBackend::Postgres {
            return None;
        }
        let pool = store.write.get_postgres_connection_pool().clone();
        let control = sqlx::postgres::PgPoolOptions::new()
            .max_connections(CONTROL_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with((*pool.connect_options()).clone());
        let replica = ReplicaId(Uuid::new_v4().as_u128());
        let this = Self {
            pool,
            control: control.clone(),
            store: store.clone(),
            replica,
            timing,
            sent: std::sync::atomic::AtomicU64::new(0),
            stop: CancellationToken::new(),
        };
        let (tx, rx) = mpsc::channel(INBOX);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let stop = this.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = listen(control, channel(replica), tx, ready_tx) => {}
            }
        });
        // Briefly: a database that is down must not hold up start-up.
        let _ = tokio::time::timeout(Duration::from_secs(2), ready).await;
        if let Err(e) = this.renew().await {
            tracing::warn!(error = %e, "this replica could not register yet; its heartbeat will");
        }
        Some((this, rx))
    }

    /// Runs one statement on the request pool; the rows it touched.
    async fn exec(&self, statement: Statement<'_>) -> Result<u64, RepoError> {
        run(&self.pool, statement).await
    }

    /// Runs one statement on the control pool; the rows it touched.
    async fn control(&self, statement: Statement<'_>) -> Result<u64, RepoError> {
        run(&self.control, statement).await
    }

    /// Renews this replica's row; `alive_since` restarts when the previous renewal is older
    /// than two heartbeats (this replica was cut off, so it knows nothing of that time).
    async fn renew(&self) -> Result<(), RepoError> {
        self.control(
            sqlx::query(concat!(
                "INSERT INTO cluster_replicas AS r (id, started_at, alive_since, heartbeat_at) ",
                "VALUES ($1, ",
                now!(),
                ", ",
                now!(),
                ", ",
                now!(),
                ") ",
                "ON CONFLICT (id) DO UPDATE SET alive_since = CASE WHEN r.heartbeat_at < ",
                now!(),
                " - $2 THEN ",
                now!(),
                " ELSE r.alive_since END, heartbeat_at = ",
                now!()
            ))
            .bind(id(self.replica.0))
            .bind(micros(self.timing.heartbeat * 2)),
        )
        .await?;
        Ok(())
    }

    async fn save_partial(&self, partial: Vec<(MessageId, String)>) -> Result<(), RepoError> {
        if partial.is_empty() {
            return Ok(());
        }
        let (ids, texts): (Vec<Uuid>, Vec<String>) = partial
            .into_iter()
            .map(|(m, text)| (id(m.as_u128()), text))
            .unzip();
        self.control(sqlx::query(
            "UPDATE messages AS m SET content = v.c FROM unnest($1::uuid[], $2::text[]) AS v(id, c) \
             WHERE m.id = v.id AND m.status = 'streaming'",
        )
        .bind(ids)
        .bind(texts)).await?;
        Ok(())
    }

    /// Once this replica has been alive a whole lease: interrupts the answers of replicas
    /// silent for a lease and drops their leases, slots and rows.
    async fn recover(&self) -> Result<u64, RepoError> {
        let lease = micros(self.timing.lease);
        // The dead replicas' leases stay locked while their answers are interrupted, so no
        // live replica can claim one of those chats (and start an answer there) meanwhile.
        let mut tx = self.control.begin().await.map_err(from_sqlx)?;
        let dead: Vec<Uuid> = sqlx::query(concat!(
            "SELECT l.chat_id FROM generation_leases l ",
            "LEFT JOIN cluster_replicas r ON r.id = l.replica_id ",
            "WHERE l.replica_id <> $1 AND (r.heartbeat_at < ",
            now!(),
            " - $2 ",
            // A replica that never registered: dead once its claim is a lease old.
            "OR (r.id IS NULL AND l.claimed_at < ",
            now!(),
            " - $2)) ",
            "AND EXISTS (SELECT 1 FROM cluster_replicas me WHERE me.id = $1 AND me.alive_since < ",
            now!(),
            " - $2) LIMIT 1000 FOR UPDATE OF l SKIP LOCKED"
        ))
        .bind(id(self.replica.0))
        .bind(lease)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .into_iter()
        .map(|row| row.try_get::<Uuid, _>(0))
        .collect::<Result<_, _>>()
        .map_err(from_sqlx)?;
        let mut recovered = 0;
        if !dead.is_empty() {
            let now = Timestamp::from_unix_micros(
                i64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_micros(),
                )
                .unwrap_or(i64::MAX),
            );
            recovered = self
                .store
                .interrupt_streaming_where(
                    messages::Column::ChatId.is_in(dead.iter().copied()).into(),
                    now,
                )
                .await?;
            sqlx::query("DELETE FROM generation_leases WHERE chat_id = ANY($1)")
                .bind(&dead)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        self.control(
            sqlx::query(concat!(
                "DELETE FROM generation_slots s WHERE s.taken_at < ",
                now!(),
                " - $2 ",
                "OR NOT EXISTS (SELECT 1 FROM cluster_replicas r WHERE r.id = s.replica_id ",
                "AND r.heartbeat_at >= ",
                now!(),
                " - $1)"
            ))
            .bind(lease)
            .bind(micros(self.timing.slot_max_age)),
        )
        .await?;
        self.control(
            sqlx::query(concat!(
                "DELETE FROM cluster_replicas r WHERE r.heartbeat_at < ",
                now!(),
                " - $1 * 2 ",
                "AND NOT EXISTS (SELECT 1 FROM generation_leases l WHERE l.replica_id = r.id)"
            ))
            .bind(lease),
        )
        .await?;
        // A bucket whose time has passed is as good as none.
        self.control(sqlx::query(concat!(
            "DELETE FROM rate_limit_buckets WHERE tat < ",
            now!()
        )))
        .await?;
        Ok(recovered)
    }
}

/// Receives this replica's messages: reassembles their parts and hands them on. A lost
/// connection is re-established (messages sent meanwhile are lost; their senders time out).
async fn listen(
    pool: PgPool,
    channel: String,
    inbox: mpsc::Sender<ClusterMessage>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut listener = loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => break listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' messages yet; retrying");
                if inbox.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let _ = ready.send(());
    let mut partial: HashMap<String, Vec<String>> = HashMap::new();
    let mut failing = false;
    loop {
        let notification = match listener.try_recv().await {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::warn!("the replica message connection was lost; reconnecting");
                continue;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the replica message connection failed; retrying");
                }
                failing = true;
                if inbox.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        failing = false;
        let Some(text) = reassemble(&mut partial, notification.payload()) else {
            continue;
        };
        let Some(message) = wire::decode(&text) else {
            tracing::warn!("an unreadable message from another replica was ignored");
            continue;
        };
        if inbox.send(message).await.is_err() {
            return;
        }
    }
}

/// Parts are `key part count text`, space-separated; whole messages come back.
fn reassemble(partial: &mut HashMap<String, Vec<String>>, payload: &str) -> Option<String> {
    let mut fields = payload.splitn(4, ' ');
    let (key, part, count, text) = (
        fields.next()?,
        fields.next()?.parse::<usize>().ok()?,
        fields.next()?.parse::<usize>().ok()?,
        fields.next().unwrap_or(""),
    );
    if count <= 1 {
        return Some(text.to_owned());
    }
    if partial.len() >= PARTIAL_MAX && !partial.contains_key(key) {
        partial.clear();
    }
    let parts = partial.entry(key.to_owned()).or_default();
    if parts.len() != part {
        partial.remove(key);
        return None;
    }
    parts.push(text.to_owned());
    if parts.len() < count {
        return None;
    }
    partial.remove(key).map(|parts| parts.concat())
}

/// Splits `text` into parts of at most [`PART_BYTES`], on character boundaries.
fn split(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > PART_BYTES {
        let mut cut = PART_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

impl Coordination for PgCoordination {
    fn replica(&self) -> ReplicaId {
        self.replica
    }

    fn claim_chat(
        &self,
        chat: ChatId,
        owner: UserId,
        claim: u128,
    ) -> BoxFuture<'_, Result<bool, RepoError>> {
        Box::pin(async move {
            let claimed = self.exec(sqlx::query(concat!(
                "INSERT INTO generation_leases AS l ",
                "(chat_id, claim_id, replica_id, user_id, running, claimed_at) ",
                "VALUES ($1, $2, $3, $4, true, ",
                now!(),
                ") ",
                "ON CONFLICT (chat_id) DO UPDATE SET claim_id = EXCLUDED.claim_id, ",
                "replica_id = EXCLUDED.replica_id, user_id = EXCLUDED.user_id, running = true, ",
                "claimed_at = EXCLUDED.claimed_at ",
                // Past any generation's life, a lease whose end was never written (the
                // database was down then) no longer holds the chat.
                "WHERE NOT l.running OR l.replica_id = EXCLUDED.replica_id ",
                "OR l.claimed_at < EXCLUDED.claimed_at - $5"
            ))
            .bind(id(chat.as_u128()))
            .bind(id(claim))
            .bind(id(self.replica.0))
            .bind(id(owner.as_u128()))
            .bind(micros(self.timing.slot_max_age))).await?;
            Ok(claimed == 1)
        })
    }

    fn end_claim(&self, chat: ChatId, claim: u128) -> BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async move {
            self.exec(sqlx::query(
                "UPDATE generation_leases SET running = false WHERE chat_id = $1 AND claim_id = $2",
            )
            .bind(id(chat.as_u128()))
            .bind(id(claim))).await?;
            Ok(())
        })
    }

    fn release_claim(&self, chat: ChatId, claim: u128) -> BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async move {
            self.exec(
                sqlx::query("DELETE FROM generation_leases WHERE chat_id = $1 AND claim_id = $2")
                    .bind(id(chat.as_u128()))
                    .bind(id(claim)),
            )
            .await?;
            Ok(())
        })
    }

    fn lease(&self, chat: ChatId) -> BoxFuture<'_, Result<Option<Lease>, RepoError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT replica_id, user_id, running FROM generation_leases WHERE chat_id = $1",
            )
            .bind(id(chat.as_u128()))
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
            row.map(|row| {
                Ok(Lease {
                    replica: ReplicaId(row.try_get::<Uuid, _>(0)?.as_u128()),
                    owner: UserId::from_u128(row.try_get::<Uuid, _>(1)?.as_u128()),
                    running: row.try_get(2)?,
                })
            })
            .transpose()
            .map_err(from_sqlx)
        })
    }

    fn take_slot(
        &self,
        owner: UserId,
        slot: u128,
        per_user: usize,
    ) -> BoxFuture<'_, Result<bool, RepoError>> {
        Box::pin(async move {
            // One round trip: the function (migration 6) decides under a per-user lock.
            sqlx::query_scalar("SELECT arbor_take_slot($1, $2, $3, $4, $5, $6)")
                .bind(id(slot))
                .bind(id(owner.as_u128()))
                .bind(id(self.replica.0))
                .bind(i64::try_from(per_user).unwrap_or(i64::MAX))
                .bind(micros(self.timing.slot_max_age))
                .bind(micros(self.timing.lease))
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)
        })
    }

    fn free_slot(&self, slot: u128) -> BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async move {
            self.exec(sqlx::query("DELETE FROM generation_slots WHERE id = $1").bind(id(slot)))
                .await?;
            Ok(())
        })
    }

    fn spend(
        &self,
        key: String,
        per_period: u32,
        period: Duration,
    ) -> BoxFuture<'_, Result<Spend, RepoError>> {
        Box::pin(async move {
            let period = micros(period).max(1);
            let interval = (period / i64::from(per_period.max(1))).max(1);
            let mut key = key;
            if key.len() > 200 {
                let mut cut = 200;
                while !key.is_char_boundary(cut) {
                    cut -= 1;
                }
                key.truncate(cut);
            }
            // GCRA: the bucket's theoretical arrival time moves one interval per request,
            // from now at the earliest; a request is allowed while it stays within a period
            // of now. EXCLUDED.tat is now + interval.
            let allowed = self.exec(sqlx::query(concat!(
                "INSERT INTO rate_limit_buckets AS b (key, tat) VALUES ($1, ",
                now!(),
                " + $2) ",
                "ON CONFLICT (key) DO UPDATE SET tat = GREATEST(b.tat, EXCLUDED.tat - $2) + $2 ",
                "WHERE GREATEST(b.tat, EXCLUDED.tat - $2) + $2 - (EXCLUDED.tat - $2) <= $3"
            ))
            .bind(&key)
            .bind(interval)
            .bind(period)).await?;
            if allowed == 1 {
                return Ok(Spend::Allowed);
            }
            let wait: Option<i64> = sqlx::query_scalar(concat!(
                "SELECT tat + $2 - $3 - ",
                now!(),
                " FROM rate_limit_buckets WHERE key = $1"
            ))
            .bind(&key)
            .bind(interval)
            .bind(period)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
            let wait = u64::try_from(wait.unwrap_or(0)).unwrap_or(0);
            Ok(Spend::Denied(Duration::from_micros(wait)))
        })
    }

    fn send(&self, to: ReplicaId, message: ClusterMessage) -> BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async move {
            let message = wire::encode(&message);
            let parts = split(&message);
            let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = format!("{:x}.{n:x}", self.replica.0 >> 64);
            let to = channel(to);
            for (i, part) in parts.iter().enumerate() {
                self.exec(
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&to)
                        .bind(format!("{key} {i} {} {part}", parts.len())),
                )
                .await?;
            }
            Ok(())
        })
    }

    fn heartbeat(
        &self,
        partial: Vec<(MessageId, String)>,
    ) -> BoxFuture<'_, Result<Beat, RepoError>> {
        Box::pin(async move {
            self.renew().await?;
            let saved_partial = match self.save_partial(partial).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "partial answers could not be saved");
                    false
                }
            };
            let recovered = self.recover().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "recovering stopped replicas failed; the next heartbeat retries");
                0
            });
            Ok(Beat {
                saved_partial,
                recovered,
            })
        })
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), RepoError>> {
        Box::pin(async move {
            self.stop.cancel();
            let me = id(self.replica.0);
            for statement in [
                "DELETE FROM generation_leases WHERE replica_id = $1",
                "DELETE FROM generation_slots WHERE replica_id = $1",
                "DELETE FROM cluster_replicas WHERE id = $1",
            ] {
                self.exec(sqlx::query(statement).bind(me)).await?;
            }
            // The listener stopped above; its connection goes back, then the pool closes.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.control.close()).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_travel_in_parts_and_come_back_whole() {
        let text = "é".repeat(PART_BYTES) + "end";
        let parts = split(&text);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.len() <= PART_BYTES));
        let mut partial = HashMap::new();
        let mut whole = None;
        for (i, part) in parts.iter().enumerate() {
            whole = reassemble(&mut partial, &format!("k {i} {} {part}", parts.len()));
        }
        assert_eq!(whole.as_deref(), Some(text.as_str()));
        assert!(partial.is_empty());
        assert_eq!(
            reassemble(&mut partial, "k2 0 1 short one").as_deref(),
            Some("short one")
        );
        // A part out of order (one was lost) drops the message.
        assert_eq!(reassemble(&mut partial, "k3 1 2 tail"), None);
        assert!(partial.is_empty());
    }
}
