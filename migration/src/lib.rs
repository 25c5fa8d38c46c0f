//! Arbor's schema: one migration set that runs unchanged on SQLite, PostgreSQL and
//! MySQL/MariaDB.
//!
//! Conventions:
//! - ids are UUIDs (v7, time-ordered);
//! - times are `BIGINT` microseconds since the Unix epoch (exact ordering on every backend;
//!   MySQL's `TIMESTAMP` keeps only seconds);
//! - money is `BIGINT` picodollars, prices are decimal strings as the provider sends them;
//! - every foreign key has an index, and so does every column a list sorts or filters by.

pub use sea_orm_migration::prelude::*;

mod alter;
mod m20261128_000001_initial_schema;
mod m20261129_000002_long_text_on_mysql;
mod m20261201_000003_account_revocation;
mod m20261201_000004_chat_list_keyset;
mod m20261201_000005_message_search;
mod m20261201_000006_replica_coordination;
mod m20261201_000007_cost_source;
mod m20261201_000008_inactive_models;
mod m20261201_000009_records_without_chat;
mod m20261201_000010_administration;
mod m20261202_000011_account_tombstones;

/// Applies Arbor's migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial_schema::Migration),
            Box::new(m20261129_000002_long_text_on_mysql::Migration),
            Box::new(m20261201_000003_account_revocation::Migration),
            Box::new(m20261201_000004_chat_list_keyset::Migration),
            Box::new(m20261201_000005_message_search::Migration),
            Box::new(m20261201_000006_replica_coordination::Migration),
            Box::new(m20261201_000007_cost_source::Migration),
            Box::new(m20261201_000008_inactive_models::Migration),
            Box::new(m20261201_000009_records_without_chat::Migration),
            Box::new(m20261201_000010_administration::Migration),
            Box::new(m20261202_000011_account_tombstones::Migration),
        ]
    }
}
