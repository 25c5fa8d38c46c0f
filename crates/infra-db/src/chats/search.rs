//! Message search: the same case-insensitive substring filter (`LOWER(content) LIKE`) on
//! every backend, reached through an index wherever one can answer.
//!
//! 1. A query of [`SEARCH_INDEXED_MIN`] characters or more first counts its matches up to
//!    [`SEARCH_TOTAL_CAP`] + 1. On SQLite the candidates come from the FTS5 `trigram` index
//!    (`message_search`), on PostgreSQL the planner takes them from the `pg_trgm` GIN index;
//!    every candidate is then checked with the exact `LIKE`, so results never differ from a
//!    full scan. A rare term costs its hits, not the table.
//! 2. When the term matched more than the cap, it is common: the page is read by walking the
//!    user's messages newest first (`(user_id, created_at, id)` index) with the `LIKE`,
//!    which stops after the page. Otherwise the (at most cap) candidates are sorted.
//! 3. A shorter query has no trigram: it reads the newest
//!    [`SEARCH_SHORT_WINDOW`](domain::limits::SEARCH_SHORT_WINDOW) messages of
//!    its scope, no more, and says whether that was all of them.

use domain::limits::{SEARCH_INDEXED_MIN, SEARCH_TOTAL_CAP};
use domain::{ChatId, ChatTitle, UserId};
use sea_orm::prelude::{Expr, Uuid};
use sea_orm::sea_query::{Asterisk, Func, LikeExpr, Query};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, ExprTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Statement,
};
use usecase::ports::{ChatRepository, RepoError, SearchHit, SearchResults};

use super::like_pattern;
use crate::SeaOrmStore;
use crate::convert::{to_message, uuid};
use crate::entity::{chats, messages};
use crate::error::to_repo_error;

/// An FTS5 query matching `query` as one phrase (a substring, with the trigram tokenizer).
/// Callers pass the query lowercased as the `LIKE` pattern is: the index then folds both
/// sides alike, so everything the `LIKE` matches is a candidate (an uppercase `İ` lowercases
/// to two code points, which folding the original would not give).
fn fts_phrase(query: &str) -> String {
    format!("\"{}\"", query.replace('"', "\"\""))
}

/// The FTS5 candidates of the SQLite index path, in a fixed join order (the index first).
const SQLITE_CANDIDATES: &str = "FROM message_search f
    CROSS JOIN message_search_keys k ON k.search_key = f.rowid
    CROSS JOIN messages m ON m.id = k.message_id
    WHERE message_search MATCH ? AND m.user_id = ? AND LOWER(m.content) LIKE ? ESCAPE '\\'";

impl SeaOrmStore {
    pub(super) async fn search(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: &domain::SearchQuery,
        page: domain::PageRequest,
    ) -> Result<SearchResults, RepoError> {
        if let Some(chat) = chat {
            self.get_chat(owner, chat).await?;
        }
        let pattern = like_pattern(query.as_str());
        let mut scope = Condition::all().add(messages::Column::UserId.eq(uuid(owner.as_u128())));
        if let Some(chat) = chat {
            scope = scope.add(messages::Column::ChatId.eq(uuid(chat.as_u128())));
        }
        let short = query.as_str().chars().count() < SEARCH_INDEXED_MIN;
        let mut searched_all = true;
        if short && let Some(edge) = self.window_edge(scope.clone()).await? {
            searched_all = false;
            scope = scope.add(edge);
        }
        let matching = scope.add(
            Expr::expr(Func::lower(Expr::col(messages::Column::Content)))
                .like(LikeExpr::new(pattern.clone()).escape('\\')),
        );
        let fts = !short && self.backend == DbBackend::Sqlite;
        let counted = if fts {
            self.count_fts(query, owner, chat, &pattern).await?
        } else {
            let capped = messages::Entity::find()
                .select_only()
                .column(messages::Column::Id)
                .filter(matching.clone())
                .limit(SEARCH_TOTAL_CAP + 1)
                .into_query();
            let mut count = Query::select();
            count
                .expr_as(Expr::col(Asterisk).count(), "n")
                .from_subquery(capped, "capped");
            self.count_rows(self.backend.build(&count)).await?
        };
        let rows = if fts && counted <= SEARCH_TOTAL_CAP {
            self.page_fts(query, owner, chat, &pattern, page).await?
        } else {
            messages::Entity::find()
                .filter(matching)
                .order_by_desc(messages::Column::CreatedAt)
                .order_by_desc(messages::Column::Id)
                .offset(page.offset())
                .limit(u64::from(page.limit()))
                .all(&self.read)
                .await
                .map_err(to_repo_error)?
        };
        let total_exact = counted <= SEARCH_TOTAL_CAP;
        Ok(SearchResults {
            page: domain::Page {
                items: self.with_titles(rows).await?,
                total: Ord::min(counted, SEARCH_TOTAL_CAP),
                request: page,
            },
            total_exact,
            searched_all,
        })
    }

    /// The condition "among the newest `short_search_window` messages of `scope`", or
    /// `None` when the scope holds no more than that.
    async fn window_edge(&self, scope: Condition) -> Result<Option<Condition>, RepoError> {
        let first_outside = messages::Entity::find()
            .select_only()
            .column(messages::Column::CreatedAt)
            .column(messages::Column::Id)
            .filter(scope)
            .order_by_desc(messages::Column::CreatedAt)
            .order_by_desc(messages::Column::Id)
            .offset(self.short_search_window)
            .limit(1)
            .into_tuple::<(i64, Uuid)>()
            .one(&self.read)
            .await
            .map_err(to_repo_error)?;
        // `created_at >= t AND (created_at > t OR id > i)`: the first conjunct bounds the
        // index range on every backend.
        Ok(first_outside.map(|(at, id)| {
            Condition::all()
                .add(messages::Column::CreatedAt.gte(at))
                .add(
                    Condition::any()
                        .add(messages::Column::CreatedAt.gt(at))
                        .add(messages::Column::Id.gt(id)),
                )
        }))
    }

    /// SQLite: `candidates` with the values of its placeholders, the chat filter added.
    fn fts_statement(
        select: &str,
        candidates_tail: &str,
        query: &domain::SearchQuery,
        (owner, chat): (UserId, Option<ChatId>),
        pattern: &str,
    ) -> (String, Vec<sea_orm::Value>) {
        let mut values: Vec<sea_orm::Value> = vec![
            fts_phrase(&query.as_str().to_lowercase()).into(),
            uuid(owner.as_u128()).into(),
            pattern.to_owned().into(),
        ];
        let mut sql = format!("{select} {SQLITE_CANDIDATES}");
        if let Some(chat) = chat {
            values.push(uuid(chat.as_u128()).into());
            sql.push_str(" AND m.chat_id = ?");
        }
        sql.push(' ');
        sql.push_str(candidates_tail);
        (sql, values)
    }

    /// SQLite: how many messages in scope match, counted up to the cap + 1.
    async fn count_fts(
        &self,
        query: &domain::SearchQuery,
        owner: UserId,
        chat: Option<ChatId>,
        pattern: &str,
    ) -> Result<u64, RepoError> {
        let (inner, values) = Self::fts_statement(
            "SELECT 1",
            &format!("LIMIT {}", SEARCH_TOTAL_CAP + 1),
            query,
            (owner, chat),
            pattern,
        );
        let sql = format!("SELECT COUNT(*) AS n FROM ({inner}) AS capped");
        self.count_rows(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await
    }

    /// The `n` column of a counting statement.
    async fn count_rows(&self, count: Statement) -> Result<u64, RepoError> {
        let row = sea_orm::ConnectionTrait::query_one_raw(&self.read, count)
            .await
            .map_err(to_repo_error)?;
        let n: i64 = row
            .map(|r| r.try_get("", "n"))
            .transpose()
            .map_err(to_repo_error)?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// SQLite: one page of the (at most cap) matches, newest first.
    async fn page_fts(
        &self,
        query: &domain::SearchQuery,
        owner: UserId,
        chat: Option<ChatId>,
        pattern: &str,
        page: domain::PageRequest,
    ) -> Result<Vec<messages::Model>, RepoError> {
        let (sql, values) = Self::fts_statement(
            "SELECT m.*",
            &format!(
                "ORDER BY m.created_at DESC, m.id DESC LIMIT {} OFFSET {}",
                page.limit(),
                page.offset()
            ),
            query,
            (owner, chat),
            pattern,
        );
        messages::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .all(&self.read)
            .await
            .map_err(to_repo_error)
    }

    /// The hits of `rows`, each with its chat's title (one query for all of them).
    async fn with_titles(&self, rows: Vec<messages::Model>) -> Result<Vec<SearchHit>, RepoError> {
        let chat_ids: Vec<_> = rows.iter().map(|r| r.chat_id).collect();
        let titles: std::collections::HashMap<Uuid, Option<String>> = chats::Entity::find()
            .select_only()
            .column(chats::Column::Id)
            .column(chats::Column::Title)
            .filter(chats::Column::Id.is_in(chat_ids))
            .into_tuple::<(Uuid, Option<String>)>()
            .all(&self.read)
            .await
            .map_err(to_repo_error)?
            .into_iter()
            .collect();
        rows.into_iter()
            .map(|row| {
                let chat_title = titles
                    .get(&row.chat_id)
                    .cloned()
                    .flatten()
                    .map(ChatTitle::parse)
                    .transpose()
                    .map_err(crate::error::corrupt)?;
                Ok(SearchHit {
                    message: to_message(row)?,
                    chat_title,
                })
            })
            .collect()
    }
}
