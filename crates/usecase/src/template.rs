//! Prompt templates: own + others' public ones are visible; only the owner changes them.

use std::collections::BTreeMap;

use domain::{
    Category, Page, PromptTemplate, RenderError, TemplateContent, TemplateDescription, TemplateId,
    TemplateName, UserId,
};

use crate::ports::{Clock, Entity, IdGenerator, RepoError, TemplateQuery, TemplateRepository};

/// The fields a client sets.
#[derive(Debug, Clone)]
pub struct TemplateInput {
    /// Name.
    pub name: TemplateName,
    /// Description.
    pub description: Option<TemplateDescription>,
    /// Content with placeholders.
    pub content: TemplateContent,
    /// Category.
    pub category: Option<Category>,
    /// A declared variable list; must match the content when given.
    pub variables: Option<Vec<String>>,
    /// Visible to everyone.
    pub is_public: bool,
    /// Owner's favourite.
    pub is_favorite: bool,
}

impl TemplateInput {
    /// The template this input makes, keeping what no input changes (id, owner, use count,
    /// creation time), changed at `now`.
    fn into_template(
        self,
        (id, owner, usage_count, created_at): (TemplateId, UserId, u64, domain::Timestamp),
        now: domain::Timestamp,
    ) -> PromptTemplate {
        PromptTemplate {
            id,
            owner,
            name: self.name,
            description: self.description,
            content: self.content,
            category: self.category,
            is_public: self.is_public,
            is_favorite: self.is_favorite,
            usage_count,
            created_at,
            updated_at: now,
        }
    }
}

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Absent, or private and someone else's.
    #[error("template not found")]
    NotFound,
    /// Someone else's public template: visible, not changeable.
    #[error("only the owner may change this template")]
    Forbidden,
    /// A value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] domain::InvalidInput),
    /// Missing or unknown variables.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Storage failure.
    #[error("storage failure")]
    Storage(#[source] RepoError),
}

fn repo(e: RepoError) -> TemplateError {
    match e {
        RepoError::NotFound(Entity::Template) => TemplateError::NotFound,
        other => TemplateError::Storage(other),
    }
}

/// Inbound port of the template capability.
pub trait TemplateUseCase: Send + Sync + 'static {
    /// Creates a template.
    ///
    /// # Errors
    /// [`TemplateError::Invalid`].
    fn create(
        &self,
        owner: UserId,
        input: TemplateInput,
    ) -> impl Future<Output = Result<PromptTemplate, TemplateError>> + Send;
    /// A template the viewer may see.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`].
    fn get(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<PromptTemplate, TemplateError>> + Send;
    /// Replaces the fields of the caller's template.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`], [`TemplateError::Forbidden`], [`TemplateError::Invalid`].
    fn update(
        &self,
        owner: UserId,
        id: TemplateId,
        input: TemplateInput,
    ) -> impl Future<Output = Result<PromptTemplate, TemplateError>> + Send;
    /// Deletes the caller's template.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`], [`TemplateError::Forbidden`].
    fn delete(
        &self,
        owner: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<(), TemplateError>> + Send;
    /// A page of visible templates.
    ///
    /// # Errors
    /// Storage failures.
    fn list(
        &self,
        viewer: UserId,
        query: TemplateQuery,
    ) -> impl Future<Output = Result<Page<PromptTemplate>, TemplateError>> + Send;
    /// Categories of visible templates with their counts.
    ///
    /// # Errors
    /// Storage failures.
    fn categories(
        &self,
        viewer: UserId,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, TemplateError>> + Send;
    /// Counts one use; returns the new count.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`].
    fn record_use(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> impl Future<Output = Result<u64, TemplateError>> + Send;
    /// Substitutes the variables.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`], [`TemplateError::Render`].
    fn render(
        &self,
        viewer: UserId,
        id: TemplateId,
        values: BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, TemplateError>> + Send;
}

/// The canonical [`TemplateUseCase`].
#[derive(Debug)]
pub struct TemplateService<R, C, I> {
    repo: R,
    clock: C,
    ids: I,
}

impl<R, C, I> TemplateService<R, C, I> {
    /// Wires the service.
    pub const fn new(repo: R, clock: C, ids: I) -> Self {
        Self { repo, clock, ids }
    }
}

impl<R: TemplateRepository, C: Clock, I: IdGenerator> TemplateService<R, C, I> {
    /// The caller's own template: 404 when invisible, 403 when someone else's public one.
    async fn owned(&self, owner: UserId, id: TemplateId) -> Result<PromptTemplate, TemplateError> {
        let t = self.repo.get_template(owner, id).await.map_err(repo)?;
        if t.owner == owner {
            Ok(t)
        } else {
            Err(TemplateError::Forbidden)
        }
    }
}

impl<R: TemplateRepository, C: Clock, I: IdGenerator> TemplateUseCase for TemplateService<R, C, I> {
    async fn create(
        &self,
        owner: UserId,
        input: TemplateInput,
    ) -> Result<PromptTemplate, TemplateError> {
        input.content.declared_variables(input.variables.clone())?;
        let now = self.clock.now();
        let id = TemplateId::from_u128(self.ids.next_id());
        self.repo
            .create_template(input.into_template((id, owner, 0, now), now))
            .await
            .map_err(repo)
    }

    async fn get(&self, viewer: UserId, id: TemplateId) -> Result<PromptTemplate, TemplateError> {
        let template = self.repo.get_template(viewer, id).await.map_err(repo)?;
        Ok(template.seen_by(viewer))
    }

    async fn update(
        &self,
        owner: UserId,
        id: TemplateId,
        input: TemplateInput,
    ) -> Result<PromptTemplate, TemplateError> {
        let current = self.owned(owner, id).await?;
        input.content.declared_variables(input.variables.clone())?;
        let kept = (
            current.id,
            current.owner,
            current.usage_count,
            current.created_at,
        );
        self.repo
            .update_template(input.into_template(kept, self.clock.now()))
            .await
            .map_err(repo)
    }

    async fn delete(&self, owner: UserId, id: TemplateId) -> Result<(), TemplateError> {
        self.owned(owner, id).await?;
        self.repo.delete_template(owner, id).await.map_err(repo)
    }

    async fn list(
        &self,
        viewer: UserId,
        query: TemplateQuery,
    ) -> Result<Page<PromptTemplate>, TemplateError> {
        let mut page = self
            .repo
            .list_templates(viewer, query)
            .await
            .map_err(repo)?;
        page.items = page.items.into_iter().map(|t| t.seen_by(viewer)).collect();
        Ok(page)
    }

    async fn categories(&self, viewer: UserId) -> Result<Vec<(String, u64)>, TemplateError> {
        self.repo.template_categories(viewer).await.map_err(repo)
    }

    async fn record_use(&self, viewer: UserId, id: TemplateId) -> Result<u64, TemplateError> {
        self.repo
            .increment_template_usage(viewer, id)
            .await
            .map_err(repo)
    }

    async fn render(
        &self,
        viewer: UserId,
        id: TemplateId,
        values: BTreeMap<String, String>,
    ) -> Result<String, TemplateError> {
        let t = self.get(viewer, id).await?;
        Ok(t.content.render(&values)?)
    }
}

#[cfg(test)]
mod tests;
