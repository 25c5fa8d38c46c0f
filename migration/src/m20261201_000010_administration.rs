//! Accounts for a real deployment:
//! - `users.role` (`user` | `admin`), `users.pending` (registered under the `approval` policy,
//!   not approved yet) and the account's own quota limits (`NULL` takes the server's default;
//!   0 is no limit): cost in picodollars and tokens, per UTC day and calendar month;
//! - `audit_log`: every administrative action (who, what, on whom, when); no key to `users`, so
//!   the trail outlives the accounts it names;
//! - `invites`: single-use, expiring registration codes (their SHA-256 digest only);
//! - `server_settings`: settings an admin changes at run time (the registration policy);
//! - `api_keys.expires_at` (a key refused from then on) and `api_keys.read_only` (reads only);
//! - `generations.kind`: `answer`, `title` or `completion` (titles are counted for their user
//!   but are not answers).

use sea_orm_migration::prelude::*;

use crate::alter::{add_column, create_table, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

const QUOTA_COLUMNS: [&str; 4] = [
    "quota_daily_cost_pico",
    "quota_monthly_cost_pico",
    "quota_daily_tokens",
    "quota_monthly_tokens",
];

async fn add_user_column(manager: &SchemaManager<'_>, column: ColumnDef) -> Result<(), DbErr> {
    add_column(manager, "users", column).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_user_column(
            manager,
            ColumnDef::new("role")
                .string_len(16)
                .not_null()
                .default("user")
                .to_owned(),
        )
        .await?;
        add_user_column(
            manager,
            ColumnDef::new("pending")
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        )
        .await?;
        for column in QUOTA_COLUMNS {
            add_user_column(
                manager,
                ColumnDef::new(column).big_integer().null().to_owned(),
            )
            .await?;
        }
        add_column(
            manager,
            "api_keys",
            ColumnDef::new("expires_at").big_integer().null().to_owned(),
        )
        .await?;
        add_column(
            manager,
            "generations",
            ColumnDef::new("kind")
                .string_len(16)
                .not_null()
                .default("answer")
                .to_owned(),
        )
        .await?;
        add_column(
            manager,
            "api_keys",
            ColumnDef::new("read_only")
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        )
        .await?;
        create_table(
            manager,
            Table::create()
                .table("audit_log")
                .col(ColumnDef::new("id").uuid().not_null().primary_key())
                .col(ColumnDef::new("actor_id").uuid().null())
                .col(ColumnDef::new("actor_name").string_len(64).not_null())
                .col(ColumnDef::new("action").string_len(64).not_null())
                .col(ColumnDef::new("target_id").uuid().null())
                .col(ColumnDef::new("target_name").string_len(64).null())
                .col(ColumnDef::new("detail").string_len(1_000).not_null())
                .col(ColumnDef::new("created_at").big_integer().not_null())
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_log_created_at")
                    .table("audit_log")
                    .col("created_at")
                    .to_owned(),
            )
            .await?;
        create_table(
            manager,
            Table::create()
                .table("invites")
                .col(ColumnDef::new("id").uuid().not_null().primary_key())
                .col(ColumnDef::new("code_hash").string_len(64).not_null())
                .col(ColumnDef::new("created_by").uuid().null())
                .col(ColumnDef::new("created_at").big_integer().not_null())
                .col(ColumnDef::new("expires_at").big_integer().not_null())
                .col(ColumnDef::new("used_at").big_integer().null())
                .col(ColumnDef::new("used_by").uuid().null())
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_invites_code_hash")
                    .table("invites")
                    .col("code_hash")
                    .unique()
                    .to_owned(),
            )
            .await?;
        create_table(
            manager,
            Table::create()
                .table("server_settings")
                .col(
                    ColumnDef::new("name")
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new("value").string_len(1_000).not_null())
                .col(ColumnDef::new("updated_at").big_integer().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["server_settings", "invites", "audit_log"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        drop_column(manager, "generations", "kind").await?;
        for column in ["read_only", "expires_at"] {
            drop_column(manager, "api_keys", column).await?;
        }
        for column in QUOTA_COLUMNS.into_iter().chain(["pending", "role"]) {
            drop_column(manager, "users", column).await?;
        }
        Ok(())
    }
}
