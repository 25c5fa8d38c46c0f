//! Models a provider stopped listing are kept (records and chats still name them) but marked
//! inactive: the catalogue no longer lists or accepts them.

use sea_orm_migration::prelude::*;

use crate::alter::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let active = ColumnDef::new("active")
            .boolean()
            .not_null()
            .default(true)
            .to_owned();
        add_column(manager, "models", active).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, "models", "active").await
    }
}
