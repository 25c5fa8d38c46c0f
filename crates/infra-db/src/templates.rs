//! [`TemplateRepository`] on sea-orm.

use domain::{PromptTemplate, TemplateId, UserId};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, ExprTrait, QueryFilter, QuerySelect, Set,
};
use usecase::ports::{Entity, RepoError, TemplateRepository};

use crate::SeaOrmStore;
use crate::convert::{count, join_names, to_template, ts, uuid};
use crate::entity::prompt_templates;
use crate::error::{classify, to_repo_error};

/// Templates `viewer` may see: their own and everyone's public ones.
fn visible_to(viewer: UserId) -> Condition {
    Condition::any()
        .add(prompt_templates::Column::UserId.eq(uuid(viewer.as_u128())))
        .add(prompt_templates::Column::IsPublic.eq(true))
}

impl TemplateRepository for SeaOrmStore {
    async fn create_template(&self, t: PromptTemplate) -> Result<PromptTemplate, RepoError> {
        let row = prompt_templates::ActiveModel {
            id: Set(uuid(t.id.as_u128())),
            user_id: Set(uuid(t.owner.as_u128())),
            name: Set(t.name.as_str().to_owned()),
            description: Set(t.description.as_ref().map(|d| d.as_str().to_owned())),
            content: Set(t.content.as_str().to_owned()),
            category: Set(t.category.as_ref().map(|c| c.as_str().to_owned())),
            variables: Set(join_names(&t.content.variables())),
            is_public: Set(t.is_public),
            is_favorite: Set(t.is_favorite),
            usage_count: Set(i64::try_from(t.usage_count).unwrap_or(0)),
            created_at: Set(ts(t.created_at)),
            updated_at: Set(ts(t.updated_at)),
        }
        .insert(&self.write)
        .await
        .map_err(|e| classify(e, "template id already used", Entity::User))?;
        to_template(row)
    }

    async fn get_template(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> Result<PromptTemplate, RepoError> {
        prompt_templates::Entity::find_by_id(uuid(id.as_u128()))
            .filter(visible_to(viewer))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::Template))
            .and_then(to_template)
    }

    async fn increment_template_usage(
        &self,
        viewer: UserId,
        id: TemplateId,
    ) -> Result<u64, RepoError> {
        // The increment is one statement; reading the new value in the same transaction
        // (which holds the row's write lock) returns exactly this call's count.
        let txn = self.begin_write().await?;
        let result = prompt_templates::Entity::update_many()
            .col_expr(
                prompt_templates::Column::UsageCount,
                Expr::col(prompt_templates::Column::UsageCount).add(1),
            )
            .filter(prompt_templates::Column::Id.eq(uuid(id.as_u128())))
            .filter(visible_to(viewer))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Template));
        }
        let n: Option<i64> = prompt_templates::Entity::find_by_id(uuid(id.as_u128()))
            .select_only()
            .column(prompt_templates::Column::UsageCount)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        n.map(count).ok_or(RepoError::NotFound(Entity::Template))
    }
}
