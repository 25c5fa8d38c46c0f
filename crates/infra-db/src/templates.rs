//! [`TemplateRepository`] on sea-orm.

use domain::{Page, PromptTemplate, TemplateId, UserId};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Condition, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use usecase::ports::{Entity, RepoError, TemplateQuery, TemplateRepository, TemplateSort};

use crate::chats::like_pattern;

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

/// The row of a template.
pub(crate) fn template_row(t: &PromptTemplate) -> prompt_templates::ActiveModel {
    prompt_templates::ActiveModel {
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
}

impl TemplateRepository for SeaOrmStore {
    async fn create_template(&self, t: PromptTemplate) -> Result<PromptTemplate, RepoError> {
        let row = template_row(&t)
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

    async fn update_template(&self, t: PromptTemplate) -> Result<PromptTemplate, RepoError> {
        let result = prompt_templates::Entity::update_many()
            .col_expr(prompt_templates::Column::Name, Expr::value(t.name.as_str()))
            .col_expr(
                prompt_templates::Column::Description,
                Expr::value(t.description.as_ref().map(|d| d.as_str().to_owned())),
            )
            .col_expr(
                prompt_templates::Column::Content,
                Expr::value(t.content.as_str()),
            )
            .col_expr(
                prompt_templates::Column::Category,
                Expr::value(t.category.as_ref().map(|c| c.as_str().to_owned())),
            )
            .col_expr(
                prompt_templates::Column::Variables,
                Expr::value(join_names(&t.content.variables())),
            )
            .col_expr(prompt_templates::Column::IsPublic, Expr::value(t.is_public))
            .col_expr(
                prompt_templates::Column::IsFavorite,
                Expr::value(t.is_favorite),
            )
            .col_expr(
                prompt_templates::Column::UpdatedAt,
                Expr::value(ts(t.updated_at)),
            )
            .filter(prompt_templates::Column::Id.eq(uuid(t.id.as_u128())))
            .filter(prompt_templates::Column::UserId.eq(uuid(t.owner.as_u128())))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Template));
        }
        self.get_template(t.owner, t.id).await
    }

    async fn delete_template(&self, owner: UserId, id: TemplateId) -> Result<(), RepoError> {
        let result = prompt_templates::Entity::delete_many()
            .filter(prompt_templates::Column::Id.eq(uuid(id.as_u128())))
            .filter(prompt_templates::Column::UserId.eq(uuid(owner.as_u128())))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Template));
        }
        Ok(())
    }

    async fn list_templates(
        &self,
        viewer: UserId,
        q: TemplateQuery,
    ) -> Result<Page<PromptTemplate>, RepoError> {
        use prompt_templates::Column as C;
        let mut select = prompt_templates::Entity::find().filter(if q.mine_only {
            Condition::all().add(C::UserId.eq(uuid(viewer.as_u128())))
        } else {
            visible_to(viewer)
        });
        if let Some(search) = &q.search {
            let pattern = like_pattern(search.as_str());
            let like = |col: C| {
                Expr::expr(Func::lower(Expr::col(col)))
                    .like(LikeExpr::new(pattern.clone()).escape('\\'))
            };
            select = select.filter(
                Condition::any()
                    .add(like(C::Name))
                    .add(like(C::Description))
                    .add(like(C::Content)),
            );
        }
        if let Some(category) = &q.category {
            select = select.filter(C::Category.eq(category.as_str()));
        }
        if let Some(favorite) = q.is_favorite {
            // The flag is its owner's: someone else's template is never the viewer's.
            let mine = Condition::all()
                .add(C::UserId.eq(uuid(viewer.as_u128())))
                .add(C::IsFavorite.eq(true));
            select = select.filter(if favorite { mine } else { mine.not() });
        }
        if let Some(public) = q.is_public {
            select = select.filter(C::IsPublic.eq(public));
        }
        let total = select
            .clone()
            .count(&self.read)
            .await
            .map_err(to_repo_error)?;
        select = match q.sort {
            TemplateSort::Updated => select.order_by_desc(C::UpdatedAt),
            TemplateSort::Name => select.order_by_asc(C::Name),
            TemplateSort::Usage => select.order_by_desc(C::UsageCount),
        };
        let rows = select
            .order_by_asc(C::Id)
            .offset(q.page.offset())
            .limit(u64::from(q.page.limit()))
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(to_template)
                .collect::<Result<_, _>>()?,
            total,
            request: q.page,
        })
    }

    async fn template_categories(&self, viewer: UserId) -> Result<Vec<(String, u64)>, RepoError> {
        let rows: Vec<(Option<String>, i64)> = prompt_templates::Entity::find()
            .select_only()
            .column(prompt_templates::Column::Category)
            .column_as(prompt_templates::Column::Id.count(), "n")
            .filter(visible_to(viewer))
            .filter(prompt_templates::Column::Category.is_not_null())
            .group_by(prompt_templates::Column::Category)
            .order_by_asc(prompt_templates::Column::Category)
            .into_tuple()
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(c, n)| c.map(|c| (c, count(n))))
            .collect())
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
