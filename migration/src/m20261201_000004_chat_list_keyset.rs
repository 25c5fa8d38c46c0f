//! Keyset pages of the chat list: each sort's index ends with the id, the tie-breaker of the
//! order, so a page after a cursor is one index range scan (no sort) on every backend.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (old index, new index, sort column).
const SORTS: [(&str, &str, &str); 3] = [
    (
        "ix_chats_user_updated",
        "ix_chats_user_updated_id",
        "updated_at",
    ),
    (
        "ix_chats_user_created",
        "ix_chats_user_created_id",
        "created_at",
    ),
    ("ix_chats_user_title", "ix_chats_user_title_id", "title"),
];

async fn swap(manager: &SchemaManager<'_>, to_keyset: bool) -> Result<(), DbErr> {
    for (old, new, column) in SORTS {
        let (create, drop) = if to_keyset { (new, old) } else { (old, new) };
        let mut index = Index::create();
        index.name(create).table("chats").col("user_id").col(column);
        if to_keyset {
            index.col("id");
        }
        // The new index first: MySQL keeps an index on `user_id` for its foreign key.
        manager.create_index(index.to_owned()).await?;
        manager
            .drop_index(Index::drop().name(drop).table("chats").to_owned())
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        swap(manager, false).await
    }
}
