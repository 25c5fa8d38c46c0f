//! [`ChatRepository`] on sea-orm: chats and their message trees.

use domain::{
    Chat, ChatId, ChatTitle, ConversationTree, GenerationRecord, Message, MessageId, MessageStatus,
    Role, SystemPrompt, Timestamp, TreeError, UserId,
};
use sea_orm::prelude::{Expr, Uuid};
use sea_orm::sea_query::{Func, LikeExpr, NullOrdering, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
};
use sea_orm::{DbBackend, Order, PaginatorTrait};
use usecase::ports::{
    ChatCursor, ChatList, ChatPatch, ChatQuery, ChatRepository, ChatSort, ChatSummary, ChatVersion,
    CursorKey, DeletedSubtree, Entity, FinishedAnswer, NewChat, NewMessage, RepoError,
    SearchResults,
};

mod apply;
mod search;

use apply::written_message;

use crate::SeaOrmStore;
use crate::convert::{to_chat, to_message, ts, uuid};
use crate::entity::{chats, generations, messages};
use crate::error::{classify, to_repo_error};
use crate::writes::{Failure, Write, Written, dirty};

/// Rows deleted per statement, well under every backend's parameter limit.
const DELETE_CHUNK: usize = 500;

fn message_row(owner: UserId, chat: ChatId, new: &NewMessage) -> messages::ActiveModel {
    messages::ActiveModel {
        id: Set(uuid(new.id.as_u128())),
        chat_id: Set(uuid(chat.as_u128())),
        user_id: Set(Some(uuid(owner.as_u128()))),
        parent_id: Set(Some(uuid(new.parent_id.as_u128()))),
        role: Set(new.role.as_str().to_owned()),
        content: Set(new.content.clone()),
        status: Set(new.status.as_str().to_owned()),
        created_at: Set(ts(new.created_at)),
    }
}

impl SeaOrmStore {
    /// The owner's chat, locked against concurrent tree changes until `txn` ends
    /// (`FOR UPDATE` on PostgreSQL and MySQL; SQLite's `IMMEDIATE` transaction already
    /// holds the only write lock).
    async fn lock_owned_chat(
        &self,
        txn: &DatabaseTransaction,
        owner: UserId,
        chat: ChatId,
    ) -> Result<chats::Model, RepoError> {
        let mut query = chats::Entity::find_by_id(uuid(chat.as_u128()))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())));
        if self.locks_rows() {
            query = query.lock_exclusive();
        }
        query
            .one(txn)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::Chat))
    }
}

/// `%`, `_` and `\` of a user's query made literal for `LIKE … ESCAPE '\'`.
pub(crate) fn like_pattern(query: &str) -> String {
    let mut out = String::with_capacity(query.len() + 2);
    out.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The rows strictly after `after` in the order of `column` (`order`, titles with NULL
/// first) then id.
fn after_cursor(
    after: &ChatCursor,
    column: chats::Column,
    order: &Order,
    backend: DbBackend,
) -> Condition {
    let id = uuid(after.id.as_u128());
    let desc = matches!(order, Order::Desc);
    let id_after = if desc {
        chats::Column::Id.lt(id)
    } else {
        chats::Column::Id.gt(id)
    };
    // `key <= t AND (key < t OR id < i)` (descending; mirrored ascending): the first
    // conjunct bounds an index range scan that starts at the cursor.
    let from_key = |t: sea_orm::Value| {
        if backend != DbBackend::MySql {
            // A row-value comparison: PostgreSQL and SQLite scan the (key, id) index from it.
            let key = Expr::tuple([Expr::col(column), Expr::col(chats::Column::Id)]);
            let cursor = Expr::tuple([Expr::val(t), Expr::val(id)]);
            return Condition::all().add(if desc { key.lt(cursor) } else { key.gt(cursor) });
        }
        let (bound, strictly) = if desc {
            (column.lte(t.clone()), column.lt(t))
        } else {
            (column.gte(t.clone()), column.gt(t))
        };
        Condition::all()
            .add(bound)
            .add(Condition::any().add(strictly).add(id_after.clone()))
    };
    match &after.key {
        CursorKey::Time(t) => from_key((*t).into()),
        CursorKey::Title(Some(t)) => {
            let titled = from_key(t.as_str().into());
            if desc {
                // Descending, NULL titles come last: after every title.
                Condition::any().add(titled).add(column.is_null())
            } else {
                titled
            }
        }
        CursorKey::Title(None) => {
            let among_nulls = Condition::all().add(column.is_null()).add(id_after);
            if desc {
                among_nulls
            } else {
                // Ascending, NULL titles come first: every title is after them.
                Condition::any().add(among_nulls).add(column.is_not_null())
            }
        }
    }
}

impl ChatRepository for SeaOrmStore {
    async fn list_chats(&self, owner: UserId, query: ChatQuery) -> Result<ChatList, RepoError> {
        let mut select =
            chats::Entity::find().filter(chats::Column::UserId.eq(uuid(owner.as_u128())));
        if let Some(q) = &query.title {
            select = select.filter(
                Expr::expr(Func::lower(Expr::col(chats::Column::Title)))
                    .like(LikeExpr::new(like_pattern(q.as_str())).escape('\\')),
            );
        }
        let total = match query.after {
            Some(_) => None,
            None if query.without_total => None,
            None => Some(
                select
                    .clone()
                    .count(&self.read)
                    .await
                    .map_err(to_repo_error)?,
            ),
        };
        // Times are never NULL: no NULL ordering, so PostgreSQL can read its index in order.
        let (column, order, nulls) = match query.sort {
            ChatSort::UpdatedDesc => (chats::Column::UpdatedAt, Order::Desc, None),
            ChatSort::UpdatedAsc => (chats::Column::UpdatedAt, Order::Asc, None),
            ChatSort::CreatedDesc => (chats::Column::CreatedAt, Order::Desc, None),
            ChatSort::CreatedAsc => (chats::Column::CreatedAt, Order::Asc, None),
            ChatSort::TitleAsc => (chats::Column::Title, Order::Asc, Some(NullOrdering::First)),
            ChatSort::TitleDesc => (chats::Column::Title, Order::Desc, Some(NullOrdering::Last)),
        };
        let limit = u64::from(query.page.limit());
        select = match &query.after {
            Some(after) => select.filter(after_cursor(after, column, &order, self.backend)),
            None => select.offset(query.page.offset()),
        };
        select = match nulls {
            Some(nulls) => select.order_by_with_nulls(column, order.clone(), nulls),
            None => select.order_by(column, order.clone()),
        };
        let mut rows = select
            .order_by(chats::Column::Id, order)
            .limit(limit + 1)
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        // Previews: one query for the whole page.
        let leaves: Vec<_> = rows.iter().map(|r| r.current_leaf_id).collect();
        let previews: std::collections::HashMap<sea_orm::prelude::Uuid, String> =
            messages::Entity::find()
                .select_only()
                .column(messages::Column::Id)
                .column(messages::Column::Content)
                .filter(messages::Column::Id.is_in(leaves))
                .into_tuple::<(sea_orm::prelude::Uuid, String)>()
                .all(&self.read)
                .await
                .map_err(to_repo_error)?
                .into_iter()
                .collect();
        let items = rows
            .into_iter()
            .map(|row| {
                let preview = previews
                    .get(&row.current_leaf_id)
                    .cloned()
                    .unwrap_or_default();
                Ok(ChatSummary {
                    chat: to_chat(row)?,
                    preview,
                })
            })
            .collect::<Result<Vec<ChatSummary>, RepoError>>()?;
        let next = if more {
            items
                .last()
                .map(|last| ChatCursor::after(&last.chat, query.sort))
        } else {
            None
        };
        Ok(ChatList { items, total, next })
    }

    async fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
        now: domain::Timestamp,
    ) -> Result<Chat, RepoError> {
        let txn = self.begin_write().await?;
        let row = self.lock_owned_chat(&txn, owner, chat).await?;
        let mut active: chats::ActiveModel = row.into();
        if let Some(title) = patch.title {
            active.title = Set(Some(title.into_inner()));
            active.title_set_by_user = Set(true);
        }
        if let Some(prompt) = patch.system_prompt {
            active.system_prompt = Set(prompt.map(SystemPrompt::into_inner));
        }
        if let Some(model) = patch.model_id {
            active.model_id = Set(model.map(|m| m.as_str().to_owned()));
        }
        if let Some(preset) = patch.preset_id {
            active.preset_id = Set(preset.map(|p| uuid(p.as_u128())));
        }
        active.updated_at = Set(ts(now));
        let row = active.update(&txn).await.map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        to_chat(row)
    }

    async fn search_messages(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: domain::SearchQuery,
        page: domain::PageRequest,
    ) -> Result<SearchResults, RepoError> {
        self.search(owner, chat, &query, page).await
    }

    async fn select_leaf(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        _now: domain::Timestamp,
    ) -> Result<Chat, RepoError> {
        let txn = self.begin_write().await?;
        let mut row = self.lock_owned_chat(&txn, owner, chat).await?;
        let in_chat = messages::Entity::find_by_id(uuid(message.as_u128()))
            .filter(messages::Column::ChatId.eq(uuid(chat.as_u128())))
            .count(&txn)
            .await
            .map_err(to_repo_error)?;
        if in_chat == 0 {
            return Err(RepoError::NotFound(Entity::Message));
        }
        chats::Entity::update_many()
            .col_expr(
                chats::Column::CurrentLeafId,
                Expr::value(uuid(message.as_u128())),
            )
            .filter(chats::Column::Id.eq(uuid(chat.as_u128())))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        row.current_leaf_id = uuid(message.as_u128());
        to_chat(row)
    }

    async fn create_chat(&self, new: NewChat) -> Result<Chat, RepoError> {
        let txn = self.begin_write().await?;
        let chat = chats::ActiveModel {
            id: Set(uuid(new.id.as_u128())),
            user_id: Set(uuid(new.owner.as_u128())),
            title_set_by_user: Set(new.title.is_some()),
            title: Set(new.title.map(|t| t.into_inner())),
            system_prompt: Set(new.system_prompt.map(|p| p.into_inner())),
            model_id: Set(new.model_id.map(|m| m.as_str().to_owned())),
            preset_id: Set(new.preset_id.map(|p| uuid(p.as_u128()))),
            root_id: Set(uuid(new.root_id.as_u128())),
            current_leaf_id: Set(uuid(new.root_id.as_u128())),
            message_count: Set(1),
            created_at: Set(ts(new.created_at)),
            updated_at: Set(ts(new.created_at)),
        }
        .insert(&txn)
        .await
        .map_err(|e| classify(e, "chat id already used", Entity::User))?;
        self.fault("create_chat")?;
        messages::ActiveModel {
            id: Set(uuid(new.root_id.as_u128())),
            chat_id: Set(uuid(new.id.as_u128())),
            user_id: Set(Some(uuid(new.owner.as_u128()))),
            parent_id: Set(None),
            role: Set(Role::System.as_str().to_owned()),
            content: Set(new.root_content),
            status: Set(MessageStatus::Complete.as_str().to_owned()),
            created_at: Set(ts(new.created_at)),
        }
        .insert(&txn)
        .await
        .map_err(|e| classify(e, "message id already used", Entity::Chat))?;
        txn.commit().await.map_err(to_repo_error)?;
        to_chat(chat)
    }

    async fn get_chat(&self, owner: UserId, chat: ChatId) -> Result<Chat, RepoError> {
        chats::Entity::find_by_id(uuid(chat.as_u128()))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::Chat))
            .and_then(to_chat)
    }

    async fn list_messages(&self, owner: UserId, chat: ChatId) -> Result<Vec<Message>, RepoError> {
        // One query: the owner check is a semi-join, so a foreign chat yields nothing.
        let owned = chats::Entity::find()
            .select_only()
            .column(chats::Column::Id)
            .filter(chats::Column::Id.eq(uuid(chat.as_u128())))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .into_query();
        let rows = messages::Entity::find()
            .filter(messages::Column::ChatId.in_subquery(owned.clone()))
            .order_by_asc(messages::Column::CreatedAt)
            .order_by_asc(messages::Column::Id)
            .all(&self.read);
        // The answers' records, read at the same time (same owner check).
        let records = generations::Entity::find()
            .filter(generations::Column::ChatId.in_subquery(owned))
            .filter(generations::Column::MessageId.is_not_null())
            .all(&self.read);
        let (rows, records) = tokio::try_join!(rows, records).map_err(to_repo_error)?;
        if rows.is_empty() {
            // Every chat has its root, so no rows means no such chat for this owner.
            return Err(RepoError::NotFound(Entity::Chat));
        }
        let mut stats: std::collections::HashMap<Uuid, Box<domain::GenerationStats>> = records
            .into_iter()
            .filter_map(|r| Some((r.message_id?, Box::new(crate::convert::to_stats(r).ok()?))))
            .collect();
        rows.into_iter()
            .map(|row| {
                let generation = stats.remove(&row.id);
                to_message(row).map(|m| Message { generation, ..m })
            })
            .collect()
    }

    async fn append_message_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (message, move_leaf): (NewMessage, bool),
        expected: Option<ChatVersion>,
    ) -> Result<(Message, Option<ChatVersion>), RepoError> {
        self.write(Write::Message {
            owner,
            chat,
            message,
            move_leaf,
            expected,
        })
        .await
        .and_then(written_message)
    }

    async fn append_turn_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (question, answer): (NewMessage, NewMessage),
        expected: Option<ChatVersion>,
    ) -> Result<(Message, Option<ChatVersion>), RepoError> {
        self.write(Write::Turn {
            owner,
            chat,
            question,
            answer,
            expected,
        })
        .await
        .and_then(written_message)
    }

    async fn append_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (message, record): (NewMessage, GenerationRecord),
        expected: Option<ChatVersion>,
    ) -> Result<(Message, Option<ChatVersion>), RepoError> {
        self.write(Write::Answer {
            owner,
            chat,
            message,
            record,
            expected,
        })
        .await
        .and_then(written_message)
    }

    async fn delete_subtree(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<DeletedSubtree, RepoError> {
        let txn = self.begin_write().await?;
        let chat_row = self.lock_owned_chat(&txn, owner, chat).await?;
        let rows = messages::Entity::find()
            .filter(messages::Column::ChatId.eq(uuid(chat.as_u128())))
            .all(&txn)
            .await
            .map_err(to_repo_error)?;
        let all = rows
            .into_iter()
            .map(to_message)
            .collect::<Result<Vec<_>, _>>()?;
        let mut tree =
            ConversationTree::build(chat, all).map_err(|e| RepoError::Corrupt(Box::new(e)))?;
        let (removed, parent) = tree.remove_subtree(message).map_err(|e| match e {
            TreeError::RootRemoval => RepoError::Conflict("the root message cannot be deleted"),
            _ => RepoError::NotFound(Entity::Message),
        })?;
        let current = MessageId::from_u128(chat_row.current_leaf_id.as_u128());
        let leaf = if removed.contains(&current) {
            parent
        } else {
            current
        };

        // Children before parents, so no backend ever sees a dangling parent in between.
        let ids: Vec<_> = removed.iter().rev().map(|m| uuid(m.as_u128())).collect();
        for (i, chunk) in ids.chunks(DELETE_CHUNK).enumerate() {
            messages::Entity::delete_many()
                .filter(messages::Column::Id.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await
                .map_err(to_repo_error)?;
            if i == 0 {
                self.fault("delete_subtree")?;
            }
        }
        let removed_count = i64::try_from(removed.len()).unwrap_or(i64::MAX);
        chats::Entity::update_many()
            .col_expr(
                chats::Column::MessageCount,
                Expr::col(chats::Column::MessageCount).sub(removed_count),
            )
            .col_expr(
                chats::Column::CurrentLeafId,
                Expr::value(uuid(leaf.as_u128())),
            )
            .filter(chats::Column::Id.eq(uuid(chat.as_u128())))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        Ok(DeletedSubtree {
            removed,
            current_leaf: leaf,
        })
    }

    async fn finish_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: FinishedAnswer,
        expected: Option<ChatVersion>,
    ) -> Result<Option<ChatVersion>, RepoError> {
        match self
            .write(Write::Finish {
                owner,
                chat,
                answer,
                expected,
            })
            .await?
        {
            Written::Done(version) => Ok(version),
            Written::Message(..) => Ok(None),
        }
    }

    async fn interrupt_streaming(
        &self,
        created_before: Timestamp,
        now: Timestamp,
    ) -> Result<u64, RepoError> {
        self.interrupt_streaming_where(
            messages::Column::CreatedAt.lt(ts(created_before)).into(),
            now,
        )
        .await
    }

    async fn set_generated_title(
        &self,
        owner: UserId,
        chat: ChatId,
        title: ChatTitle,
    ) -> Result<bool, RepoError> {
        let result = chats::Entity::update_many()
            .col_expr(chats::Column::Title, Expr::value(title.into_inner()))
            .filter(chats::Column::Id.eq(uuid(chat.as_u128())))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .filter(chats::Column::Title.is_null())
            .filter(chats::Column::TitleSetByUser.eq(false))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        Ok(result.rows_affected == 1)
    }

    async fn delete_chat(&self, owner: UserId, chat: ChatId) -> Result<(), RepoError> {
        // One statement; messages and generation records go with it by ON DELETE CASCADE.
        let result = chats::Entity::delete_many()
            .filter(chats::Column::Id.eq(uuid(chat.as_u128())))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Chat));
        }
        Ok(())
    }

    async fn record_generation(&self, record: GenerationRecord) -> Result<(), RepoError> {
        generations::Entity::insert(generation_row(&record, record.message_id))
            .exec_without_returning(&self.write)
            .await
            .map(drop)
            .map_err(to_repo_error)
    }
}

/// The row of `record`, describing the answer `message` (none for a call that stored no
/// answer).
fn generation_row(
    record: &GenerationRecord,
    message: Option<MessageId>,
) -> generations::ActiveModel {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    generations::ActiveModel {
        id: Set(sea_orm::prelude::Uuid::now_v7()),
        message_id: Set(message.map(|m| uuid(m.as_u128()))),
        chat_id: Set(record.chat_id.map(|c| uuid(c.as_u128()))),
        user_id: Set(uuid(record.user_id.as_u128())),
        provider: Set(record.provider.clone()),
        model: Set(record.model.as_str().to_owned()),
        prompt_tokens: Set(n(record.usage.prompt_tokens)),
        completion_tokens: Set(n(record.usage.completion_tokens)),
        total_tokens: Set(n(record.usage.total_tokens)),
        cost_pico_usd: Set(record.cost.as_pico()),
        cost_source: Set(record.cost_source.as_str().to_owned()),
        latency_ms: Set(n(record.latency_ms)),
        ttft_ms: Set(record.time_to_first_token_ms.map(n)),
        finish_reason: Set(record.finish_reason.clone()),
        created_at: Set(ts(record.created_at)),
        kind: Set(record.kind.as_str().to_owned()),
    }
}

impl SeaOrmStore {
    /// Marks `interrupted` the messages still `streaming` that match `filter` (as
    /// `ChatRepository::interrupt_streaming` does for its time filter).
    pub(crate) async fn interrupt_streaming_where(
        &self,
        filter: sea_orm::Condition,
        now: Timestamp,
    ) -> Result<u64, RepoError> {
        let streaming = || {
            messages::Entity::find()
                .filter(messages::Column::Status.eq(MessageStatus::Streaming.as_str()))
                .filter(filter.clone())
        };
        let txn = self.begin_write().await?;
        let left: Vec<(Uuid, Uuid, Option<Uuid>)> = streaming()
            .select_only()
            .column(messages::Column::Id)
            .column(messages::Column::ChatId)
            .column(messages::Column::ParentId)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(to_repo_error)?;
        if left.is_empty() {
            txn.commit().await.map_err(to_repo_error)?;
            return Ok(0);
        }
        // Chats first, in id order, as every other writer does (chat row, then its messages):
        // no lock-order deadlock with an answer being finished.
        let mut chat_ids: Vec<Uuid> = left.iter().map(|(_, chat, _)| *chat).collect();
        chat_ids.sort_unstable();
        chat_ids.dedup();
        if self.locks_rows() {
            for chunk in chat_ids.chunks(DELETE_CHUNK) {
                chats::Entity::find()
                    .filter(chats::Column::Id.is_in(chunk.iter().copied()))
                    .order_by_asc(chats::Column::Id)
                    .lock_exclusive()
                    .all(&txn)
                    .await
                    .map_err(to_repo_error)?;
            }
        }
        // By primary key (no range locks), and only rows still streaming.
        let ids: Vec<Uuid> = left.iter().map(|(id, _, _)| *id).collect();
        let mut marked = 0;
        for chunk in ids.chunks(DELETE_CHUNK) {
            marked += messages::Entity::update_many()
                .col_expr(
                    messages::Column::Status,
                    Expr::value(MessageStatus::Interrupted.as_str()),
                )
                .filter(messages::Column::Id.is_in(chunk.iter().copied()))
                .filter(messages::Column::Status.eq(MessageStatus::Streaming.as_str()))
                .exec(&txn)
                .await
                .map_err(to_repo_error)?
                .rows_affected;
        }
        // As if the answer had ended: it becomes the current leaf when the user is still on
        // its question. A handful of rows (what one crash left), one statement each.
        for (id, chat, parent) in left {
            let mut update = chats::Entity::update_many()
                .col_expr(chats::Column::UpdatedAt, Expr::value(ts(now)))
                .filter(chats::Column::Id.eq(chat));
            if let Some(parent) = parent {
                update = update.col_expr(
                    chats::Column::CurrentLeafId,
                    Expr::case(chats::Column::CurrentLeafId.eq(parent), Expr::value(id))
                        .finally(Expr::col(chats::Column::CurrentLeafId))
                        .into(),
                );
            }
            update.exec(&txn).await.map_err(to_repo_error)?;
        }
        txn.commit().await.map_err(to_repo_error)?;
        Ok(marked)
    }
}
