//! Every table of the data model.

use crate::alter::create_table;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, boolean, double_null, string_len, string_len_null, text,
    text_null, uuid, uuid_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables in creation order; dropped in reverse.
const TABLES: [&str; 10] = [
    "users",
    "refresh_tokens",
    "api_keys",
    "user_settings",
    "models",
    "presets",
    "chats",
    "messages",
    "generations",
    "prompt_templates",
];

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    columns: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for column in columns {
        stmt.col(*column);
    }
    if unique {
        stmt.unique();
    }
    manager.create_index(stmt).await
}

fn fk(
    name: &str,
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

fn owned_by_user(table: &'static str) -> ForeignKeyCreateStatement {
    fk(
        &format!("fk_{table}_user"),
        (table, "user_id"),
        ("users", "id"),
        ForeignKeyAction::Cascade,
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(
            manager,
            Table::create()
                .table("users")
                .col(uuid("id").primary_key())
                .col(string_len("username", 32))
                .col(string_len("username_canonical", 32))
                .col(string_len("password_hash", 255))
                .col(boolean("disabled").default(false))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ux_users_username",
            "users",
            &["username_canonical"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_users_created_at",
            "users",
            &["created_at"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("refresh_tokens")
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(uuid("family_id"))
                .col(string_len("token_hash", 64))
                .col(big_integer("created_at"))
                .col(big_integer("expires_at"))
                .col(big_integer_null("used_at"))
                .col(big_integer_null("revoked_at"))
                .foreign_key(&mut owned_by_user("refresh_tokens"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ux_refresh_tokens_hash",
            "refresh_tokens",
            &["token_hash"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_refresh_tokens_user",
            "refresh_tokens",
            &["user_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_refresh_tokens_family",
            "refresh_tokens",
            &["family_id"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("api_keys")
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("name", 100))
                .col(string_len("prefix", 32))
                .col(string_len("key_hash", 64))
                .col(big_integer("created_at"))
                .col(big_integer_null("last_used_at"))
                .col(big_integer_null("revoked_at"))
                .foreign_key(&mut owned_by_user("api_keys"))
                .to_owned(),
        )
        .await?;
        index(manager, "ux_api_keys_prefix", "api_keys", &["prefix"], true).await?;
        index(
            manager,
            "ix_api_keys_user",
            "api_keys",
            &["user_id", "created_at"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("user_settings")
                .col(uuid("user_id").primary_key())
                .col(string_len_null("default_model_id", 200))
                .col(big_integer("updated_at"))
                .foreign_key(&mut owned_by_user("user_settings"))
                .to_owned(),
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("models")
                .col(string_len("id", 200).primary_key())
                .col(string_len("name", 300))
                .col(text_null("description"))
                .col(big_integer_null("context_length"))
                .col(string_len("prompt_price", 40))
                .col(string_len("completion_price", 40))
                .col(text("input_modalities"))
                .col(text("output_modalities"))
                .col(big_integer_null("created"))
                .col(big_integer("fetched_at"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ix_models_fetched_at",
            "models",
            &["fetched_at"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("presets")
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("name", 100))
                .col(string_len_null("description", 500))
                .col(string_len_null("model_id", 200))
                .col(double_null("temperature"))
                .col(big_integer_null("max_tokens"))
                .col(text_null("system_prompt"))
                .col(boolean("is_favorite").default(false))
                .col(big_integer("usage_count").default(0))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .foreign_key(&mut owned_by_user("presets"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ix_presets_user_updated",
            "presets",
            &["user_id", "updated_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_presets_user_name",
            "presets",
            &["user_id", "name"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_presets_user_usage",
            "presets",
            &["user_id", "usage_count"],
            false,
        )
        .await?;

        // `root_id` and `current_leaf_id` point into `messages` without a foreign key: a
        // chats⇄messages key cycle cannot be created or cascaded portably. Both are only
        // written inside the transactions that write the messages they name.
        create_table(
            manager,
            Table::create()
                .table("chats")
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len_null("title", 200))
                .col(boolean("title_set_by_user").default(false))
                .col(text_null("system_prompt"))
                .col(string_len_null("model_id", 200))
                .col(uuid_null("preset_id"))
                .col(uuid("root_id"))
                .col(uuid("current_leaf_id"))
                .col(big_integer("message_count").default(0))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .foreign_key(&mut owned_by_user("chats"))
                .foreign_key(&mut fk(
                    "fk_chats_preset",
                    ("chats", "preset_id"),
                    ("presets", "id"),
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ix_chats_user_updated",
            "chats",
            &["user_id", "updated_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_chats_user_created",
            "chats",
            &["user_id", "created_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_chats_user_title",
            "chats",
            &["user_id", "title"],
            false,
        )
        .await?;
        index(manager, "ix_chats_preset", "chats", &["preset_id"], false).await?;

        // `parent_id` is `ON DELETE SET NULL`, not CASCADE: MySQL stops cascading after 15
        // levels, and subtrees are deleted explicitly, in one transaction, by the application
        // (which never leaves a surviving child of a deleted message).
        create_table(
            manager,
            Table::create()
                .table("messages")
                .col(uuid("id").primary_key())
                .col(uuid("chat_id"))
                .col(uuid_null("parent_id"))
                .col(string_len("role", 16))
                .col(text("content"))
                .col(string_len("status", 16))
                .col(big_integer("created_at"))
                .foreign_key(&mut fk(
                    "fk_messages_chat",
                    ("messages", "chat_id"),
                    ("chats", "id"),
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_messages_parent",
                    ("messages", "parent_id"),
                    ("messages", "id"),
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ix_messages_chat_created",
            "messages",
            &["chat_id", "created_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_messages_parent",
            "messages",
            &["parent_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_messages_status",
            "messages",
            &["status"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("generations")
                .col(uuid("id").primary_key())
                .col(uuid("message_id"))
                .col(uuid("chat_id"))
                .col(uuid("user_id"))
                .col(string_len("provider", 100))
                .col(string_len("model", 200))
                .col(big_integer("prompt_tokens"))
                .col(big_integer("completion_tokens"))
                .col(big_integer("total_tokens"))
                .col(big_integer("cost_pico_usd"))
                .col(big_integer("latency_ms"))
                .col(big_integer_null("ttft_ms"))
                .col(string_len_null("finish_reason", 50))
                .col(big_integer("created_at"))
                .foreign_key(&mut fk(
                    "fk_generations_message",
                    ("generations", "message_id"),
                    ("messages", "id"),
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut fk(
                    "fk_generations_chat",
                    ("generations", "chat_id"),
                    ("chats", "id"),
                    ForeignKeyAction::Cascade,
                ))
                .foreign_key(&mut owned_by_user("generations"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ux_generations_message",
            "generations",
            &["message_id"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_generations_chat",
            "generations",
            &["chat_id"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_generations_user_created",
            "generations",
            &["user_id", "created_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_generations_user_model",
            "generations",
            &["user_id", "model"],
            false,
        )
        .await?;

        create_table(
            manager,
            Table::create()
                .table("prompt_templates")
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("name", 100))
                .col(string_len_null("description", 500))
                .col(text("content"))
                .col(string_len_null("category", 50))
                .col(text("variables"))
                .col(boolean("is_public").default(false))
                .col(boolean("is_favorite").default(false))
                .col(big_integer("usage_count").default(0))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .foreign_key(&mut owned_by_user("prompt_templates"))
                .to_owned(),
        )
        .await?;
        index(
            manager,
            "ix_templates_user_updated",
            "prompt_templates",
            &["user_id", "updated_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_templates_public_updated",
            "prompt_templates",
            &["is_public", "updated_at"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_templates_category",
            "prompt_templates",
            &["category"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_templates_name",
            "prompt_templates",
            &["name"],
            false,
        )
        .await?;
        index(
            manager,
            "ix_templates_usage",
            "prompt_templates",
            &["usage_count"],
            false,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
