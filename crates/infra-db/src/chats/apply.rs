//! The hot writes of conversations on every backend: each claims its chat in one guarded
//! statement, inserts without reading back, and reports the chat version after it when it
//! started from a known one. On SQLite they go through the group commit (`crate::writes`).

use super::*;

pub(super) fn written_message(
    written: Written,
) -> Result<(Message, Option<ChatVersion>), RepoError> {
    match written {
        Written::Message(m, version) => Ok((m, version)),
        Written::Done(_) => Err(RepoError::Unexpected("a write returned no message".into())),
    }
}

/// What a chat-claiming `UPDATE` did.
enum Claim {
    /// It applied from the version the caller knew (this one): the version after is known.
    FromExpected(ChatVersion),
    /// It applied, from a version the caller did not know.
    Done,
    /// It changed nothing.
    Nothing,
}

/// Runs `update` on the chat row, first guarded by `expected` (when the caller knows a
/// version), then, if that changed nothing, unguarded.
async fn claim_from(
    txn: &DatabaseTransaction,
    update: sea_orm::UpdateMany<chats::Entity>,
    expected: Option<ChatVersion>,
) -> Result<Claim, Failure> {
    if let Some((at, count)) = expected {
        let from_expected = update
            .clone()
            .filter(chats::Column::UpdatedAt.eq(at))
            .filter(chats::Column::MessageCount.eq(i64::try_from(count).unwrap_or(i64::MAX)))
            .exec(txn)
            .await
            .map_err(|e| dirty(to_repo_error(e)))?;
        if from_expected.rows_affected > 0 {
            return Ok(Claim::FromExpected((at, count)));
        }
    }
    let done = update
        .exec(txn)
        .await
        .map_err(|e| dirty(to_repo_error(e)))?;
    Ok(if done.rows_affected > 0 {
        Claim::Done
    } else {
        Claim::Nothing
    })
}

/// Stores the generation record of `answer`.
async fn insert_record(
    txn: &DatabaseTransaction,
    record: &GenerationRecord,
    answer: MessageId,
) -> Result<(), Failure> {
    generations::Entity::insert(generation_row(record, Some(answer)))
        .exec_without_returning(txn)
        .await
        .map(drop)
        .map_err(|e| {
            dirty(classify(
                e,
                "answer already has a generation record",
                Entity::Message,
            ))
        })
}

impl SeaOrmStore {
    /// Claims the owner's chat for `added` new messages under `parent`, in one statement
    /// that also takes the chat row's write lock first (as every writer does): bumps the
    /// message count and the version, and moves the current leaf to `leaf` when given. It
    /// changes nothing unless `owner` owns the chat and `parent` is one of its messages.
    /// Runs inside the caller's transaction.
    /// `first` is the first of the `added` messages (its parent and time are the claim's).
    pub(super) async fn claim_chat(
        &self,
        txn: &DatabaseTransaction,
        (owner, chat): (UserId, ChatId),
        first: &NewMessage,
        (added, leaf): (i64, Option<MessageId>),
        expected: Option<ChatVersion>,
    ) -> Result<Option<ChatVersion>, Failure> {
        let (parent, now) = (first.parent_id, first.created_at);
        if self.backend == sea_orm::DbBackend::MySql {
            // MySQL may read the parent (and lock its index gap) before it locks the chat
            // row, which deadlocks with a concurrent insert into the same chat: lock the
            // chat row first, explicitly.
            self.lock_owned_chat(txn, owner, chat)
                .await
                .map_err(|e| match e {
                    RepoError::NotFound(_) => Failure::Clean(e),
                    other => dirty(other),
                })?;
        }
        let chat_id = uuid(chat.as_u128());
        // Correlated with the row being updated, so MySQL evaluates it per chat row, after
        // locking that row: the chat is locked before the parent is read on every backend.
        let parent_in_chat = Query::select()
            .expr(Expr::val(1))
            .from(messages::Entity)
            .and_where(messages::Column::Id.eq(uuid(parent.as_u128())))
            .and_where(
                Expr::col((messages::Entity, messages::Column::ChatId))
                    .equals((chats::Entity, chats::Column::Id)),
            )
            .to_owned();
        let mut update = chats::Entity::update_many()
            .col_expr(
                chats::Column::MessageCount,
                Expr::col(chats::Column::MessageCount).add(added),
            )
            .col_expr(chats::Column::UpdatedAt, Expr::value(ts(now)))
            .filter(chats::Column::Id.eq(chat_id))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .filter(Expr::exists(parent_in_chat));
        if let Some(leaf) = leaf {
            update = update.col_expr(
                chats::Column::CurrentLeafId,
                Expr::value(uuid(leaf.as_u128())),
            );
        }
        match claim_from(txn, update, expected).await? {
            Claim::FromExpected((_, count)) => {
                let added = u64::try_from(added).unwrap_or(0);
                return Ok(Some((ts(now), count + added)));
            }
            Claim::Done => return Ok(None),
            Claim::Nothing => {}
        }
        // Nothing changed; say why (the rare path).
        let owned = chats::Entity::find_by_id(chat_id)
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())))
            .select_only()
            .column(chats::Column::Id)
            .into_tuple::<Uuid>()
            .one(txn)
            .await
            .map_err(|e| dirty(to_repo_error(e)))?;
        Err(Failure::Clean(RepoError::NotFound(if owned.is_some() {
            Entity::Message
        } else {
            Entity::Chat
        })))
    }

    /// Inserts `rows` (messages of `chat`) without reading them back.
    pub(super) async fn insert_messages(
        txn: &DatabaseTransaction,
        (owner, chat): (UserId, ChatId),
        rows: &[&NewMessage],
    ) -> Result<(), Failure> {
        if rows.iter().any(|m| m.role == Role::System) {
            return Err(dirty(RepoError::Conflict(
                "only the root is a system message",
            )));
        }
        messages::Entity::insert_many(rows.iter().map(|m| message_row(owner, chat, m)))
            .exec_without_returning(txn)
            .await
            .map_err(|e| dirty(classify(e, "message id already used", Entity::Message)))?;
        Ok(())
    }
    /// Ends a streaming answer inside `txn` (see [`ChatRepository::finish_answer`]).
    pub(super) async fn end_answer(
        &self,
        txn: &DatabaseTransaction,
        owner: UserId,
        chat: ChatId,
        answer: &FinishedAnswer,
        expected: Option<ChatVersion>,
    ) -> Result<Option<ChatVersion>, Failure> {
        let id = uuid(answer.message.as_u128());
        let chat_id = uuid(chat.as_u128());
        // The chat row first (its write lock, as every writer takes it): the answer becomes
        // the current leaf only if the user is still where the generation began (or on its
        // question), and the version moves even when the clock did not (the read cache keys
        // on it). Deciding inside the statement is race-free.
        let leaf = Expr::col(chats::Column::CurrentLeafId);
        let stayed = leaf.clone().is_in([
            uuid(answer.leaf_at_start.as_u128()),
            uuid(answer.question.as_u128()),
        ]);
        let update = chats::Entity::update_many()
            .col_expr(
                chats::Column::CurrentLeafId,
                Expr::case(stayed, Expr::value(id)).finally(leaf).into(),
            )
            .col_expr(
                chats::Column::UpdatedAt,
                Func::greatest([
                    Expr::value(ts(answer.now)),
                    Expr::col(chats::Column::UpdatedAt).add(1),
                ])
                .into(),
            )
            .filter(chats::Column::Id.eq(chat_id))
            .filter(chats::Column::UserId.eq(uuid(owner.as_u128())));
        let version = match claim_from(txn, update, expected).await? {
            Claim::FromExpected((at, count)) => Some((Ord::max(ts(answer.now), at + 1), count)),
            Claim::Done => None,
            Claim::Nothing => return Err(Failure::Clean(RepoError::NotFound(Entity::Chat))),
        };
        let ended = messages::Entity::update_many()
            .col_expr(
                messages::Column::Content,
                Expr::value(answer.content.clone()),
            )
            .col_expr(
                messages::Column::Status,
                Expr::value(answer.status.as_str()),
            )
            .filter(messages::Column::Id.eq(id))
            .filter(messages::Column::ChatId.eq(chat_id))
            .filter(messages::Column::Status.eq(MessageStatus::Streaming.as_str()))
            .exec(txn)
            .await
            .map_err(|e| dirty(to_repo_error(e)))?;
        if ended.rows_affected == 0 {
            // Say why (the rare path); the transaction is dropped, so nothing changed.
            let exists = messages::Entity::find_by_id(id)
                .filter(messages::Column::ChatId.eq(chat_id))
                .select_only()
                .column(messages::Column::Id)
                .into_tuple::<Uuid>()
                .one(txn)
                .await
                .map_err(|e| dirty(to_repo_error(e)))?;
            // The chat row was changed above: dirty, the transaction rolls back.
            return Err(dirty(match exists {
                Some(_) => RepoError::Conflict("the answer has already ended"),
                None => RepoError::NotFound(Entity::Message),
            }));
        }
        self.fault("finish_answer").map_err(dirty)?;
        if let Some(record) = &answer.record {
            insert_record(txn, record, answer.message).await?;
        }
        Ok(version)
    }

    /// Applies a hot write: in the next group commit on SQLite, else in a transaction of
    /// its own.
    pub(super) async fn write(&self, write: Write) -> Result<Written, RepoError> {
        match &self.group_commit {
            Some(group) => match group.write(write).await {
                Ok(result) => result,
                Err(write) => {
                    tracing::error!("the database writer task has stopped; writing alone");
                    self.write_alone(&write).await
                }
            },
            None => self.write_alone(&write).await,
        }
    }

    /// Applies `write` in a transaction of its own.
    pub(crate) async fn write_alone(&self, write: &Write) -> Result<Written, RepoError> {
        let txn = self.begin_write().await?;
        let written = self.apply(&txn, write).await.map_err(Failure::into_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        Ok(written)
    }

    /// Applies `write` inside `txn`. A [`Failure::Clean`] changed nothing.
    pub(crate) async fn apply(
        &self,
        txn: &DatabaseTransaction,
        write: &Write,
    ) -> Result<Written, Failure> {
        let fault = |point| self.fault(point).map_err(dirty);
        match write {
            Write::Message {
                owner,
                chat,
                message,
                move_leaf,
                expected,
            } => {
                let leaf = move_leaf.then_some(message.id);
                let version = self
                    .claim_chat(txn, (*owner, *chat), message, (1, leaf), *expected)
                    .await?;
                fault("append_message")?;
                Self::insert_messages(txn, (*owner, *chat), &[message]).await?;
                Ok(Written::Message(message.stored_in(*chat), version))
            }
            Write::Turn {
                owner,
                chat,
                question,
                answer,
                expected,
            } => {
                if answer.parent_id != question.id {
                    return Err(Failure::Clean(RepoError::NotFound(Entity::Message)));
                }
                let leaf = Some(question.id);
                let version = self
                    .claim_chat(txn, (*owner, *chat), question, (2, leaf), *expected)
                    .await?;
                fault("append_turn")?;
                Self::insert_messages(txn, (*owner, *chat), &[question, answer]).await?;
                fault("append_turn_answer")?;
                Ok(Written::Message(question.stored_in(*chat), version))
            }
            Write::Answer {
                owner,
                chat,
                message,
                record,
                expected,
            } => {
                let leaf = Some(message.id);
                let version = self
                    .claim_chat(txn, (*owner, *chat), message, (1, leaf), *expected)
                    .await?;
                fault("append_answer")?;
                Self::insert_messages(txn, (*owner, *chat), &[message]).await?;
                insert_record(txn, record, message.id).await?;
                Ok(Written::Message(message.stored_in(*chat), version))
            }
            Write::Finish {
                owner,
                chat,
                answer,
                expected,
            } => {
                let version = self
                    .end_answer(txn, *owner, *chat, answer, *expected)
                    .await?;
                Ok(Written::Done(version))
            }
        }
    }
}
