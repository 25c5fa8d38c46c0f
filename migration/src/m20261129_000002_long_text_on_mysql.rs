//! MySQL's `TEXT` holds 65,535 bytes: less than a 32,000-character message in Japanese
//! (up to 96 KB in UTF-8), a 20,000-character template, or a long answer. Those columns
//! become `MEDIUMTEXT` (16 MiB) there; SQLite and PostgreSQL `TEXT` is unbounded already.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `(table, column)` pairs that hold long text.
const LONG: [(&str, &str); 2] = [("messages", "content"), ("prompt_templates", "content")];

async fn retype(manager: &SchemaManager<'_>, to: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::MySql {
        return Ok(());
    }
    for (table, column) in LONG {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE {table} MODIFY {column} {to} \
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL"
            ))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "MEDIUMTEXT").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "TEXT").await
    }
}
