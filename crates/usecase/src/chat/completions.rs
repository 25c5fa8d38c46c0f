//! Completions for clients of the OpenAI-compatible surface: the caller sends the whole
//! conversation and gets the model's answer. The call is a generation like any other — it
//! takes a concurrency slot and leaves a generation record for its caller — and is stored as
//! a conversation only when the caller names a chat: then the last question and the answer
//! are appended to that chat's tree (a streamed answer then runs as the chat's generation,
//! surviving its client like every other).

use tokio::sync::mpsc;

use super::*;
use crate::llm::{Completion, RawJson};

/// Where a completion is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTarget {
    /// A new chat (its system prompt: the conversation's first system message).
    New,
    /// This chat of the caller's: the question goes under its current leaf.
    Existing(ChatId),
}

/// A completion to store in a chat.
#[derive(Debug, Clone)]
pub struct StoreIn {
    /// Which chat.
    pub chat: ChatTarget,
    /// The question stored (the conversation's last message, the user's).
    pub question: MessageContent,
}

/// A completion request.
#[derive(Debug, Clone)]
pub struct CompletionInput {
    /// The model (validated against the catalogue).
    pub model: ModelId,
    /// The conversation, sent as given.
    pub prompt: GivenPrompt,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Answer cap.
    pub max_tokens: Option<u32>,
    /// Store the exchange in a chat; `None` stores only the generation record.
    pub store: Option<StoreIn>,
}

/// A blocking completion.
#[derive(Debug, Clone)]
pub struct CompletionReply {
    /// The answer as the provider sent it.
    pub completion: Completion,
    /// The model that answered.
    pub model: ModelId,
    /// The chat and the stored answer, when stored.
    pub stored: Option<(ChatId, MessageId)>,
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionEvent {
    /// New text.
    Delta(String),
    /// A delta's other members (tool-call fragments), as the provider sent them.
    Extra(RawJson),
    /// The end of a complete answer.
    End {
        /// Why generation stopped.
        finish_reason: Option<String>,
        /// Tokens used, when reported.
        usage: Option<TokenUsage>,
    },
    /// The answer ended without completing (the last item).
    Failed(GenerationFailure),
}

/// A streamed completion: events until [`CompletionEvent::End`] or
/// [`CompletionEvent::Failed`]. Dropping an unstored one cancels the provider call; a stored
/// one follows its chat's generation, which the disconnect policy governs.
#[derive(Debug)]
pub struct CompletionStream {
    source: Source,
    /// The chat and the answer, when stored.
    pub stored: Option<(ChatId, MessageId)>,
    /// The model answering.
    pub model: ModelId,
}

#[derive(Debug)]
enum Source {
    Chat(Subscription),
    Call(mpsc::Receiver<CompletionEvent>),
}

impl CompletionStream {
    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<CompletionEvent> {
        match &mut self.source {
            Source::Call(events) => events.recv().await,
            Source::Chat(subscription) => loop {
                let (_, event) = subscription.next().await?;
                match &*event {
                    GenerationEvent::Start { .. } => {}
                    GenerationEvent::Chunk(text) => {
                        return Some(CompletionEvent::Delta(text.clone()));
                    }
                    GenerationEvent::Final(end) => {
                        return Some(CompletionEvent::End {
                            finish_reason: end.finish_reason.clone(),
                            usage: end.usage,
                        });
                    }
                    GenerationEvent::Error(failure) => {
                        return Some(CompletionEvent::Failed(failure.clone()));
                    }
                    GenerationEvent::Done => return None,
                }
            },
        }
    }
}

/// Inbound port of completions.
pub trait CompletionsUseCase: Send + Sync + 'static {
    /// A blocking completion.
    ///
    /// # Errors
    /// [`ChatError::UnknownModel`], [`ChatError::Busy`], [`ChatError::Llm`],
    /// [`ChatError::ChatNotFound`] (a chat of someone else's too), storage failures.
    fn complete(
        &self,
        owner: UserId,
        input: CompletionInput,
    ) -> impl Future<Output = Result<CompletionReply, ChatError>> + Send;

    /// A streamed completion. An unstored one fails here when the provider cannot open its
    /// stream; a stored one reports that as its first event, as chat streams do.
    ///
    /// # Errors
    /// As [`Self::complete`], and [`ChatError::GenerationRunning`] for a stored one.
    fn complete_stream(
        &self,
        owner: UserId,
        input: CompletionInput,
    ) -> impl Future<Output = Result<CompletionStream, ChatError>> + Send;
}

/// Events buffered between an unstored stream's task and its client.
const EVENTS_BUFFERED: usize = 64;

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
{
    /// The chat a stored completion goes to, and whether it was created for it.
    async fn target(
        &self,
        owner: UserId,
        input: &CompletionInput,
    ) -> Result<(ChatId, bool), ChatError> {
        match input.store.as_ref().map(|s| s.chat) {
            Some(ChatTarget::Existing(chat)) => Ok((chat, false)),
            Some(ChatTarget::New) | None => {
                let system_prompt = input
                    .prompt
                    .messages
                    .iter()
                    .find(|m| m.role == Role::System)
                    .and_then(|m| SystemPrompt::parse(m.content.clone()).ok());
                let chat = self
                    .create_chat(
                        owner,
                        NewChatInput {
                            model_id: Some(input.model.clone()),
                            system_prompt,
                            ..NewChatInput::default()
                        },
                    )
                    .await?;
                Ok((chat.id, true))
            }
        }
    }

    /// After a stored completion failed: a chat created for it that holds no question yet
    /// (the call was refused at admission: quota, cap, limits) is removed again, so a refusal
    /// leaves nothing behind. One whose question was stored keeps it, as every chat does.
    async fn unless_refused<T>(
        &self,
        owner: UserId,
        (chat, created): (ChatId, bool),
        outcome: Result<T, ChatError>,
    ) -> Result<T, ChatError> {
        if created
            && outcome.is_err()
            && let Ok(found) = self.get_chat(owner, chat).await
            && found.current_leaf_id == found.root_id
            && let Err(e) = self.repo.delete_chat(owner, chat).await
        {
            tracing::warn!(error = %e, "a chat made for a refused completion was not removed");
        }
        outcome
    }

    /// The send of a stored completion.
    fn send_input(input: CompletionInput, question: MessageContent) -> SendInput {
        SendInput {
            content: question,
            parent: None,
            options: GenerationOptions {
                model_id: Some(input.model),
                temperature: input.temperature,
                max_tokens: input.max_tokens,
                prompt: Some(input.prompt),
                preset_id: None,
            },
        }
    }

    /// The request of an unstored completion, its model checked and its generation admitted
    /// (within quota, a concurrency slot held).
    async fn admitted_call(
        &self,
        owner: UserId,
        input: CompletionInput,
    ) -> Result<(CompletionRequest, domain::ModelInfo, Slot), ChatError> {
        let info = self.check_model(&input.model).await?;
        let slot = self.admit(owner).await?;
        Ok((
            CompletionRequest {
                model: input.model,
                messages: input.prompt.messages,
                temperature: input.temperature,
                max_tokens: input.max_tokens,
                passthrough: input.prompt.passthrough,
            },
            info,
            slot,
        ))
    }

    /// The recorder of an unstored call of `owner`'s whose prompt is `prompt_bytes` long.
    fn recorder(
        &self,
        owner: UserId,
        info: domain::ModelInfo,
        prompt_bytes: usize,
    ) -> CallRecorder<C> {
        CallRecorder {
            owner,
            provider: self.provider.clone(),
            clock: Arc::clone(&self.clock),
            info,
            prompt_bytes,
        }
    }
}

/// Stores the record of an unstored call; a failure is logged (the caller has its answer).
pub(super) async fn keep_record<R: ChatRepository>(repo: &R, record: GenerationRecord) {
    if let Err(e) = repo.record_generation(record).await {
        tracing::error!(error = %e, "the record of a completion could not be saved");
    }
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator> CompletionsUseCase
    for ChatService<R, L, M, C, I>
{
    async fn complete(
        &self,
        owner: UserId,
        input: CompletionInput,
    ) -> Result<CompletionReply, ChatError> {
        if let Some(store) = input.store.clone() {
            let target = self.target(owner, &input).await?;
            let chat = target.0;
            let sent = self
                .send(owner, chat, Self::send_input(input, store.question))
                .await;
            let reply = self.unless_refused(owner, target, sent).await?;
            return Ok(CompletionReply {
                stored: Some((chat, reply.answer.id)),
                model: reply.model,
                completion: Completion {
                    content: reply.answer.content,
                    usage: reply.usage,
                    finish_reason: reply.finish_reason,
                    provider: None,
                    cost: None,
                    extra: None,
                },
            });
        }
        let (request, info, slot) = self.admitted_call(owner, input).await?;
        let prompt_bytes = request.prompt_bytes();
        let started = Instant::now();
        let completion = self.within_deadline(self.start_completion(request)).await;
        slot.release().await;
        metrics::counter!(
            "arbor_generations_total",
            "outcome" => if completion.is_ok() { "complete" } else { "failed" },
            "mode" => "completion"
        )
        .increment(1);
        let completion = completion.map_err(ChatError::Llm)?;
        let model = info.id.clone();
        let record = self.recorder(owner, info, prompt_bytes).record_of(
            (started, None),
            Some(completion.content.len()),
            StreamEnd {
                finish_reason: completion.finish_reason.clone(),
                usage: completion.usage,
                provider: completion.provider.clone(),
                cost: completion.cost,
            },
        );
        keep_record(&*self.repo, record).await;
        Ok(CompletionReply {
            completion,
            model,
            stored: None,
        })
    }

    async fn complete_stream(
        &self,
        owner: UserId,
        input: CompletionInput,
    ) -> Result<CompletionStream, ChatError> {
        if let Some(store) = input.store.clone() {
            let target = self.target(owner, &input).await?;
            let chat = target.0;
            let model = input.model.clone();
            let sent = self
                .send_stream(owner, chat, Self::send_input(input, store.question))
                .await;
            let subscription = self.unless_refused(owner, target, sent).await?;
            return Ok(CompletionStream {
                stored: Some((chat, subscription.message())),
                source: Source::Chat(subscription),
                model,
            });
        }
        let (request, info, slot) = self.admitted_call(owner, input).await?;
        let prompt_bytes = request.prompt_bytes();
        let started = Instant::now();
        let opened = self.within_deadline(self.start_stream(request)).await;
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(e) => {
                slot.release().await;
                return Err(ChatError::Llm(e));
            }
        };
        let (events, receiver) = mpsc::channel(EVENTS_BUFFERED);
        let model = info.id.clone();
        let call = CallTask {
            upstream,
            events,
            started,
            deadline: self.generations.limits().deadline,
        };
        let repo = Arc::clone(&self.repo);
        let recorder = self.recorder(owner, info, prompt_bytes);
        self.generations.spawn_background(async move {
            let (record, last) = recorder.record(call.run().await);
            keep_record(&*repo, record).await;
            slot.release().await;
            if let Some((events, last)) = last {
                // The record is stored before the client hears of the end.
                let _ = events.send(last).await;
            }
        });
        Ok(CompletionStream {
            source: Source::Call(receiver),
            stored: None,
            model,
        })
    }
}

/// An unstored stream's provider call, forwarding to its client.
struct CallTask {
    upstream: crate::llm::CompletionStream,
    events: mpsc::Sender<CompletionEvent>,
    started: Instant,
    deadline: Duration,
}

/// What an unstored stream's task knows at its end.
struct CallOutcome {
    events: mpsc::Sender<CompletionEvent>,
    started: Instant,
    first_token: Option<Instant>,
    /// The answer's bytes received (text and tool calls).
    bytes: usize,
    /// The end (`Ok`) or the failure; `None` when the client left first.
    end: Option<Result<StreamEnd, GenerationFailure>>,
}

impl CallTask {
    /// Forwards the provider's events until the end, a failure, the deadline, or the
    /// client leaving (which drops the provider stream: the call is cancelled).
    async fn run(mut self) -> CallOutcome {
        let mut first_token = None;
        let mut bytes = 0usize;
        let until = tokio::time::Instant::from_std(self.started) + self.deadline;
        let end = loop {
            let item = tokio::select! {
                item = std::future::poll_fn(|cx| self.upstream.as_mut().poll_next(cx)) => item,
                () = tokio::time::sleep_until(until) => break Some(Err(GenerationFailure::Deadline)),
                () = self.events.closed() => break None,
            };
            let event = match item {
                None => {
                    break Some(Err(GenerationFailure::Provider(LlmError::BrokenStream(
                        "the stream ended without a finish".into(),
                    ))));
                }
                Some(Err(e)) => break Some(Err(GenerationFailure::Provider(e))),
                Some(Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                    provider,
                    cost,
                })) => {
                    break Some(Ok(StreamEnd {
                        finish_reason,
                        usage,
                        provider,
                        cost,
                    }));
                }
                Some(Ok(StreamEvent::Delta(text))) => {
                    first_token.get_or_insert_with(Instant::now);
                    bytes += text.len();
                    if bytes > ANSWER_MAX_BYTES {
                        break Some(Ok(StreamEnd {
                            finish_reason: Some("length".into()),
                            usage: None,
                            provider: None,
                            cost: None,
                        }));
                    }
                    CompletionEvent::Delta(text)
                }
                Some(Ok(StreamEvent::Extra(extra))) => {
                    first_token.get_or_insert_with(Instant::now);
                    // Tool calls are answer text too, for an estimate of what was used.
                    bytes += extra.as_str().len();
                    CompletionEvent::Extra(extra)
                }
            };
            if self.events.send(event).await.is_err() {
                break None;
            }
        };
        // Dropping the provider stream here closes the upstream request.
        drop(self.upstream);
        CallOutcome {
            events: self.events,
            started: self.started,
            first_token,
            bytes,
            end,
        }
    }
}

/// Writes the record of an unstored stream.
struct CallRecorder<C> {
    owner: UserId,
    provider: String,
    clock: Arc<C>,
    info: domain::ModelInfo,
    prompt_bytes: usize,
}

impl<C: Clock> CallRecorder<C> {
    /// The record, and the last event for the client (when it is still there).
    fn record(
        &self,
        done: CallOutcome,
    ) -> (
        GenerationRecord,
        Option<(mpsc::Sender<CompletionEvent>, CompletionEvent)>,
    ) {
        let (end, last) = match done.end {
            Some(Ok(end)) => {
                let last = CompletionEvent::End {
                    finish_reason: end.finish_reason.clone(),
                    usage: end.usage,
                };
                (end, Some(last))
            }
            Some(Err(failure)) => (
                StreamEnd {
                    finish_reason: Some(failure_reason(&failure).into()),
                    usage: None,
                    provider: None,
                    cost: None,
                },
                Some(CompletionEvent::Failed(failure)),
            ),
            None => (
                StreamEnd {
                    finish_reason: Some("cancelled".into()),
                    usage: None,
                    provider: None,
                    cost: None,
                },
                None,
            ),
        };
        let answered = done.first_token.map(|_| done.bytes);
        let record = self.record_of((done.started, done.first_token), answered, end);
        (record, last.map(|l| (done.events, l)))
    }

    /// The record of a call that started (and sent its first token) when said, answered
    /// `answer_bytes` (`None`: the provider sent nothing) and ended so.
    fn record_of(
        &self,
        (started, first_token): (Instant, Option<Instant>),
        answer_bytes: Option<usize>,
        end: StreamEnd,
    ) -> GenerationRecord {
        end.record(
            &CallOf {
                owner: self.owner,
                model: &self.info.id,
                pricing: &self.info.pricing,
                provider: &self.provider,
                started,
                first_token,
                text_bytes: answer_bytes.map(|answer| (self.prompt_bytes, answer)),
            },
            (None, None),
            domain::GenerationKind::Completion,
            self.clock.now(),
        )
    }
}
