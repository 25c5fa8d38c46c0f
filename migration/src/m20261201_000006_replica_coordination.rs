//! What replicas on one PostgreSQL share (the tables exist on every backend, so one schema
//! serves all; only the PostgreSQL coordination adapter uses them):
//! - `cluster_replicas`: one row per running process, with its heartbeat;
//! - `generation_leases`: the chat each generation runs in, and which replica runs it (one
//!   row per chat: the reservation that keeps two replicas from generating in one chat);
//! - `generation_slots`: one row per generation running (streamed or blocking), counted for
//!   the per-user cap;
//! - `rate_limit_buckets`: the GCRA state of each rate-limit key (its theoretical arrival time).
//!
//! On PostgreSQL, `arbor_take_slot` takes a slot under the cap in one round trip.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Takes slot `slot_id` for `owner` unless `cap` of their slots are held by live replicas
/// (heartbeat within `lease` µs) and younger than `max_age` µs. The advisory lock makes the
/// count and the insert one decision per user; each statement of a function sees what was
/// committed before it ran, so the count after the lock sees every earlier slot.
const TAKE_SLOT: &str = "CREATE OR REPLACE FUNCTION arbor_take_slot(
    slot_id uuid, owner uuid, replica uuid, cap bigint, max_age bigint, lease bigint
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    now_us bigint := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
    held bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(owner::text, 0));
    SELECT count(*) INTO held FROM generation_slots s
        JOIN cluster_replicas r ON r.id = s.replica_id
        WHERE s.user_id = owner AND s.taken_at >= now_us - max_age
        AND r.heartbeat_at >= now_us - lease;
    IF held >= cap THEN
        RETURN false;
    END IF;
    INSERT INTO generation_slots (id, user_id, replica_id, taken_at)
        VALUES (slot_id, owner, replica, now_us);
    RETURN true;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("cluster_replicas")
                    .col(ColumnDef::new("id").uuid().not_null().primary_key())
                    .col(ColumnDef::new("started_at").big_integer().not_null())
                    .col(ColumnDef::new("alive_since").big_integer().not_null())
                    .col(ColumnDef::new("heartbeat_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("generation_leases")
                    .col(ColumnDef::new("chat_id").uuid().not_null().primary_key())
                    .col(ColumnDef::new("claim_id").uuid().not_null())
                    .col(ColumnDef::new("replica_id").uuid().not_null())
                    .col(ColumnDef::new("user_id").uuid().not_null())
                    .col(ColumnDef::new("running").boolean().not_null())
                    .col(ColumnDef::new("claimed_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_generation_leases_replica_id")
                    .table("generation_leases")
                    .col("replica_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("generation_slots")
                    .col(ColumnDef::new("id").uuid().not_null().primary_key())
                    .col(ColumnDef::new("user_id").uuid().not_null())
                    .col(ColumnDef::new("replica_id").uuid().not_null())
                    .col(ColumnDef::new("taken_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        for col in ["user_id", "replica_id"] {
            manager
                .create_index(
                    Index::create()
                        .name(format!("ix_generation_slots_{col}"))
                        .table("generation_slots")
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("rate_limit_buckets")
                    .col(
                        ColumnDef::new("key")
                            .string_len(200)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("tat").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_rate_limit_buckets_tat")
                    .table("rate_limit_buckets")
                    .col("tat")
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(TAKE_SLOT)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "DROP FUNCTION IF EXISTS arbor_take_slot(uuid, uuid, uuid, bigint, bigint, bigint)",
                )
                .await?;
        }
        for table in [
            "rate_limit_buckets",
            "generation_slots",
            "generation_leases",
            "cluster_replicas",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
