//! [`PresetRepository`] on sea-orm.

use domain::{
    MaxTokens, ModelId, Page, Preset, PresetDescription, PresetId, PresetName, SystemPrompt,
    Temperature, Timestamp, UserId, limits,
};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Condition, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use usecase::ports::{Entity, PresetQuery, PresetRepository, RepoError};

use crate::SeaOrmStore;
use crate::chats::like_pattern;
use crate::convert::{count, ts, uuid};
use crate::entity::presets;
use crate::error::{classify, corrupt, to_repo_error};

fn to_preset(row: presets::Model) -> Result<Preset, RepoError> {
    Ok(Preset {
        id: PresetId::from_u128(row.id.as_u128()),
        owner: UserId::from_u128(row.user_id.as_u128()),
        name: PresetName::parse(row.name).map_err(corrupt)?,
        description: row
            .description
            .map(PresetDescription::parse)
            .transpose()
            .map_err(corrupt)?,
        model_id: row
            .model_id
            .map(ModelId::parse)
            .transpose()
            .map_err(corrupt)?,
        temperature: row
            .temperature
            .map(Temperature::new)
            .transpose()
            .map_err(corrupt)?,
        max_tokens: row
            .max_tokens
            .map(|n| MaxTokens::new(n, None, limits::MAX_TOKENS_CEILING))
            .transpose()
            .map_err(corrupt)?,
        system_prompt: row
            .system_prompt
            .map(SystemPrompt::parse)
            .transpose()
            .map_err(corrupt)?,
        is_favorite: row.is_favorite,
        usage_count: count(row.usage_count),
        created_at: Timestamp::from_unix_micros(row.created_at),
        updated_at: Timestamp::from_unix_micros(row.updated_at),
    })
}

/// The row of a preset.
pub(crate) fn preset_row(p: &Preset) -> presets::ActiveModel {
    presets::ActiveModel {
        id: Set(uuid(p.id.as_u128())),
        user_id: Set(uuid(p.owner.as_u128())),
        name: Set(p.name.as_str().to_owned()),
        description: Set(p.description.as_ref().map(|d| d.as_str().to_owned())),
        model_id: Set(p.model_id.as_ref().map(|m| m.as_str().to_owned())),
        temperature: Set(p.temperature.map(Temperature::value)),
        max_tokens: Set(p.max_tokens.map(|m| i64::from(m.value()))),
        system_prompt: Set(p.system_prompt.as_ref().map(|s| s.as_str().to_owned())),
        is_favorite: Set(p.is_favorite),
        usage_count: Set(i64::try_from(p.usage_count).unwrap_or(0)),
        created_at: Set(ts(p.created_at)),
        updated_at: Set(ts(p.updated_at)),
    }
}

fn owned(owner: UserId, id: PresetId) -> Condition {
    Condition::all()
        .add(presets::Column::Id.eq(uuid(id.as_u128())))
        .add(presets::Column::UserId.eq(uuid(owner.as_u128())))
}

impl PresetRepository for SeaOrmStore {
    async fn create_preset(&self, preset: Preset) -> Result<Preset, RepoError> {
        let row = preset_row(&preset)
            .insert(&self.write)
            .await
            .map_err(|e| classify(e, "preset id already used", Entity::User))?;
        to_preset(row)
    }

    async fn get_preset(&self, owner: UserId, id: PresetId) -> Result<Preset, RepoError> {
        presets::Entity::find()
            .filter(owned(owner, id))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::Preset))
            .and_then(to_preset)
    }

    async fn update_preset(&self, preset: Preset) -> Result<Preset, RepoError> {
        let result = presets::Entity::update_many()
            .col_expr(presets::Column::Name, Expr::value(preset.name.as_str()))
            .col_expr(
                presets::Column::Description,
                Expr::value(preset.description.as_ref().map(|d| d.as_str().to_owned())),
            )
            .col_expr(
                presets::Column::ModelId,
                Expr::value(preset.model_id.as_ref().map(|m| m.as_str().to_owned())),
            )
            .col_expr(
                presets::Column::Temperature,
                Expr::value(preset.temperature.map(Temperature::value)),
            )
            .col_expr(
                presets::Column::MaxTokens,
                Expr::value(preset.max_tokens.map(|m| i64::from(m.value()))),
            )
            .col_expr(
                presets::Column::SystemPrompt,
                Expr::value(preset.system_prompt.as_ref().map(|s| s.as_str().to_owned())),
            )
            .col_expr(presets::Column::IsFavorite, Expr::value(preset.is_favorite))
            .col_expr(
                presets::Column::UpdatedAt,
                Expr::value(ts(preset.updated_at)),
            )
            .filter(owned(preset.owner, preset.id))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Preset));
        }
        self.get_preset(preset.owner, preset.id).await
    }

    async fn delete_preset(&self, owner: UserId, id: PresetId) -> Result<(), RepoError> {
        let result = presets::Entity::delete_many()
            .filter(owned(owner, id))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Preset));
        }
        Ok(())
    }

    async fn list_presets(
        &self,
        owner: UserId,
        query: PresetQuery,
    ) -> Result<Page<Preset>, RepoError> {
        let mut select =
            presets::Entity::find().filter(presets::Column::UserId.eq(uuid(owner.as_u128())));
        if query.favorites_only {
            select = select.filter(presets::Column::IsFavorite.eq(true));
        }
        if let Some(q) = &query.search {
            let pattern = like_pattern(q.as_str());
            select = select.filter(
                Condition::any()
                    .add(
                        Expr::expr(Func::lower(Expr::col(presets::Column::Name)))
                            .like(LikeExpr::new(pattern.clone()).escape('\\')),
                    )
                    .add(
                        Expr::expr(Func::lower(Expr::col(presets::Column::Description)))
                            .like(LikeExpr::new(pattern).escape('\\')),
                    ),
            );
        }
        let total = select
            .clone()
            .count(&self.read)
            .await
            .map_err(to_repo_error)?;
        let rows = select
            .order_by_desc(presets::Column::UpdatedAt)
            .order_by_desc(presets::Column::Id)
            .offset(query.page.offset())
            .limit(u64::from(query.page.limit()))
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        Ok(Page {
            items: rows.into_iter().map(to_preset).collect::<Result<_, _>>()?,
            total,
            request: query.page,
        })
    }

    async fn increment_preset_usage(&self, owner: UserId, id: PresetId) -> Result<u64, RepoError> {
        let txn = self.begin_write().await?;
        let result = presets::Entity::update_many()
            .col_expr(
                presets::Column::UsageCount,
                Expr::col(presets::Column::UsageCount).add(1),
            )
            .filter(owned(owner, id))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Preset));
        }
        let n: Option<i64> = presets::Entity::find_by_id(uuid(id.as_u128()))
            .select_only()
            .column(presets::Column::UsageCount)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        n.map(count).ok_or(RepoError::NotFound(Entity::Preset))
    }
}
