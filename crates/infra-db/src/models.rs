//! [`ModelCatalogRepository`] on sea-orm: the provider's catalogue, refreshed by upsert.

use domain::{ModelId, ModelInfo, Timestamp, UserId};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use usecase::catalog::{SettingsRepository, UserSettings};
use usecase::ports::{Entity, ModelCatalogRepository, RepoError};

use crate::SeaOrmStore;
use crate::convert::{join_names, to_model_info, ts, uuid};
use crate::entity::{models, user_settings};
use crate::error::{classify, corrupt, to_repo_error};

/// Rows per `INSERT … ON CONFLICT` statement (12 parameters each).
const UPSERT_CHUNK: usize = 200;

fn row(m: &ModelInfo) -> models::ActiveModel {
    models::ActiveModel {
        id: Set(m.id.as_str().to_owned()),
        name: Set(m.name.clone()),
        description: Set(m.description.clone()),
        context_length: Set(m.context_length.map(i64::from)),
        prompt_price: Set(m.pricing.prompt.to_string()),
        completion_price: Set(m.pricing.completion.to_string()),
        input_modalities: Set(join_names(&m.input_modalities)),
        output_modalities: Set(join_names(&m.output_modalities)),
        created: Set(m.created),
        fetched_at: Set(ts(m.fetched_at)),
        active: Set(true),
    }
}

impl ModelCatalogRepository for SeaOrmStore {
    async fn upsert_models(&self, models: Vec<ModelInfo>) -> Result<(), RepoError> {
        if models.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write().await?;
        // What the provider no longer lists stays, inactive; the upsert below re-activates
        // what it lists (one transaction: readers never see the list empty).
        models::Entity::update_many()
            .col_expr(models::Column::Active, Expr::value(false))
            .filter(models::Column::Active.eq(true))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        for (i, chunk) in models.chunks(UPSERT_CHUNK).enumerate() {
            models::Entity::insert_many(chunk.iter().map(row))
                .on_conflict(
                    OnConflict::column(models::Column::Id)
                        .update_columns([
                            models::Column::Name,
                            models::Column::Description,
                            models::Column::ContextLength,
                            models::Column::PromptPrice,
                            models::Column::CompletionPrice,
                            models::Column::InputModalities,
                            models::Column::OutputModalities,
                            models::Column::Created,
                            models::Column::FetchedAt,
                            models::Column::Active,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(to_repo_error)?;
            if i == 0 {
                self.fault("upsert_models")?;
            }
        }
        txn.commit().await.map_err(to_repo_error)
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RepoError> {
        models::Entity::find()
            .filter(models::Column::Active.eq(true))
            .order_by_asc(models::Column::Id)
            .all(&self.read)
            .await
            .map_err(to_repo_error)?
            .into_iter()
            .map(to_model_info)
            .collect()
    }

    async fn get_model(&self, id: &ModelId) -> Result<ModelInfo, RepoError> {
        models::Entity::find_by_id(id.as_str().to_owned())
            .filter(models::Column::Active.eq(true))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::Model))
            .and_then(to_model_info)
    }
}

impl SettingsRepository for SeaOrmStore {
    async fn get_settings(&self, user: UserId) -> Result<UserSettings, RepoError> {
        let row = user_settings::Entity::find_by_id(uuid(user.as_u128()))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?;
        Ok(UserSettings {
            default_model_id: row
                .and_then(|r| r.default_model_id)
                .map(ModelId::parse)
                .transpose()
                .map_err(corrupt)?,
        })
    }

    async fn put_settings(
        &self,
        user: UserId,
        settings: UserSettings,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        user_settings::Entity::insert(user_settings::ActiveModel {
            user_id: Set(uuid(user.as_u128())),
            default_model_id: Set(settings.default_model_id.map(|m| m.as_str().to_owned())),
            updated_at: Set(ts(now)),
        })
        .on_conflict(
            OnConflict::column(user_settings::Column::UserId)
                .update_columns([
                    user_settings::Column::DefaultModelId,
                    user_settings::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.write)
        .await
        .map_err(|e| classify(e, "settings conflict", Entity::User))?;
        Ok(())
    }
}
