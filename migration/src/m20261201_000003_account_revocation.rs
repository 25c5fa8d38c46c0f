//! Account state that caches can trust: `users.token_epoch` (bumped when every access token
//! of a user must stop working) and the indexes that let each replica poll, once per
//! interval, which accounts and API keys changed recently.

use sea_orm_migration::prelude::*;

use crate::alter::{add_column, create_index, drop_column, drop_index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let epoch = ColumnDef::new("token_epoch")
            .big_integer()
            .not_null()
            .default(0)
            .to_owned();
        add_column(manager, "users", epoch).await?;
        create_index(manager, "ix_users_updated_at", "users", &["updated_at"]).await?;
        create_index(
            manager,
            "ix_api_keys_revoked_at",
            "api_keys",
            &["revoked_at"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_index(manager, "ix_api_keys_revoked_at", "api_keys").await?;
        drop_index(manager, "ix_users_updated_at", "users").await?;
        drop_column(manager, "users", "token_epoch").await
    }
}
