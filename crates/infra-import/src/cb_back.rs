//! The original service's SQLite database (Tortoise ORM schema, aerich migration
//! `0_20250608025443`), opened read-only: its users, chats (`discussionstructure` with the
//! tree in `serialized_structure`), messages, templates and presets.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, QueryResult, Statement, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use usecase::import::{
    LegacyAccount, LegacyChat, LegacyMessage, LegacyNode, LegacyPreset, LegacySource,
    LegacyTemplate, LegacyUser,
};
use usecase::ports::BoxError;

use crate::timestamp;

/// The tables the original always has.
const REQUIRED_TABLES: [&str; 3] = ["user", "discussionstructure", "message"];

/// The original's database.
#[derive(Debug)]
pub struct CbBackDatabase {
    db: DatabaseConnection,
    templates: bool,
    presets: bool,
}

impl CbBackDatabase {
    /// Opens the SQLite database at `url` (`sqlite:///absolute/path.db`) read-only and
    /// checks it holds the original's tables.
    ///
    /// # Errors
    /// When it cannot be opened or is not the original's database.
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        if !url.starts_with("sqlite:") {
            return Err("the original service's database is SQLite: give a sqlite:// URL".into());
        }
        // Read-only whatever the URL asks: never create or change the original's file.
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("mode="))
            .collect();
        params.push("mode=ro");
        let url = format!("{path}?{}", params.join("&"));
        let db = Database::connect(url.as_str()).await?;
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT name FROM sqlite_master WHERE type = 'table'",
            ))
            .await?;
        let tables: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String>("", "name").ok())
            .collect();
        if let Some(missing) = REQUIRED_TABLES
            .iter()
            .find(|t| !tables.iter().any(|have| have == *t))
        {
            return Err(format!(
                "not the original service's database: it has no table {missing:?}"
            )
            .into());
        }
        Ok(Self {
            templates: tables.iter().any(|t| t == "prompttemplate"),
            presets: tables.iter().any(|t| t == "conversationpreset"),
            db,
        })
    }

    async fn rows(&self, sql: &str, values: Vec<Value>) -> Result<Vec<QueryResult>, BoxError> {
        Ok(self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                sql,
                values,
            ))
            .await?)
    }

    async fn chats(&self, user: i64) -> Result<Vec<LegacyChat>, BoxError> {
        let rows = self
            .rows(
                "SELECT id, uuid, title, system_prompt, serialized_structure, created_at, updated_at
                 FROM discussionstructure WHERE user_id = ? ORDER BY id",
                vec![user.into()],
            )
            .await?;
        let mut chats = Vec::with_capacity(rows.len());
        for row in rows {
            // A row that cannot be read is one chat left out (and said), not the end.
            let chat = match self.chat(&row).await {
                Ok(chat) => chat,
                Err(e) => LegacyChat {
                    uuid: row
                        .try_get::<String>("", "uuid")
                        .unwrap_or_else(|_| "(no uuid)".into()),
                    title: None,
                    system_prompt: None,
                    created_at: domain::Timestamp::from_unix_micros(0),
                    updated_at: domain::Timestamp::from_unix_micros(0),
                    structure: Err(format!("a row cannot be read: {e}")),
                    messages: Vec::new(),
                },
            };
            chats.push(chat);
        }
        Ok(chats)
    }

    /// One `discussionstructure` row with its messages.
    async fn chat(&self, row: &QueryResult) -> Result<LegacyChat, BoxError> {
        {
            let id: i64 = row.try_get("", "id")?;
            let messages = self
                .rows(
                    "SELECT uuid, role, content, created_at FROM message
                     WHERE discussion_id = ? ORDER BY id",
                    vec![id.into()],
                )
                .await?
                .iter()
                .map(|m| {
                    Ok::<_, BoxError>(LegacyMessage {
                        uuid: m.try_get("", "uuid")?,
                        role: m.try_get("", "role")?,
                        content: m.try_get("", "content")?,
                        created_at: timestamp(m, "created_at")?,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(LegacyChat {
                uuid: row.try_get("", "uuid")?,
                title: row.try_get("", "title")?,
                system_prompt: row.try_get("", "system_prompt")?,
                created_at: timestamp(row, "created_at")?,
                updated_at: timestamp(row, "updated_at")?,
                structure: structure(row),
                messages,
            })
        }
    }

    /// The rows `sql` selects for `user` as `T`; none when the table is not there (older
    /// versions of the original had no templates or presets).
    async fn owned<T>(
        &self,
        present: bool,
        sql: &str,
        user: i64,
        read: fn(&QueryResult) -> Result<T, BoxError>,
    ) -> Result<Vec<Result<T, String>>, BoxError> {
        if !present {
            return Ok(Vec::new());
        }
        Ok(self
            .rows(sql, vec![user.into()])
            .await?
            .iter()
            .map(|row| read(row).map_err(|e| format!("a row cannot be read: {e}")))
            .collect())
    }
}

fn template(t: &QueryResult) -> Result<LegacyTemplate, BoxError> {
    Ok(LegacyTemplate {
        uuid: t.try_get("", "uuid")?,
        name: t.try_get("", "name")?,
        description: t.try_get("", "description")?,
        content: t.try_get("", "template_content")?,
        category: t.try_get("", "category")?,
        is_public: t.try_get("", "is_public")?,
        is_favorite: t.try_get("", "is_favorite")?,
        usage_count: t.try_get("", "usage_count")?,
        created_at: timestamp(t, "created_at")?,
        updated_at: timestamp(t, "updated_at")?,
    })
}

fn preset(p: &QueryResult) -> Result<LegacyPreset, BoxError> {
    Ok(LegacyPreset {
        uuid: p.try_get("", "uuid")?,
        name: p.try_get("", "name")?,
        description: p.try_get("", "description")?,
        model_id: p.try_get("", "model_id")?,
        temperature: p.try_get("", "temperature")?,
        max_tokens: p.try_get("", "max_tokens")?,
        system_prompt: p.try_get("", "system_prompt")?,
        is_favorite: p.try_get("", "is_favorite")?,
        usage_count: p.try_get("", "usage_count")?,
        created_at: timestamp(p, "created_at")?,
        updated_at: timestamp(p, "updated_at")?,
    })
}

/// The chat's tree, flattened, or why it cannot be read.
fn structure(row: &QueryResult) -> Result<Vec<LegacyNode>, String> {
    let blob: Vec<u8> = match row.try_get::<Vec<u8>>("", "serialized_structure") {
        Ok(bytes) => bytes,
        Err(_) => row
            .try_get::<String>("", "serialized_structure")
            .map(String::into_bytes)
            .map_err(|_| "serialized_structure is missing".to_owned())?,
    };
    if blob.first() == Some(&0x80) {
        return Err("a legacy pickle, which the original itself no longer reads".into());
    }
    flatten(&blob).map_err(|e| format!("broken JSON: {e}"))
}

/// The nodes of a nested `{"uuid": "…", "children": [ … ]}` tree, root first, each after
/// its parent. A long conversation nests as deep as it is long: the parser has no depth
/// limit and grows its stack as it descends, and nothing nested is ever built (or dropped).
fn flatten(json: &[u8]) -> Result<Vec<LegacyNode>, serde_json::Error> {
    let mut flat: Vec<(String, Option<usize>)> = Vec::new();
    let mut parser = serde_json::Deserializer::from_slice(json);
    parser.disable_recursion_limit();
    let parser = serde_stacker::Deserializer::new(&mut parser);
    NodeSeed {
        parent: None,
        flat: &mut flat,
    }
    .deserialize(parser)?;
    let uuids: Vec<String> = flat.iter().map(|(uuid, _)| uuid.clone()).collect();
    Ok(flat
        .into_iter()
        .map(|(uuid, parent)| LegacyNode {
            uuid,
            parent: parent.map(|p| uuids[p].clone()),
        })
        .collect())
}

/// One node: its entry goes in first (its children need its index), its uuid when read.
struct NodeSeed<'a> {
    parent: Option<usize>,
    flat: &'a mut Vec<(String, Option<usize>)>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a tree node {\"uuid\": …, \"children\": […]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let index = self.flat.len();
        self.flat.push((String::new(), self.parent));
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "uuid" => self.flat[index].0 = map.next_value()?,
                "children" => map.next_value_seed(ChildrenSeed {
                    parent: index,
                    flat: &mut *self.flat,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if self.flat[index].0.is_empty() {
            return Err(de::Error::missing_field("uuid"));
        }
        Ok(())
    }
}

/// A node's children.
struct ChildrenSeed<'a> {
    parent: usize,
    flat: &'a mut Vec<(String, Option<usize>)>,
}

impl<'de> DeserializeSeed<'de> for ChildrenSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ChildrenSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of tree nodes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(NodeSeed {
                parent: Some(self.parent),
                flat: &mut *self.flat,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl LegacySource for CbBackDatabase {
    async fn user_rows(&self) -> Result<Vec<i64>, BoxError> {
        self.rows(r#"SELECT id FROM "user" ORDER BY id"#, Vec::new())
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<i64>("", "id")?))
            .collect()
    }

    async fn account(&self, row: i64) -> Result<LegacyAccount, BoxError> {
        let users = self
            .rows(
                r#"SELECT uuid, name, password, created_at FROM "user" WHERE id = ?"#,
                vec![row.into()],
            )
            .await?;
        let user = users.first().ok_or("the user row disappeared")?;
        Ok(LegacyAccount {
            user: LegacyUser {
                uuid: user.try_get("", "uuid")?,
                name: user.try_get("", "name")?,
                password_hash: user.try_get("", "password")?,
                created_at: timestamp(user, "created_at")?,
            },
            chats: self.chats(row).await?,
            templates: self
                .owned(
                    self.templates,
                    "SELECT uuid, name, description, template_content, category, is_public,
                            is_favorite, usage_count, created_at, updated_at
                     FROM prompttemplate WHERE user_id = ? ORDER BY id",
                    row,
                    template,
                )
                .await?,
            presets: self
                .owned(
                    self.presets,
                    "SELECT uuid, name, description, model_id, temperature, max_tokens,
                            system_prompt, is_favorite, usage_count, created_at, updated_at
                     FROM conversationpreset WHERE user_id = ? ORDER BY id",
                    row,
                    preset,
                )
                .await?,
        })
    }
}
