//! The hot writes of conversations (a question, a turn, an answer, the end of an answer),
//! and their group commit on SQLite.
//!
//! SQLite admits one writer at a time, so concurrent writes queue. Each transaction has a
//! fixed cost (`BEGIN`, `COMMIT`, the WAL frames of the pages it touched) that a burst pays
//! once per request. On SQLite these writes therefore go to one writer task that drains its
//! queue: everything waiting is applied in **one** transaction, and each request still
//! learns its own outcome. A write refused by its first statement (an unknown chat or
//! parent) changes nothing, so it fails alone inside the batch; any other failure rolls the
//! batch back and every member is retried in a transaction of its own, so a failing write
//! fails only itself.

use domain::{ChatId, GenerationRecord, Message, UserId};
use sea_orm::DatabaseTransaction;
use tokio::sync::{mpsc, oneshot};
use usecase::ports::{ChatVersion, FinishedAnswer, NewMessage, RepoError};

use crate::SeaOrmStore;
use crate::error::to_repo_error;

/// The most writes one group commit applies.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer task, beyond which callers wait to enqueue.
const QUEUE: usize = 4_096;

/// One hot write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A message under its parent (the current leaf when `move_leaf`).
    Message {
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        move_leaf: bool,
        expected: Option<ChatVersion>,
    },
    /// A question (the current leaf) and its answer's `streaming` row.
    Turn {
        owner: UserId,
        chat: ChatId,
        question: NewMessage,
        answer: NewMessage,
        expected: Option<ChatVersion>,
    },
    /// A complete answer with its generation record (the current leaf).
    Answer {
        owner: UserId,
        chat: ChatId,
        message: NewMessage,
        record: GenerationRecord,
        expected: Option<ChatVersion>,
    },
    /// The end of a streaming answer.
    Finish {
        owner: UserId,
        chat: ChatId,
        answer: FinishedAnswer,
        expected: Option<ChatVersion>,
    },
}

/// What a write returns: the stored message (or nothing, for an end), and the chat's
/// version after it when the chat was at the expected version before it.
#[derive(Debug)]
pub(crate) enum Written {
    Message(Message, Option<ChatVersion>),
    Done(Option<ChatVersion>),
}

/// Why a write failed, and whether it left anything behind in its transaction.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Refused before changing anything: the transaction can go on without it.
    Clean(RepoError),
    /// The transaction may hold part of it: roll back.
    Dirty(RepoError),
}

impl Failure {
    pub(crate) fn into_error(self) -> RepoError {
        match self {
            Self::Clean(e) | Self::Dirty(e) => e,
        }
    }
}

/// Any failure of a statement after the first is dirty.
pub(crate) fn dirty(e: RepoError) -> Failure {
    Failure::Dirty(e)
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, RepoError>>,
}

/// The queue in front of the writer task.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer task for `store` (which must not hold a [`GroupCommit`] itself, so
    /// the task ends once every user of the queue is gone).
    pub(crate) fn start(store: SeaOrmStore) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store, queue));
        Self { jobs }
    }

    /// Applies `write` in the next group commit. When the writer task is gone the write is
    /// handed back untouched (`Err`), so the caller can apply it alone.
    pub(crate) async fn write(&self, write: Write) -> Result<Result<Written, RepoError>, Write> {
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self.jobs.send(Job { write, reply }).await {
            return Err(refused.0.write);
        }
        // A reply dropped unsent means the writer died mid-batch: whether the write landed
        // is unknown, so it is not applied again.
        Ok(answer.await.unwrap_or_else(|_| {
            Err(RepoError::Unavailable(
                "the database writer stopped during a write".into(),
            ))
        }))
    }
}

async fn writer(store: SeaOrmStore, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        metrics::histogram!("arbor_db_group_commit_writes").record(batch.len() as f64);
        commit_group(&store, std::mem::take(&mut batch)).await;
    }
}

async fn commit_group(store: &SeaOrmStore, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        match store.begin_write().await {
            Ok(txn) => match apply_all(store, &txn, &jobs).await {
                Some(results) => match txn.commit().await {
                    Ok(()) => {
                        for (job, result) in jobs.into_iter().zip(results) {
                            let _ = job.reply.send(result);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %to_repo_error(e), writes = jobs.len(), "a group commit failed; retrying its writes one by one");
                    }
                },
                None => drop(txn),
            },
            Err(e) => {
                tracing::warn!(error = %e, writes = jobs.len(), "a group commit could not begin; retrying its writes one by one");
            }
        }
    }
    for job in jobs {
        let result = store.write_alone(&job.write).await;
        let _ = job.reply.send(result);
    }
}

/// Applies every job in `txn`; `None` when one left the transaction dirty.
async fn apply_all(
    store: &SeaOrmStore,
    txn: &DatabaseTransaction,
    jobs: &[Job],
) -> Option<Vec<Result<Written, RepoError>>> {
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        match store.apply(txn, &job.write).await {
            Ok(written) => results.push(Ok(written)),
            Err(Failure::Clean(e)) => results.push(Err(e)),
            Err(Failure::Dirty(_)) => return None,
        }
    }
    Some(results)
}
