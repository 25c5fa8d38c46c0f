//! A deleted account leaves a tombstone for a while, so every process drops it from its
//! account cache at its next poll of account changes (the account's own row is gone).

use sea_orm_migration::prelude::*;

use crate::alter::{create_index, create_table};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table("account_tombstones")
                .col(ColumnDef::new("user_id").uuid().not_null().primary_key())
                .col(ColumnDef::new("deleted_at").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        create_index(
            manager,
            "ix_account_tombstones_deleted_at",
            "account_tombstones",
            &["deleted_at"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("account_tombstones").to_owned())
            .await
    }
}
