//! Generation records that outlive their chat, or never had one: calls of the
//! OpenAI-compatible surface that store no conversation still count in analytics and quotas,
//! and deleting a chat (or an answer) must not erase what it cost. `generations.chat_id` and
//! `generations.message_id` become nullable and their foreign keys `ON DELETE SET NULL`
//! (they cascaded).
//!
//! SQLite cannot change a column or a key: the table is rebuilt from its own catalogue
//! (columns, defaults, keys) with the two columns changed, its rows copied, and its indexes
//! made again.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

const RELAXED: [&str; 2] = ["chat_id", "message_id"];

/// `"name"` quoted for SQLite.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn rebuild_on_sqlite(manager: &SchemaManager<'_>, nullable: bool) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let query = |sql: &str| Statement::from_string(DbBackend::Sqlite, sql.to_owned());
    let columns = db
        .query_all_raw(query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('generations') ORDER BY cid",
        ))
        .await?;
    let mut definitions = Vec::new();
    let mut names = Vec::new();
    for row in &columns {
        let name: String = row.try_get("", "name")?;
        let kind: String = row.try_get("", "type")?;
        let not_null: i64 = row.try_get("", "notnull")?;
        let default: Option<String> = row.try_get("", "dflt_value")?;
        let pk: i64 = row.try_get("", "pk")?;
        let relaxed = RELAXED.contains(&name.as_str());
        let required = if relaxed { !nullable } else { not_null != 0 };
        let mut column = format!("{} {kind}", quoted(&name));
        if pk > 0 {
            column.push_str(" NOT NULL PRIMARY KEY");
        } else if required {
            column.push_str(" NOT NULL");
        }
        if let Some(default) = default {
            column.push_str(&format!(" DEFAULT {default}"));
        }
        names.push(quoted(&name));
        definitions.push(column);
    }
    let keys = db
        .query_all_raw(query(
            "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list('generations')",
        ))
        .await?;
    for row in &keys {
        let table: String = row.try_get("", "table")?;
        let from: String = row.try_get("", "from")?;
        let to: String = row.try_get("", "to")?;
        let on_delete: String = row.try_get("", "on_delete")?;
        let on_delete = match (RELAXED.contains(&from.as_str()), nullable) {
            (true, true) => "SET NULL".to_owned(),
            (true, false) => "CASCADE".to_owned(),
            (false, _) => on_delete,
        };
        definitions.push(format!(
            "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {on_delete}",
            quoted(&from),
            quoted(&table),
            quoted(&to)
        ));
    }
    let indexes = db
        .query_all_raw(query(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'generations' AND sql IS NOT NULL",
        ))
        .await?;
    let indexes: Vec<String> = indexes
        .iter()
        .map(|row| row.try_get("", "sql"))
        .collect::<Result<_, _>>()?;
    let columns = names.join(", ");
    let mut script = vec![
        format!(
            "CREATE TABLE generations_rebuilt ({})",
            definitions.join(", ")
        ),
        format!("INSERT INTO generations_rebuilt ({columns}) SELECT {columns} FROM generations"),
        "DROP TABLE generations".to_owned(),
        "ALTER TABLE generations_rebuilt RENAME TO generations".to_owned(),
    ];
    script.extend(indexes);
    for sql in script {
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}

/// Makes the chat and message keys of `generations` act `on_delete` (PostgreSQL, MySQL).
async fn set_keys(manager: &SchemaManager<'_>, on_delete: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let drop = if manager.get_database_backend() == DbBackend::Postgres {
        "DROP CONSTRAINT"
    } else {
        "DROP FOREIGN KEY"
    };
    for (name, column, table) in [
        ("fk_generations_chat", "chat_id", "chats"),
        ("fk_generations_message", "message_id", "messages"),
    ] {
        db.execute_unprepared(&format!("ALTER TABLE generations {drop} {name}"))
            .await?;
        db.execute_unprepared(&format!(
            "ALTER TABLE generations ADD CONSTRAINT {name} FOREIGN KEY ({column}) \
             REFERENCES {table} (id) ON DELETE {on_delete}"
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => rebuild_on_sqlite(manager, true).await,
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "ALTER TABLE generations ALTER COLUMN chat_id DROP NOT NULL, \
                     ALTER COLUMN message_id DROP NOT NULL",
                )
                .await?;
                set_keys(manager, "SET NULL").await
            }
            _ => {
                // MySQL and MariaDB
                db.execute_unprepared(
                    "ALTER TABLE generations MODIFY chat_id BINARY(16) NULL, \
                     MODIFY message_id BINARY(16) NULL",
                )
                .await?;
                set_keys(manager, "SET NULL").await
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "DELETE FROM generations WHERE chat_id IS NULL OR message_id IS NULL",
        )
        .await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => rebuild_on_sqlite(manager, false).await,
            DbBackend::Postgres => {
                set_keys(manager, "CASCADE").await?;
                db.execute_unprepared(
                    "ALTER TABLE generations ALTER COLUMN chat_id SET NOT NULL, \
                     ALTER COLUMN message_id SET NOT NULL",
                )
                .await?;
                Ok(())
            }
            _ => {
                // MySQL and MariaDB
                set_keys(manager, "CASCADE").await?;
                db.execute_unprepared(
                    "ALTER TABLE generations MODIFY chat_id BINARY(16) NOT NULL, \
                     MODIFY message_id BINARY(16) NOT NULL",
                )
                .await?;
                Ok(())
            }
        }
    }
}
