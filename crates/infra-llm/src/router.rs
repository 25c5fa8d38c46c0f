//! Several providers behind one [`LlmGateway`]: each model is routed to the providers that
//! serve it, in priority order; a call that fails before its first byte (connection refused,
//! 429, 5xx, a timeout — after that provider's own retries) falls back to the next one, and
//! the record names the provider that answered. An answer that has started streaming is never
//! moved to another provider. The model list is the providers' lists merged (the first, by
//! priority, wins for a model several list); a provider that cannot answer contributes its
//! last list, and the refresh fails only when none answers.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use domain::{ModelId, ModelInfo};
use futures::StreamExt;
use usecase::llm::{
    Completion, CompletionRequest, CompletionStream, LlmError, LlmGateway, StreamEvent,
};

use crate::OpenAiGateway;

/// One provider of a [`ProviderRouter`].
#[derive(Debug)]
pub struct Provider {
    /// Its name in generation records.
    pub name: String,
    /// Model id patterns it serves: `prefix/` or `prefix*` (any id starting so), `*` (all),
    /// or an exact id. Empty: the models of its own list.
    pub models: Vec<String>,
    /// Lower first.
    pub priority: u32,
    /// Its client (its own base URL, key, timeouts, concurrency cap and headers).
    pub gateway: OpenAiGateway,
}

#[derive(Debug)]
struct Route {
    provider: Provider,
    /// What its own list had at the last refresh (for providers without patterns).
    listed: RwLock<HashSet<ModelId>>,
    /// Its last list, served while it cannot answer (so its models do not turn inactive
    /// because it was briefly down).
    last_list: RwLock<Option<Vec<ModelInfo>>>,
}

impl Route {
    fn serves(&self, model: &ModelId) -> bool {
        let id = model.as_str();
        if self.provider.models.is_empty() {
            return self
                .listed
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(model);
        }
        self.provider.models.iter().any(|p| {
            p == "*"
                || p == id
                || p.strip_suffix('*')
                    .is_some_and(|prefix| id.starts_with(prefix))
                || (p.ends_with('/') && id.starts_with(p.as_str()))
        })
    }
}

/// The providers, in priority order. Clones share them.
#[derive(Debug, Clone)]
pub struct ProviderRouter {
    routes: Arc<Vec<Route>>,
}

/// A failure worth trying the next provider for: nothing was answered yet.
fn before_first_byte(e: &LlmError) -> bool {
    matches!(
        e,
        LlmError::Unavailable { .. } | LlmError::RateLimited { .. } | LlmError::Timeout
    )
}

impl ProviderRouter {
    /// Routes over `providers` (sorted by priority; a stable sort keeps the given order for
    /// equal priorities).
    #[must_use]
    pub fn new(mut providers: Vec<Provider>) -> Self {
        providers.sort_by_key(|p| p.priority);
        Self {
            routes: Arc::new(
                providers
                    .into_iter()
                    .map(|provider| Route {
                        provider,
                        listed: RwLock::new(HashSet::new()),
                        last_list: RwLock::new(None),
                    })
                    .collect(),
            ),
        }
    }

    /// Upstream calls in flight, all providers together.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.routes
            .iter()
            .map(|r| r.provider.gateway.in_flight())
            .sum()
    }

    /// The routes for `model`, best first; all of them when none claims it (the first
    /// provider then says whether it knows the model).
    fn candidates(&self, model: &ModelId) -> Vec<&Route> {
        let serving: Vec<&Route> = self.routes.iter().filter(|r| r.serves(model)).collect();
        if serving.is_empty() {
            self.routes.iter().collect()
        } else {
            serving
        }
    }

    /// The first answer of `call` on the routes for `model`, trying the next route while
    /// a call fails before its first byte; with the route that answered.
    async fn first_answer<'a, T, F, Fut>(
        &'a self,
        model: &ModelId,
        call: F,
    ) -> Result<(T, &'a Route), LlmError>
    where
        F: Fn(&'a OpenAiGateway) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let routes = self.candidates(model);
        let last = routes.len().saturating_sub(1);
        for (i, route) in routes.into_iter().enumerate() {
            match call(&route.provider.gateway).await {
                Ok(answer) => return Ok((answer, route)),
                Err(e) if before_first_byte(&e) && i < last => {
                    tracing::warn!(provider = %route.provider.name, error = %e, "provider failed before answering; trying the next one");
                    metrics::counter!("arbor_provider_fallbacks_total", "from" => route.provider.name.clone()).increment(1);
                }
                Err(e) => return Err(e),
            }
        }
        Err(LlmError::Unavailable { retry_after: None })
    }
}

/// The provider name to record: the route's, with the upstream it reported when that is
/// another name.
fn label(route: &str, upstream: Option<String>) -> String {
    match upstream {
        Some(up) if up != route => format!("{route}/{up}"),
        _ => route.to_owned(),
    }
}

impl LlmGateway for ProviderRouter {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let (mut answer, route) = self
            .first_answer(&request.model, |gateway| gateway.complete(request.clone()))
            .await?;
        // With one provider, the record keeps what the upstream reported, as before.
        if self.routes.len() > 1 {
            answer.provider = Some(label(&route.provider.name, answer.provider.take()));
        }
        Ok(answer)
    }

    async fn stream(&self, request: CompletionRequest) -> Result<CompletionStream, LlmError> {
        let (stream, route) = self
            .first_answer(&request.model, |gateway| gateway.stream(request.clone()))
            .await?;
        if self.routes.len() == 1 {
            return Ok(stream);
        }
        let name = route.provider.name.clone();
        Ok(Box::pin(stream.map(move |item| match item {
            Ok(StreamEvent::Done {
                finish_reason,
                usage,
                provider,
                cost,
            }) => Ok(StreamEvent::Done {
                finish_reason,
                usage,
                provider: Some(label(&name, provider)),
                cost,
            }),
            other => other,
        })))
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut merged: Vec<ModelInfo> = Vec::new();
        let mut seen = HashSet::new();
        let mut answered = false;
        let mut failure = None;
        for route in self.routes.iter() {
            let models = match route.provider.gateway.list_models().await {
                Ok(models) => {
                    answered = true;
                    *route
                        .last_list
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(models.clone());
                    *route
                        .listed
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        models.iter().map(|m| m.id.clone()).collect();
                    models
                }
                Err(e) => {
                    // Its last list stands in (none yet: its models wait for it to answer).
                    tracing::warn!(provider = %route.provider.name, error = %e, "a provider's model list failed; using its last one");
                    failure = Some(e);
                    route
                        .last_list
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                        .unwrap_or_default()
                }
            };
            for m in models {
                if route.serves(&m.id) && seen.insert(m.id.clone()) {
                    merged.push(m);
                }
            }
        }
        match failure {
            Some(e) if !answered => Err(e),
            _ => Ok(merged),
        }
    }
}
