//! Where each generation's cost comes from: `provider` (the call's own `usage.cost`) or
//! `catalogue` (the listed per-token prices; what every earlier record used).

use sea_orm_migration::prelude::*;

use crate::alter::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let source = ColumnDef::new("cost_source")
            .string_len(20)
            .not_null()
            .default("catalogue")
            .to_owned();
        add_column(manager, "generations", source).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, "generations", "cost_source").await
    }
}
