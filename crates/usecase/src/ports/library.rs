//! What users keep beside their chats: prompt templates, presets, and the model catalogue
//! they pick from.

use domain::{ModelId, ModelInfo, PresetId, PromptTemplate, TemplateId, UserId};

use super::RepoError;

/// How a template list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateSort {
    /// Most recently changed first (the default).
    #[default]
    Updated,
    /// By name, A→Z.
    Name,
    /// Most used first.
    Usage,
}

/// A template list request.
#[derive(Debug, Clone, Default)]
pub struct TemplateQuery {
    /// Case-insensitive substring of name, description or content.
    pub search: Option<domain::SearchQuery>,
    /// Only this category.
    pub category: Option<domain::Category>,
    /// Only the viewer's favourites (or only what is not one of them: someone else's
    /// template never is, whatever its owner marked).
    pub is_favorite: Option<bool>,
    /// Only public (or only private) templates.
    pub is_public: Option<bool>,
    /// Only the viewer's own templates.
    pub mine_only: bool,
    /// Order.
    pub sort: TemplateSort,
    /// Which page.
    pub page: domain::PageRequest,
}

/// Prompt templates.
pub trait TemplateRepository: Send + Sync + 'static {
    /// Stores a new template.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User) when the owner does not exist.
    fn create_template(
        &self,
        template: PromptTemplate,
    ) -> impl Future<Output = Result<PromptTemplate, RepoError>> + Send;

    /// The template, if `viewer` owns it or it is public.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Template`](super::Entity::Template).
    fn get_template(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<PromptTemplate, RepoError>> + Send;

    /// Replaces the template's fields (not id, owner, usage count, creation time); only
    /// the owner's row is touched.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Template`](super::Entity::Template).
    fn update_template(
        &self,
        template: PromptTemplate,
    ) -> impl Future<Output = Result<PromptTemplate, RepoError>> + Send;

    /// Deletes the owner's template.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Template`](super::Entity::Template).
    fn delete_template(
        &self,
        owner: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// A page of the templates `viewer` may see, with a true total.
    ///
    /// # Errors
    /// Storage failures.
    fn list_templates(
        &self,
        viewer: UserId,
        query: TemplateQuery,
    ) -> impl Future<Output = Result<domain::Page<PromptTemplate>, RepoError>> + Send;

    /// The categories of the templates `viewer` may see, with how many each holds, by name.
    ///
    /// # Errors
    /// Storage failures.
    fn template_categories(
        &self,
        viewer: UserId,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, RepoError>> + Send;

    /// Adds one to the usage counter of a template `viewer` can see; returns the new count.
    ///
    /// Implementations MUST increment in the database in one statement
    /// (`SET n = n + 1`), never read-modify-write, so concurrent calls are never lost.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Template`](super::Entity::Template).
    fn increment_template_usage(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;
}

/// The cached model catalogue.
pub trait ModelCatalogRepository: Send + Sync + 'static {
    /// Makes `models` the catalogue, in one transaction: inserts new models, updates known
    /// ones (one row per model id), and marks inactive the models absent from `models` (kept,
    /// but no longer listed or found). An empty list changes nothing.
    ///
    /// # Errors
    /// Storage failures only.
    fn upsert_models(
        &self,
        models: Vec<ModelInfo>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Every active cached model, ordered by id.
    ///
    /// # Errors
    /// Storage failures only.
    fn list_models(&self) -> impl Future<Output = Result<Vec<ModelInfo>, RepoError>> + Send;

    /// One active cached model.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Model`](super::Entity::Model) (also for an inactive one).
    fn get_model(&self, id: &ModelId) -> impl Future<Output = Result<ModelInfo, RepoError>> + Send;
}

/// A preset list request.
#[derive(Debug, Clone, Default)]
pub struct PresetQuery {
    /// Case-insensitive substring of the name or description.
    pub search: Option<domain::SearchQuery>,
    /// Only favourites.
    pub favorites_only: bool,
    /// Which page.
    pub page: domain::PageRequest,
}

/// Presets (private to their owner).
pub trait PresetRepository: Send + Sync + 'static {
    /// Stores a new preset.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::User`](super::Entity::User).
    fn create_preset(
        &self,
        preset: domain::Preset,
    ) -> impl Future<Output = Result<domain::Preset, RepoError>> + Send;

    /// The owner's preset.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Preset`](super::Entity::Preset).
    fn get_preset(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<domain::Preset, RepoError>> + Send;

    /// Replaces the owner's preset (all fields but id, owner, usage count and creation time).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Preset`](super::Entity::Preset).
    fn update_preset(
        &self,
        preset: domain::Preset,
    ) -> impl Future<Output = Result<domain::Preset, RepoError>> + Send;

    /// Deletes the owner's preset (chats using it keep their own settings).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Preset`](super::Entity::Preset).
    fn delete_preset(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// A page of the owner's presets, newest change first, with a true total.
    ///
    /// # Errors
    /// Storage failures.
    fn list_presets(
        &self,
        owner: UserId,
        query: PresetQuery,
    ) -> impl Future<Output = Result<domain::Page<domain::Preset>, RepoError>> + Send;

    /// Adds one to the usage counter in one `SET n = n + 1` statement; returns the new count.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] with [`Entity::Preset`](super::Entity::Preset).
    fn increment_preset_usage(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;
}
