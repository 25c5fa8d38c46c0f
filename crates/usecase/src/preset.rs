//! Presets: named generation settings, private to their owner, validated against the model
//! catalogue, applied to generations by the chat service.

use std::sync::Arc;

use domain::{
    MaxTokens, ModelId, Page, Preset, PresetDescription, PresetId, PresetName, SystemPrompt,
    Temperature, UserId, limits,
};

use crate::catalog::{CatalogError, CatalogUseCase};
use crate::ports::{Clock, Entity, IdGenerator, PresetQuery, PresetRepository, RepoError};

/// The fields a client sets.
#[derive(Debug, Clone)]
pub struct PresetInput {
    /// Name.
    pub name: PresetName,
    /// Description.
    pub description: Option<PresetDescription>,
    /// Model (must be in the catalogue).
    pub model_id: Option<ModelId>,
    /// Sampling temperature.
    pub temperature: Option<Temperature>,
    /// Answer cap (bounded by the model's context).
    pub max_tokens: Option<i64>,
    /// System prompt.
    pub system_prompt: Option<SystemPrompt>,
    /// Favourite flag.
    pub is_favorite: bool,
}

impl PresetInput {
    /// The preset these settings make, keeping what no input changes (id, owner, use count,
    /// creation time), changed at `now`.
    fn into_preset(
        self,
        (id, owner, usage_count, created_at): (PresetId, UserId, u64, domain::Timestamp),
        max_tokens: Option<MaxTokens>,
        now: domain::Timestamp,
    ) -> Preset {
        Preset {
            id,
            owner,
            name: self.name,
            description: self.description,
            model_id: self.model_id,
            temperature: self.temperature,
            max_tokens,
            system_prompt: self.system_prompt,
            is_favorite: self.is_favorite,
            usage_count,
            created_at,
            updated_at: now,
        }
    }
}

/// Why a preset operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// No such preset for this user.
    #[error("preset not found")]
    NotFound,
    /// The model is not in the catalogue.
    #[error("model {0} is not in the catalogue")]
    UnknownModel(ModelId),
    /// A value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] domain::InvalidInput),
    /// The catalogue could not be consulted.
    #[error("the model catalogue is unavailable")]
    Catalog(#[source] CatalogError),
    /// Storage failure.
    #[error("storage failure")]
    Storage(#[source] RepoError),
}

fn repo(e: RepoError) -> PresetError {
    match e {
        RepoError::NotFound(Entity::Preset) => PresetError::NotFound,
        other => PresetError::Storage(other),
    }
}

/// Inbound port of the preset capability.
pub trait PresetUseCase: Send + Sync + 'static {
    /// Creates a preset.
    ///
    /// # Errors
    /// [`PresetError::UnknownModel`], [`PresetError::Invalid`].
    fn create(
        &self,
        owner: UserId,
        input: PresetInput,
    ) -> impl Future<Output = Result<Preset, PresetError>> + Send;
    /// One preset.
    ///
    /// # Errors
    /// [`PresetError::NotFound`].
    fn get(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<Preset, PresetError>> + Send;
    /// Replaces a preset's fields.
    ///
    /// # Errors
    /// [`PresetError::NotFound`], [`PresetError::UnknownModel`], [`PresetError::Invalid`].
    fn update(
        &self,
        owner: UserId,
        id: PresetId,
        input: PresetInput,
    ) -> impl Future<Output = Result<Preset, PresetError>> + Send;
    /// Deletes a preset.
    ///
    /// # Errors
    /// [`PresetError::NotFound`].
    fn delete(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<(), PresetError>> + Send;
    /// A page of presets.
    ///
    /// # Errors
    /// Storage failures.
    fn list(
        &self,
        owner: UserId,
        query: PresetQuery,
    ) -> impl Future<Output = Result<Page<Preset>, PresetError>> + Send;
    /// Counts one use; returns the new count.
    ///
    /// # Errors
    /// [`PresetError::NotFound`].
    fn record_use(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<u64, PresetError>> + Send;
}

/// The canonical [`PresetUseCase`].
#[derive(Debug)]
pub struct PresetService<R, M, C, I> {
    repo: R,
    catalog: Arc<M>,
    clock: C,
    ids: I,
}

impl<R, M, C, I> PresetService<R, M, C, I> {
    /// Wires the service.
    pub const fn new(repo: R, catalog: Arc<M>, clock: C, ids: I) -> Self {
        Self {
            repo,
            catalog,
            clock,
            ids,
        }
    }
}

impl<R: PresetRepository, M: CatalogUseCase, C: Clock, I: IdGenerator> PresetService<R, M, C, I> {
    async fn validated_max_tokens(
        &self,
        input: &PresetInput,
    ) -> Result<Option<MaxTokens>, PresetError> {
        let context = match &input.model_id {
            Some(model) => match self.catalog.get_model(model).await {
                Ok((info, _)) => info.context_length,
                Err(CatalogError::UnknownModel(id)) => return Err(PresetError::UnknownModel(id)),
                Err(e) => return Err(PresetError::Catalog(e)),
            },
            None => None,
        };
        Ok(input
            .max_tokens
            .map(|n| MaxTokens::new(n, context, limits::MAX_TOKENS_CEILING))
            .transpose()?)
    }
}

impl<R: PresetRepository, M: CatalogUseCase, C: Clock, I: IdGenerator> PresetUseCase
    for PresetService<R, M, C, I>
{
    async fn create(&self, owner: UserId, input: PresetInput) -> Result<Preset, PresetError> {
        let max_tokens = self.validated_max_tokens(&input).await?;
        let now = self.clock.now();
        let id = PresetId::from_u128(self.ids.next_id());
        self.repo
            .create_preset(input.into_preset((id, owner, 0, now), max_tokens, now))
            .await
            .map_err(repo)
    }

    async fn get(&self, owner: UserId, id: PresetId) -> Result<Preset, PresetError> {
        self.repo.get_preset(owner, id).await.map_err(repo)
    }

    async fn update(
        &self,
        owner: UserId,
        id: PresetId,
        input: PresetInput,
    ) -> Result<Preset, PresetError> {
        let current = self.get(owner, id).await?;
        let max_tokens = self.validated_max_tokens(&input).await?;
        let kept = (
            current.id,
            current.owner,
            current.usage_count,
            current.created_at,
        );
        self.repo
            .update_preset(input.into_preset(kept, max_tokens, self.clock.now()))
            .await
            .map_err(repo)
    }

    async fn delete(&self, owner: UserId, id: PresetId) -> Result<(), PresetError> {
        self.repo.delete_preset(owner, id).await.map_err(repo)
    }

    async fn list(&self, owner: UserId, query: PresetQuery) -> Result<Page<Preset>, PresetError> {
        self.repo.list_presets(owner, query).await.map_err(repo)
    }

    async fn record_use(&self, owner: UserId, id: PresetId) -> Result<u64, PresetError> {
        self.repo
            .increment_preset_usage(owner, id)
            .await
            .map_err(repo)
    }
}

#[cfg(test)]
mod tests;
