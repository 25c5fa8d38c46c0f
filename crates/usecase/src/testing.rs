//! In-memory fakes of every port, honouring the same contracts as the real adapters
//! (ownership scoping, atomicity, tree invariants). For unit tests of this crate and the
//! layers above it; adapters are tested against real databases instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use domain::{
    Chat, ChatId, ConversationTree, GenerationRecord, Message, MessageId, MessageStatus, ModelId,
    ModelInfo, PromptTemplate, Role, TemplateId, Timestamp, User, UserId, Username,
};

use crate::auth::{
    AccessClaims, AccessToken, ApiKeyRecord, CredentialRepository, CryptoError, PasswordHasher,
    RefreshSuccessor, RefreshTokenRecord, Rotation, TokenCodec, TokenRejection,
};
use crate::ports::{
    ChatRepository, Clock, DeletedSubtree, Entity, HealthCheck, IdGenerator,
    ModelCatalogRepository, NewChat, NewMessage, NewUser, RepoError, TemplateRepository,
    UserCredentials, UserRepository,
};

mod store;

pub use store::InMemoryStore;

/// The resident set size in MiB of process `pid`, or of this one (Linux `/proc`; 0 where it
/// cannot be read), for the reliability suite's memory bounds.
#[must_use]
pub fn resident_mib(pid: Option<u32>) -> f64 {
    let process = pid.map_or_else(|| "self".to_owned(), |pid| pid.to_string());
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A clock that only moves when told to (by one microsecond per reading, so times are unique).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock starting at `start`.
    #[must_use]
    pub const fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.as_unix_micros()))
    }

    /// Moves the clock forward.
    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.0.fetch_add(1, Ordering::SeqCst))
    }
}

/// Ids 1, 2, 3, …
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> u128 {
        u128::from(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// A transparent "hasher": `plain:<password>`. Fast and obviously not for production.
#[derive(Debug, Default)]
pub struct PlainHasher;

impl PasswordHasher for PlainHasher {
    async fn hash(&self, password: &domain::Password) -> Result<String, CryptoError> {
        Ok(format!("plain:{}", password.expose()))
    }

    async fn verify(
        &self,
        password: &domain::Password,
        hash: Option<&str>,
    ) -> Result<bool, CryptoError> {
        Ok(hash == Some(format!("plain:{}", password.expose()).as_str()))
    }
}

/// Unsigned, readable tokens `user:<id>:<exp-micros>`; secrets are a counter; digests prefix `d:`.
#[derive(Debug, Default)]
pub struct ReadableTokens {
    counter: AtomicU64,
}

impl ReadableTokens {
    /// Access token lifetime of the fake, in seconds.
    pub const TTL_SECS: u64 = 60;
}

impl TokenCodec for ReadableTokens {
    fn issue_access(&self, user: &User, now: Timestamp) -> Result<AccessToken, CryptoError> {
        let exp = now
            .plus_micros(Self::TTL_SECS as i64 * 1_000_000)
            .as_unix_micros();
        Ok(AccessToken {
            token: format!("user:{}:{exp}:{}", user.id, user.token_epoch),
            expires_in: Self::TTL_SECS,
        })
    }

    fn verify_access(&self, token: &str, now: Timestamp) -> Result<AccessClaims, TokenRejection> {
        let mut parts = token.split(':');
        let (Some("user"), Some(id), Some(exp), Some(epoch)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRejection::Invalid);
        };
        let exp: i64 = exp.parse().map_err(|_| TokenRejection::Invalid)?;
        if exp <= now.as_unix_micros() {
            return Err(TokenRejection::Expired);
        }
        Ok(AccessClaims {
            user: id.parse().map_err(|_| TokenRejection::Invalid)?,
            epoch: epoch.parse().map_err(|_| TokenRejection::Invalid)?,
        })
    }

    fn random_secret(&self) -> Result<String, CryptoError> {
        // The count first: an API key's lookup part is the secret's first characters, so
        // each key gets its own.
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{n:012}secret{n:028}"))
    }

    fn digest(&self, secret: &str) -> String {
        format!("d:{secret}")
    }
}

/// A scripted [`crate::llm::LlmGateway`]: answers `echo: <last message>`, serves a settable
/// model list, can be made to fail, and counts calls. Clones share their state.
#[derive(Debug, Default, Clone)]
pub struct FakeLlm {
    models: std::sync::Arc<Mutex<Vec<ModelInfo>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `list_models` calls so far.
    pub model_calls: std::sync::Arc<AtomicU64>,
}

/// A free catalogue model `id` with a context of `context_length` tokens.
///
/// # Panics
/// When `id` is not a model id.
#[must_use]
#[expect(
    clippy::expect_used,
    reason = "test support: a bad fixture id is the test's bug"
)]
pub fn free_model(id: &str, context_length: u32) -> ModelInfo {
    ModelInfo {
        id: domain::ModelId::parse(id).expect("a model id"),
        name: id.to_owned(),
        description: None,
        context_length: Some(context_length),
        pricing: domain::Pricing::default(),
        input_modalities: vec![],
        output_modalities: vec![],
        created: None,
        fetched_at: Timestamp::from_unix_micros(0),
    }
}

impl FakeLlm {
    /// A provider serving `models`.
    #[must_use]
    pub fn with_models(models: Vec<ModelInfo>) -> Self {
        Self {
            models: std::sync::Arc::new(Mutex::new(models)),
            ..Self::default()
        }
    }

    /// Makes every call fail with `Unavailable` (or recover).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Replaces the model list.
    pub fn set_models(&self, models: Vec<ModelInfo>) {
        if let Ok(mut m) = self.models.lock() {
            *m = models;
        }
    }

    fn check(&self) -> Result<(), crate::llm::LlmError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(crate::llm::LlmError::Unavailable { retry_after: None });
        }
        Ok(())
    }
}

impl crate::llm::LlmGateway for FakeLlm {
    async fn complete(
        &self,
        request: crate::llm::CompletionRequest,
    ) -> Result<crate::llm::Completion, crate::llm::LlmError> {
        self.check()?;
        let last = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        Ok(crate::llm::Completion {
            content: format!("echo: {last}"),
            usage: None,
            finish_reason: Some("stop".into()),
            provider: None,
            cost: None,
            extra: None,
        })
    }

    async fn stream(
        &self,
        request: crate::llm::CompletionRequest,
    ) -> Result<crate::llm::CompletionStream, crate::llm::LlmError> {
        let answer = self.complete(request).await?;
        let mut items: Vec<Result<crate::llm::StreamEvent, crate::llm::LlmError>> = answer
            .content
            .split_inclusive(' ')
            .map(|w| Ok(crate::llm::StreamEvent::Delta(w.to_owned())))
            .collect();
        if answer.content.ends_with(PANIC_AFTER_THIS) {
            // A broken adapter: the text so far, then a panic where the end should be.
            return Ok(Box::pin(PanicAtEnd(VecStream(items.into_iter()))));
        }
        items.push(Ok(crate::llm::StreamEvent::Done {
            finish_reason: answer.finish_reason,
            usage: None,
            provider: None,
            cost: None,
        }));
        Ok(Box::pin(VecStream(items.into_iter())))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, crate::llm::LlmError> {
        self.model_calls.fetch_add(1, Ordering::SeqCst);
        // Yield so concurrent callers really overlap with this call.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.check()?;
        Ok(self.models.lock().map(|m| m.clone()).unwrap_or_default())
    }
}

/// A question ending with this makes [`FakeLlm`]'s stream panic after the answer's text.
pub const PANIC_AFTER_THIS: &str = "then panic";

struct VecStream<I>(I);

/// Panics where the stream would end.
struct PanicAtEnd<S>(S);

impl<S: futures_core::Stream + Unpin> futures_core::Stream for PanicAtEnd<S> {
    type Item = S::Item;

    #[expect(
        clippy::panic,
        reason = "test support: standing in for a broken adapter"
    )]
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match std::pin::Pin::new(&mut self.0).poll_next(cx) {
            std::task::Poll::Ready(None) => panic!("a broken provider adapter"),
            other => other,
        }
    }
}

impl<I: Iterator + Unpin> futures_core::Stream for VecStream<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
