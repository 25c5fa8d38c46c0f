//! Automatic titles: after a chat's first answer, the model (or the configured title model)
//! is asked for a short title in the background; the fallback is the first question. A title
//! the user set is never overwritten.

use super::*;

/// How long a title may take before the chat keeps its fallback.
const TITLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A chat to title after its first answer.
#[derive(Debug)]
pub(super) struct TitleJob {
    pub(super) owner: UserId,
    pub(super) chat: ChatId,
    pub(super) model: ModelId,
    pub(super) conversation: Vec<(Role, String)>,
    /// The title model's prices when known (it is the answering model), for its record.
    pub(super) pricing: domain::Pricing,
    /// The provider's name in the record when it reports none.
    pub(super) provider: String,
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
{
    /// A title job when this answer is the chat's first: the chat has no title and the path
    /// holds no answer yet.
    pub(super) fn title_job(&self, chat: &Chat, path: &[Message], plan: &Plan) -> Option<TitleJob> {
        let first_answer = !path.iter().any(|m| m.role == Role::Assistant);
        (self.titles && chat.title.is_none() && !chat.title_set_by_user && first_answer).then(
            || TitleJob {
                owner: chat.owner,
                chat: chat.id,
                model: self
                    .title_model
                    .clone()
                    .unwrap_or_else(|| plan.model.clone()),
                conversation: path.iter().map(|m| (m.role, m.content.clone())).collect(),
                // The answering model's prices apply only when it writes the title too.
                pricing: if self.title_model.is_none() {
                    plan.info.pricing
                } else {
                    domain::Pricing::default()
                },
                provider: self.provider.clone(),
            },
        )
    }

    /// Generates a title in the background; the caller never waits for it.
    pub(super) fn spawn_title(&self, job: TitleJob, answer: String) {
        let repo = Arc::clone(&self.repo);
        let llm = Arc::clone(&self.llm);
        let clock = Arc::clone(&self.clock);
        self.generations
            .spawn_background(write_title((repo, llm, clock), job, answer));
    }
}

/// Asks the model for a title and stores it (or the fallback) unless the chat got one
/// meanwhile. Failures are logged, never surfaced.
pub(super) async fn write_title<R: ChatRepository, L: LlmGateway, C: Clock>(
    (repo, llm, clock): (Arc<R>, Arc<L>, Arc<C>),
    job: TitleJob,
    answer: String,
) {
    let mut conversation: Vec<(Role, &str)> = job
        .conversation
        .iter()
        .map(|(role, text)| (*role, text.as_str()))
        .collect();
    conversation.push((Role::Assistant, &answer));
    let request = CompletionRequest {
        model: job.model.clone(),
        messages: vec![PromptMessage {
            role: Role::User,
            content: domain::title_prompt(&conversation),
        }],
        temperature: Some(0.3),
        max_tokens: Some(60),
        passthrough: None,
    };
    let prompt_bytes = request.prompt_bytes();
    let started = Instant::now();
    let (generated, record) = match tokio::time::timeout(TITLE_TIMEOUT, llm.complete(request)).await
    {
        Ok(Ok(c)) => {
            let title = domain::clean_title(&c.content);
            // The title's cost is the user's too: it is recorded, marked as a title.
            let end = StreamEnd {
                finish_reason: c.finish_reason,
                usage: c.usage,
                provider: c.provider,
                cost: c.cost,
            };
            let call = CallOf {
                owner: job.owner,
                model: &job.model,
                pricing: &job.pricing,
                provider: &job.provider,
                started,
                first_token: None,
                text_bytes: Some((prompt_bytes, c.content.len())),
            };
            let record = end.record(
                &call,
                (Some(job.chat), None),
                domain::GenerationKind::Title,
                clock.now(),
            );
            (title, Some(record))
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, chat = %job.chat, "title generation failed; using the fallback");
            (None, None)
        }
        Err(_) => {
            tracing::info!(chat = %job.chat, "title generation timed out; using the fallback");
            (None, None)
        }
    };
    if let Some(title) = generated.or_else(|| domain::fallback_title(&conversation))
        && let Err(e) = repo.set_generated_title(job.owner, job.chat, title).await
    {
        tracing::warn!(error = %e, chat = %job.chat, "the generated title could not be saved");
    }
    // Recorded last: once the record is there, the title has been offered to the chat.
    if let Some(record) = record
        && let Err(e) = repo.record_generation(record).await
    {
        tracing::warn!(error = %e, chat = %job.chat, "the title's record could not be saved");
    }
}
