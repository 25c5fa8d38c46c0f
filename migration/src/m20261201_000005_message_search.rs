//! Search that scales with the user's messages, not with the table:
//!
//! - `messages.user_id` (the chat's owner, copied on every insert) and an index on
//!   `(user_id, created_at, id)`: the newest messages of a user are one index range, so a
//!   search whose term is common stops after a page of hits and a short term reads a bounded
//!   window;
//! - a trigram index used as a prefilter (the same `LIKE` stays the exact filter, so results
//!   do not change): SQLite FTS5 `trigram` (contentless, keyed by a stable integer per message
//!   and kept by triggers), PostgreSQL `pg_trgm` GIN on `lower(content)`. MariaDB has no
//!   n-gram parser for InnoDB FULLTEXT: it keeps the ordered scan of the user's messages.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

use crate::alter::{add_column, drop_column, drop_index};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// SQLite: the stable key of each message and the trigram index over `content`.
///
/// An FTS5 row needs an integer key that never changes; a message's implicit `rowid` may be
/// renumbered by `VACUUM`, so each message gets its own key here.
const SQLITE_UP: [&str; 7] = [
    "CREATE TABLE message_search_keys (
        search_key INTEGER PRIMARY KEY,
        message_id NOT NULL UNIQUE
    )",
    "CREATE VIRTUAL TABLE message_search USING fts5(
        content, content = '', contentless_delete = 1, tokenize = 'trigram'
    )",
    "INSERT INTO message_search_keys (message_id) SELECT id FROM messages ORDER BY created_at, id",
    "INSERT INTO message_search (rowid, content)
        SELECT k.search_key, m.content FROM message_search_keys k
        JOIN messages m ON m.id = k.message_id",
    "CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
        INSERT INTO message_search_keys (message_id) VALUES (new.id);
        INSERT INTO message_search (rowid, content) VALUES (last_insert_rowid(), new.content);
    END",
    "CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages
        WHEN old.content IS NOT new.content BEGIN
        DELETE FROM message_search
            WHERE rowid = (SELECT search_key FROM message_search_keys WHERE message_id = old.id);
        INSERT INTO message_search (rowid, content)
            SELECT search_key, new.content FROM message_search_keys WHERE message_id = new.id;
    END",
    "CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
        DELETE FROM message_search
            WHERE rowid = (SELECT search_key FROM message_search_keys WHERE message_id = old.id);
        DELETE FROM message_search_keys WHERE message_id = old.id;
    END",
];

const SQLITE_DOWN: [&str; 5] = [
    "DROP TRIGGER message_search_delete",
    "DROP TRIGGER message_search_update",
    "DROP TRIGGER message_search_insert",
    "DROP TABLE message_search",
    "DROP TABLE message_search_keys",
];

/// PostgreSQL: `pg_trgm` (a trusted extension: the database owner may create it).
const POSTGRES_UP: [&str; 2] = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_messages_content_trgm ON messages USING gin (lower(content) gin_trgm_ops)",
];

const POSTGRES_DOWN: [&str; 1] = ["DROP INDEX ix_messages_content_trgm"];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            manager,
            "messages",
            ColumnDef::new("user_id").uuid().null().to_owned(),
        )
        .await?;
        let backend = manager.get_database_backend();
        let backfill = match backend {
            DbBackend::Postgres => {
                "UPDATE messages SET user_id = chats.user_id FROM chats \
                 WHERE chats.id = messages.chat_id"
            }
            DbBackend::MySql => {
                "UPDATE messages JOIN chats ON chats.id = messages.chat_id \
                 SET messages.user_id = chats.user_id"
            }
            _ => {
                "UPDATE messages SET user_id = \
                 (SELECT user_id FROM chats WHERE chats.id = messages.chat_id)"
            }
        };
        manager
            .get_connection()
            .execute_unprepared(backfill)
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_messages_user_created_id")
                    .table("messages")
                    .col("user_id")
                    .col("created_at")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        match backend {
            DbBackend::Sqlite => run(manager, &SQLITE_UP).await,
            DbBackend::Postgres => run(manager, &POSTGRES_UP).await,
            _ => Ok(()),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => run(manager, &SQLITE_DOWN).await?,
            DbBackend::Postgres => run(manager, &POSTGRES_DOWN).await?,
            _ => {}
        }
        drop_index(manager, "ix_messages_user_created_id", "messages").await?;
        drop_column(manager, "messages", "user_id").await
    }
}
