//! Imported accounts, each written in one transaction: the user, then every chat (row and
//! whole tree), template and preset whose id is not there yet.

use std::collections::HashSet;

use sea_orm::prelude::Uuid;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, Set,
};
use usecase::import::{AccountImport, AccountImported, ChatImport, ImportRepository, NAME_TAKEN};
use usecase::ports::{Entity, RepoError};

use crate::SeaOrmStore;
use crate::convert::{ts, uuid};
use crate::entity::{chats, messages, presets, prompt_templates, users};
use crate::error::{classify, to_repo_error};
use crate::presets::preset_row;
use crate::templates::template_row;
use crate::users::new_user_row;

/// Rows per multi-row `INSERT` (well under every backend's limit on bound values).
const ROWS_PER_INSERT: usize = 500;
/// Ids per `IN (…)` lookup.
const IDS_PER_LOOKUP: usize = 500;

impl ImportRepository for SeaOrmStore {
    async fn import_account(
        &self,
        account: AccountImport,
        dry_run: bool,
    ) -> Result<AccountImported, RepoError> {
        let txn = self.begin_write().await?;
        let written = write_account(&txn, account).await?;
        if dry_run {
            txn.rollback().await.map_err(to_repo_error)?;
        } else {
            txn.commit().await.map_err(to_repo_error)?;
        }
        Ok(written)
    }
}

async fn write_account(
    txn: &DatabaseTransaction,
    account: AccountImport,
) -> Result<AccountImported, RepoError> {
    let mut done = AccountImported::default();
    let owner = uuid(account.owner.as_u128());
    let exists = users::Entity::find_by_id(owner)
        .one(txn)
        .await
        .map_err(to_repo_error)?
        .is_some();
    match account.user {
        Some(user) if !exists => {
            new_user_row(user)
                .insert(txn)
                .await
                .map_err(|e| classify(e, NAME_TAKEN, Entity::User))?;
            done.user_created = true;
        }
        None if !exists => return Err(RepoError::NotFound(Entity::User)),
        _ => {}
    }

    let chat_ids: Vec<Uuid> = account.chats.iter().map(|c| uuid(c.id.as_u128())).collect();
    let known = existing::<chats::Entity, _>(txn, chats::Column::Id, &chat_ids).await?;
    let message_ids = |chat: &ChatImport| -> Vec<Uuid> {
        chat.tree
            .messages
            .iter()
            .map(|m| uuid(m.id.as_u128()))
            .collect()
    };
    let all: Vec<Uuid> = account.chats.iter().flat_map(message_ids).collect();
    // Message ids already taken: stored before, or by a chat written just now. A chat with
    // any of them — the same tree under another chat's id, as a damaged source may hold —
    // is skipped, not a failure.
    let mut taken = existing::<messages::Entity, _>(txn, messages::Column::Id, &all).await?;
    for chat in account.chats {
        let ids = message_ids(&chat);
        if known.contains(&uuid(chat.id.as_u128())) || ids.iter().any(|m| taken.contains(m)) {
            done.counts.chats_skipped += 1;
        } else {
            done.counts.messages += write_chat(txn, owner, chat).await?;
            taken.extend(ids);
            done.counts.chats += 1;
        }
    }

    let ids: Vec<Uuid> = account
        .templates
        .iter()
        .map(|t| uuid(t.id.as_u128()))
        .collect();
    let known =
        existing::<prompt_templates::Entity, _>(txn, prompt_templates::Column::Id, &ids).await?;
    let (new, old): (Vec<_>, Vec<_>) = account
        .templates
        .iter()
        .partition(|t| !known.contains(&uuid(t.id.as_u128())));
    done.counts.templates_skipped = old.len() as u64;
    done.counts.templates = new.len() as u64;
    insert_rows(txn, new.into_iter().map(template_row).collect()).await?;

    let ids: Vec<Uuid> = account
        .presets
        .iter()
        .map(|p| uuid(p.id.as_u128()))
        .collect();
    let known = existing::<presets::Entity, _>(txn, presets::Column::Id, &ids).await?;
    let (new, old): (Vec<_>, Vec<_>) = account
        .presets
        .iter()
        .partition(|p| !known.contains(&uuid(p.id.as_u128())));
    done.counts.presets_skipped = old.len() as u64;
    done.counts.presets = new.len() as u64;
    insert_rows(txn, new.into_iter().map(preset_row).collect()).await?;
    Ok(done)
}

/// The chat's row and every message of its tree; how many messages.
async fn write_chat(
    txn: &DatabaseTransaction,
    owner: Uuid,
    chat: ChatImport,
) -> Result<u64, RepoError> {
    let root = chat
        .tree
        .messages
        .first()
        .map(|m| m.id)
        .ok_or_else(|| RepoError::Corrupt("an imported chat without its root".into()))?;
    chats::ActiveModel {
        id: Set(uuid(chat.id.as_u128())),
        user_id: Set(owner),
        // An imported title is kept as the user's: a generated one never replaces it.
        title_set_by_user: Set(chat.title.is_some()),
        title: Set(chat.title.map(|t| t.into_inner())),
        system_prompt: Set(chat.system_prompt.map(|p| p.into_inner())),
        model_id: Set(None),
        preset_id: Set(None),
        root_id: Set(uuid(root.as_u128())),
        current_leaf_id: Set(uuid(chat.tree.leaf.as_u128())),
        message_count: Set(chat.tree.messages.len() as i64),
        created_at: Set(ts(chat.created_at)),
        updated_at: Set(ts(chat.updated_at)),
    }
    .insert(txn)
    .await
    .map_err(|e| classify(e, "chat id already used", Entity::User))?;
    let count = chat.tree.messages.len() as u64;
    let rows = chat
        .tree
        .messages
        .into_iter()
        .map(|m| messages::ActiveModel {
            id: Set(uuid(m.id.as_u128())),
            chat_id: Set(uuid(chat.id.as_u128())),
            user_id: Set(Some(owner)),
            parent_id: Set(m.parent_id.map(|p| uuid(p.as_u128()))),
            role: Set(m.role.as_str().to_owned()),
            content: Set(m.content),
            status: Set(m.status.as_str().to_owned()),
            created_at: Set(ts(m.created_at)),
        })
        .collect();
    insert_rows(txn, rows).await?;
    Ok(count)
}

/// Which of `ids` are already in `E`'s `column`.
async fn existing<E, C>(
    txn: &DatabaseTransaction,
    column: C,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, RepoError>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    let mut found = HashSet::new();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        let rows: Vec<Uuid> = E::find()
            .select_only()
            .column(column)
            .filter(column.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await
            .map_err(to_repo_error)?;
        found.extend(rows);
    }
    Ok(found)
}

/// Inserts `rows`, [`ROWS_PER_INSERT`] per statement.
async fn insert_rows<A>(txn: &DatabaseTransaction, rows: Vec<A>) -> Result<(), RepoError>
where
    A: ActiveModelTrait + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        A::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await
            .map_err(|e| classify(e, "an imported id is already used", Entity::Chat))?;
    }
    Ok(())
}
