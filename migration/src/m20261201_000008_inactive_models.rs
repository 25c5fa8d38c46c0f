//! Models a provider stopped listing are kept (records and chats still name them) but marked
//! inactive: the catalogue no longer lists or accepts them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("models")
                    .add_column(ColumnDef::new("active").boolean().not_null().default(true))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("models")
                    .drop_column("active")
                    .to_owned(),
            )
            .await
    }
}
