//! The model catalogue: the provider's model list cached in the database, refreshed by upsert
//! when older than its TTL (one refresh at a time, whatever the number of callers), served
//! stale when the provider is down; and each user's default model.

use std::sync::Arc;
use std::time::Duration;

use domain::{ModelId, ModelInfo, Page, PageRequest, Timestamp, UserId};
use quick_cache::sync::Cache;
use tokio::sync::Mutex;

use crate::llm::{LlmError, LlmGateway};
use crate::ports::{Clock, ModelCatalogRepository, RepoError};

pub use crate::ports::settings::{SettingsRepository, UserSettings};

/// Why a catalogue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such model in the catalogue.
    #[error("model {0} is not in the catalogue")]
    UnknownModel(ModelId),
    /// The catalogue is empty and the provider cannot be reached.
    #[error("the model catalogue is unavailable")]
    Unavailable(#[source] LlmError),
    /// Storage failure.
    #[error("storage failure")]
    Storage(#[from] RepoError),
}

/// A page of models and whether it may be out of date.
#[derive(Debug, Clone)]
pub struct ModelPage {
    /// The page.
    pub page: Page<ModelInfo>,
    /// True when the provider could not be asked for a fresh list.
    pub stale: bool,
}

/// Inbound port of the catalogue capability.
pub trait CatalogUseCase: Send + Sync + 'static {
    /// Models whose id or name contains `query` (case-insensitively), by id.
    ///
    /// # Errors
    /// [`CatalogError::Unavailable`] when nothing is cached and the provider is down.
    fn list_models(
        &self,
        query: Option<String>,
        page: PageRequest,
    ) -> impl Future<Output = Result<ModelPage, CatalogError>> + Send;

    /// One model and whether it may be out of date.
    ///
    /// # Errors
    /// [`CatalogError::UnknownModel`].
    fn get_model(
        &self,
        id: &ModelId,
    ) -> impl Future<Output = Result<(ModelInfo, bool), CatalogError>> + Send;

    /// The caller's settings.
    ///
    /// # Errors
    /// Storage failures.
    fn settings(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<UserSettings, CatalogError>> + Send;

    /// Saves the caller's settings; the default model must be in the catalogue.
    ///
    /// # Errors
    /// [`CatalogError::UnknownModel`].
    fn update_settings(
        &self,
        user: UserId,
        settings: UserSettings,
    ) -> impl Future<Output = Result<UserSettings, CatalogError>> + Send;
}

#[derive(Debug)]
struct Snapshot {
    models: Vec<ModelInfo>,
    stale: bool,
    /// When this process last asked the provider (successfully or not).
    checked_at: Timestamp,
}

/// The canonical [`CatalogUseCase`].
pub struct CatalogService<R, L, C> {
    repo: R,
    llm: L,
    clock: C,
    ttl: Duration,
    /// The whole list under one key: bounded, and replaced wholesale on refresh.
    hot: Cache<(), Arc<Snapshot>>,
    refresh: Mutex<()>,
}

impl<R, L, C> std::fmt::Debug for CatalogService<R, L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<R, L, C> CatalogService<R, L, C>
where
    R: ModelCatalogRepository + SettingsRepository,
    L: LlmGateway,
    C: Clock,
{
    /// Entries older than `ttl` are refreshed from the provider.
    pub fn new(repo: R, llm: L, clock: C, ttl: Duration) -> Self {
        Self {
            repo,
            llm,
            clock,
            ttl,
            hot: Cache::new(1),
            refresh: Mutex::new(()),
        }
    }

    fn ttl_micros(&self) -> i64 {
        i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX)
    }

    fn fresh(&self, snapshot: &Snapshot, now: Timestamp) -> bool {
        // A stale snapshot is retried no more than once every 30 s (or TTL, if shorter).
        let retry = if snapshot.stale {
            self.ttl_micros().min(30_000_000)
        } else {
            self.ttl_micros()
        };
        now.as_unix_micros() - snapshot.checked_at.as_unix_micros() < retry
    }

    fn cached_fresh(&self) -> Option<Arc<Snapshot>> {
        self.hot
            .get(&())
            .filter(|s| self.fresh(s, self.clock.now()))
    }

    /// The current list, refreshing it first when expired. One refresh at a time: callers
    /// arriving during a refresh wait for it and then use its result.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, CatalogError> {
        if let Some(s) = self.cached_fresh() {
            return Ok(s);
        }
        let _guard = self.refresh.lock().await;
        if let Some(s) = self.cached_fresh() {
            return Ok(s);
        }
        let now = self.clock.now();
        let stored = self.repo.list_models().await?;
        let newest = stored.iter().map(|m| m.fetched_at).max();
        if let Some(newest) = newest
            && now.as_unix_micros() - newest.as_unix_micros() < self.ttl_micros()
        {
            // Another process (a replica) refreshed recently.
            let s = Arc::new(Snapshot {
                models: stored,
                stale: false,
                checked_at: newest,
            });
            self.hot.insert((), Arc::clone(&s));
            return Ok(s);
        }
        let snapshot = match self.llm.list_models().await {
            Ok(mut fetched) => {
                for m in &mut fetched {
                    m.fetched_at = now;
                }
                self.repo.upsert_models(fetched).await?;
                Snapshot {
                    models: self.repo.list_models().await?,
                    stale: false,
                    checked_at: now,
                }
            }
            Err(e) if !stored.is_empty() => {
                tracing::warn!(error = %e, "model list refresh failed; serving the cached list");
                Snapshot {
                    models: stored,
                    stale: true,
                    checked_at: now,
                }
            }
            Err(e) => return Err(CatalogError::Unavailable(e)),
        };
        let snapshot = Arc::new(snapshot);
        self.hot.insert((), Arc::clone(&snapshot));
        Ok(snapshot)
    }
}

impl<R, L, C> CatalogUseCase for CatalogService<R, L, C>
where
    R: ModelCatalogRepository + SettingsRepository,
    L: LlmGateway,
    C: Clock,
{
    async fn list_models(
        &self,
        query: Option<String>,
        page: PageRequest,
    ) -> Result<ModelPage, CatalogError> {
        let snapshot = self.snapshot().await?;
        let needle = query.map(|q| q.to_lowercase());
        let matching: Vec<&ModelInfo> = snapshot
            .models
            .iter()
            .filter(|m| {
                needle.as_deref().is_none_or(|q| {
                    m.id.as_str().to_lowercase().contains(q) || m.name.to_lowercase().contains(q)
                })
            })
            .collect();
        let total = matching.len() as u64;
        let items = matching
            .into_iter()
            .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
            .take(page.limit() as usize)
            .cloned()
            .collect();
        Ok(ModelPage {
            page: Page {
                items,
                total,
                request: page,
            },
            stale: snapshot.stale,
        })
    }

    async fn get_model(&self, id: &ModelId) -> Result<(ModelInfo, bool), CatalogError> {
        let snapshot = self.snapshot().await?;
        snapshot
            .models
            .iter()
            .find(|m| &m.id == id)
            .cloned()
            .map(|m| (m, snapshot.stale))
            .ok_or_else(|| CatalogError::UnknownModel(id.clone()))
    }

    async fn settings(&self, user: UserId) -> Result<UserSettings, CatalogError> {
        Ok(self.repo.get_settings(user).await?)
    }

    async fn update_settings(
        &self,
        user: UserId,
        settings: UserSettings,
    ) -> Result<UserSettings, CatalogError> {
        if let Some(model) = &settings.default_model_id {
            self.get_model(model).await?;
        }
        self.repo
            .put_settings(user, settings.clone(), self.clock.now())
            .await?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use domain::{ModelInfo, Pricing, Usd};

    use super::*;
    use crate::testing::{FakeLlm, InMemoryStore, ManualClock};

    fn model(id: &str, price: &str) -> ModelInfo {
        ModelInfo {
            id: ModelId::parse(id).unwrap(),
            name: id.to_uppercase(),
            description: None,
            context_length: Some(1_000),
            pricing: Pricing {
                prompt: Usd::parse_decimal(price).unwrap(),
                completion: Usd::parse_decimal(price).unwrap(),
            },
            input_modalities: vec![],
            output_modalities: vec![],
            created: None,
            fetched_at: Timestamp::from_unix_micros(0),
        }
    }

    fn service(models: Vec<ModelInfo>) -> Arc<CatalogService<InMemoryStore, FakeLlm, ManualClock>> {
        Arc::new(CatalogService::new(
            InMemoryStore::new(),
            FakeLlm::with_models(models),
            ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000)),
            Duration::from_secs(60),
        ))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let s = service(vec![model("a/one", "0.1"), model("b/two", "0.2")]);
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let s = Arc::clone(&s);
                tokio::spawn(async move { s.list_models(None, PageRequest::default()).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap().page.total, 2);
        }
        assert_eq!(s.llm.model_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_expired_list_is_refreshed_and_a_failed_refresh_serves_the_old_list_as_stale() {
        let s = service(vec![model("a/one", "0.1")]);
        assert!(
            !s.list_models(None, PageRequest::default())
                .await
                .unwrap()
                .stale
        );
        s.llm
            .set_models(vec![model("a/one", "0.5"), model("c/three", "0.3")]);
        s.clock.advance_micros(61_000_000);
        let page = s.list_models(None, PageRequest::default()).await.unwrap();
        assert_eq!(page.page.total, 2);
        let (one, _) = s
            .get_model(&ModelId::parse("a/one").unwrap())
            .await
            .unwrap();
        assert_eq!(one.pricing.prompt, Usd::parse_decimal("0.5").unwrap());

        s.llm.set_failing(true);
        s.clock.advance_micros(61_000_000);
        let stale = s
            .list_models(Some("THREE".into()), PageRequest::default())
            .await
            .unwrap();
        assert!(stale.stale);
        assert_eq!(stale.page.total, 1);
    }

    #[tokio::test]
    async fn nothing_cached_and_the_provider_down_is_unavailable() {
        let s = service(vec![]);
        s.llm.set_failing(true);
        assert!(matches!(
            s.list_models(None, PageRequest::default()).await,
            Err(CatalogError::Unavailable(_))
        ));
    }
}
