//! Where each generation's cost comes from: `provider` (the call's own `usage.cost`) or
//! `catalogue` (the listed per-token prices; what every earlier record used).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("generations")
                    .add_column(
                        ColumnDef::new("cost_source")
                            .string_len(20)
                            .not_null()
                            .default("catalogue"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("generations")
                    .drop_column("cost_source")
                    .to_owned(),
            )
            .await
    }
}
