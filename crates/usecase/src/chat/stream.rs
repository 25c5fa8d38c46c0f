//! One streamed generation, start to end: reading the provider, publishing, saving.

use futures_util::FutureExt as _;

use super::*;

/// What a generation task needs besides the adapters.
#[derive(Debug)]
pub(super) struct StreamJob {
    pub(super) owner: UserId,
    pub(super) chat: ChatId,
    pub(super) message: MessageId,
    pub(super) user_message: MessageId,
    pub(super) plan: Plan,
    /// The prompt's size in bytes (see [`CallOf::text_bytes`]).
    pub(super) prompt_bytes: usize,
    pub(super) provider: String,
    pub(super) deadline: Duration,
    pub(super) leaf_at_start: MessageId,
    /// The concurrency slot, freed once the answer is saved.
    pub(super) slot: Slot,
    /// The chat's version and messages once the turn was stored (when known exactly), and
    /// the cache to extend when the answer ends.
    pub(super) after: Option<(ChatVersion, Arc<Vec<Message>>, Arc<MessageCache>)>,
}

/// How the provider's stream ended well.
pub(super) struct StreamEnd {
    pub(super) finish_reason: Option<String>,
    pub(super) usage: Option<TokenUsage>,
    pub(super) provider: Option<String>,
    pub(super) cost: Option<domain::Usd>,
}

/// Who made a call, to which model, and when it started: what its record needs besides its
/// end.
pub(super) struct CallOf<'a> {
    pub(super) owner: UserId,
    pub(super) model: &'a ModelId,
    pub(super) pricing: &'a domain::Pricing,
    /// The provider's name when the call reports none.
    pub(super) provider: &'a str,
    pub(super) started: Instant,
    pub(super) first_token: Option<Instant>,
    /// The prompt's and the answer's sizes in bytes, to estimate what the call used when
    /// the provider did not say; `None` when the provider sent nothing (a refused or failed
    /// call is not charged).
    pub(super) text_bytes: Option<(usize, usize)>,
}

impl StreamEnd {
    /// The record of `call`, ended so at `now`: the provider's cost when it reported one,
    /// else the listed prices, times the tokens the provider reported or else
    /// [estimated](domain::TokenUsage::estimated) ones (a cancelled answer still cost).
    pub(super) fn record(
        self,
        call: &CallOf<'_>,
        (chat_id, message_id): (Option<ChatId>, Option<MessageId>),
        kind: domain::GenerationKind,
        now: domain::Timestamp,
    ) -> GenerationRecord {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (usage, cost, cost_source) =
            domain::usage_and_cost(self.cost, call.pricing, self.usage, call.text_bytes);
        GenerationRecord {
            message_id,
            chat_id,
            user_id: call.owner,
            provider: self.provider.unwrap_or_else(|| call.provider.to_owned()),
            model: call.model.clone(),
            usage,
            cost,
            cost_source,
            latency_ms: ms(call.started.elapsed()),
            time_to_first_token_ms: call.first_token.map(|t| ms(t.duration_since(call.started))),
            finish_reason: self.finish_reason,
            created_at: now,
            kind,
        }
    }
}

/// The finish reason recorded for an answer that did not complete.
pub(super) const fn failure_reason(failure: &GenerationFailure) -> &'static str {
    match failure {
        GenerationFailure::Deadline => "timeout",
        GenerationFailure::Cancelled | GenerationFailure::ShuttingDown => "cancelled",
        GenerationFailure::Provider(_)
        | GenerationFailure::Storage
        | GenerationFailure::Internal
        | GenerationFailure::Lost => "error",
    }
}

/// The most text one chunk event carries when deltas arrive faster than they are read.
pub(super) const CHUNK_COALESCE_BYTES: usize = 4_096;

/// The next item if one is ready now, without waiting.
pub(super) fn ready_now(
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
pub(super) async fn pump(
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
                let cut = || StreamEnd {
                    finish_reason: Some("length".into()),
                    usage: None,
                    provider: None,
                    cost: None,
                };
                if content.len() + delta.len() > ANSWER_MAX_BYTES {
                    return Ok(cut());
                }
                // Each piece joins the content as it comes (a failure while merging keeps
                // it); the merged chunk is published once.
                content.push_str(&delta);
                while delta.len() < CHUNK_COALESCE_BYTES {
                    match ready_now(&mut stream) {
                        Some(Some(Ok(StreamEvent::Delta(more)))) => {
                            if content.len() + more.len() > ANSWER_MAX_BYTES {
                                generation.publish(GenerationEvent::Chunk(delta));
                                return Ok(cut());
                            }
                            content.push_str(&more);
                            delta.push_str(&more);
                        }
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                generation.publish(GenerationEvent::Chunk(delta));
            }
            // A chat stores text: other members (tool calls) are for callers that store none.
            StreamEvent::Extra(_) => {}
            StreamEvent::Done {
                finish_reason,
                usage,
                provider,
                cost,
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
                    cost,
                });
            }
        }
    }
}

/// One generation, start to end: streams the answer (until it completes, fails, is
/// cancelled or hits the deadline), saves it with the partial text in every case, and
/// publishes the outcome. Returns the content when it completed.
pub(super) async fn run_stream<R: ChatRepository, C: Clock>(
    repo: &R,
    clock: &C,
    generation: &crate::generation::Generation,
    job: StreamJob,
    upstream: (Instant, Upstream<crate::llm::CompletionStream>),
) -> Option<String> {
    let (started, upstream) = upstream;
    let mut content = String::new();
    let mut first_token = None;
    // A panic while reading (a bug, in the adapter or here) ends the answer like any other
    // failure: what was received is saved, marked failed.
    let pumped =
        std::panic::AssertUnwindSafe(pump(upstream, generation, &mut content, &mut first_token))
            .catch_unwind();
    let result = tokio::select! {
        biased;
        () = generation.cancellation().cancelled() => Err(generation.cancel_failure()),
        () = tokio::time::sleep(job.deadline.saturating_sub(started.elapsed())) => Err(GenerationFailure::Deadline),
        end = pumped => end.unwrap_or_else(|_| {
            tracing::error!(answer = %job.message, "reading the answer panicked");
            Err(GenerationFailure::Internal)
        }),
    };
    let now = clock.now();
    let (status, end, failure) = match result {
        Ok(end) => (MessageStatus::Complete, end, None),
        Err(failure) => {
            let status = match failure {
                GenerationFailure::Cancelled | GenerationFailure::ShuttingDown => {
                    MessageStatus::Interrupted
                }
                _ => MessageStatus::Failed,
            };
            tracing::info!(answer = %job.message, outcome = status.as_str(), reason = %failure, "generation ended early");
            let end = StreamEnd {
                finish_reason: Some(failure_reason(&failure).to_owned()),
                usage: None,
                provider: None,
                cost: None,
            };
            (status, end, Some(failure))
        }
    };
    // Every answer keeps its record, an unfinished one with what is known of it.
    let (usage, finish_reason) = (end.usage, end.finish_reason.clone());
    let record = end.record(
        &CallOf {
            owner: job.owner,
            model: &job.plan.model,
            pricing: &job.plan.info.pricing,
            provider: &job.provider,
            started,
            first_token,
            text_bytes: first_token.map(|_| (job.prompt_bytes, content.len())),
        },
        (Some(job.chat), Some(job.message)),
        domain::GenerationKind::Answer,
        now,
    );
    let stats = record.stats();
    let event = match failure {
        None => GenerationEvent::Final(FinalAnswer {
            message: job.message,
            content: content.clone(),
            usage,
            model: job.plan.model.clone(),
            finish_reason,
            stats: Some(stats.clone()),
        }),
        Some(failure) => GenerationEvent::Error(failure),
    };
    let record = Some(record);
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
    let message = finished.message;
    let expected = job.after.as_ref().map(|a| a.0);
    // Boxed: the save's database future is large, and unboxed it would be part of every
    // stream's task for the whole stream (P2's heap profile: ~17 KiB per stream).
    let saved = Box::pin(save_with_retries(
        repo, job.owner, job.chat, finished, expected,
    ))
    .await;
    if let (Saved::Stored(Some(version)), Some((_, known, cache))) = (saved, job.after) {
        // The turn's messages with the answer as it ended.
        let mut messages = known.as_ref().clone();
        if let Some(answer) = messages.iter_mut().find(|m| m.id == message) {
            answer.content.clone_from(&content);
            answer.status = status;
            answer.generation = Some(Box::new(stats));
        }
        cache.put(job.chat, version, messages);
    }
    // Free the slot and the chat before anyone hears of the end (on every replica): a
    // client that reacts at once may start the next generation.
    tokio::join!(job.slot.release(), generation.end_lease());
    match saved {
        // Deleted while it was written: its client still hears how it ended.
        Saved::Stored(_) | Saved::Deleted => generation.publish(event),
        Saved::Failed => generation.publish(GenerationEvent::Error(GenerationFailure::Storage)),
    }
    generation.publish(GenerationEvent::Done);
    (matches!(saved, Saved::Stored(_)) && status == MessageStatus::Complete).then_some(content)
}

/// How saving the end of an answer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Saved {
    /// Stored, with the chat's version after it when it was known.
    Stored(Option<ChatVersion>),
    /// The chat or the answer had been deleted; its record was kept, detached.
    Deleted,
    /// Not stored.
    Failed,
}

/// How long the end of an answer keeps being retried: the client may already have read it,
/// so a busy or briefly unreachable database must not lose it. At most half of
/// [`SAVE_MARGIN`], the other half left for the last attempt's own wait (SQLite's busy
/// timeout is 30 s by default): past the margin a sweep may end the row as `interrupted`,
/// and a later attempt that found it ended could not tell that from its own earlier attempt
/// having committed.
pub(super) const SAVE_RETRY_FOR: Duration = Duration::from_secs(25);
const _: () = assert!(SAVE_RETRY_FOR.as_secs() * 2 <= SAVE_MARGIN.as_secs());
/// The longest pause between two attempts.
pub(super) const SAVE_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// Saves the end of an answer, retrying (bounded by [`SAVE_RETRY_FOR`]) on any failure
/// that is not final: a full pool, a busy or restarting database, a lost connection.
/// With `expected`, the first attempt writes from that chat version and returns the version
/// after it when the chat was still there.
pub(super) async fn save_with_retries<R: ChatRepository>(
    repo: &R,
    owner: UserId,
    chat: ChatId,
    finished: FinishedAnswer,
    expected: Option<ChatVersion>,
) -> Saved {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let result = repo
            .finish_answer_from(
                owner,
                chat,
                finished.clone(),
                expected.filter(|_| attempt == 1),
            )
            .await;
        match result {
            Ok(version) => {
                if attempt > 1 {
                    tracing::info!(answer = %finished.message, attempt, "the answer was saved after retrying");
                }
                return Saved::Stored(version);
            }
            // The previous attempt committed but its acknowledgement was lost.
            Err(RepoError::Conflict(_)) if attempt > 1 => return Saved::Stored(None),
            // The chat or the answer was deleted while it was written: the text has nowhere
            // to go, but what the call used still counts (its record is kept, detached).
            Err(RepoError::NotFound(_)) => {
                tracing::info!(answer = %finished.message, "the answer was deleted while it was written");
                if let Some(record) = finished.record {
                    super::completions::keep_record(repo, record.detached()).await;
                }
                return Saved::Deleted;
            }
            Err(e @ (RepoError::Unavailable(_) | RepoError::Unexpected(_)))
                if started.elapsed() < SAVE_RETRY_FOR =>
            {
                tracing::warn!(error = %e, attempt, answer = %finished.message, "saving an answer failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SAVE_RETRY_MAX_DELAY);
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, answer = %finished.message, "the answer could not be saved");
                return Saved::Failed;
            }
        }
    }
}
