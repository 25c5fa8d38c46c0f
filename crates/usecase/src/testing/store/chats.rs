//! [`ChatRepository`] on the in-memory store.

use super::*;

impl ChatRepository for InMemoryStore {
    async fn list_chats(
        &self,
        owner: UserId,
        query: crate::ports::ChatQuery,
    ) -> Result<crate::ports::ChatList, RepoError> {
        use crate::ports::{ChatCursor, ChatSort, CursorKey};
        use std::cmp::Ordering as O;
        // The list's order as a comparison of (key, id), ties broken by id in the same
        // direction; titles sort with `None` first.
        let order = |a: &ChatCursor, b: &ChatCursor| -> O {
            let by_key = match (&a.key, &b.key) {
                (CursorKey::Time(x), CursorKey::Time(y)) => x.cmp(y),
                (CursorKey::Title(x), CursorKey::Title(y)) => x.cmp(y),
                _ => O::Equal,
            };
            let ascending = by_key.then(a.id.cmp(&b.id));
            match query.sort {
                ChatSort::TitleAsc | ChatSort::UpdatedAsc | ChatSort::CreatedAsc => ascending,
                _ => ascending.reverse(),
            }
        };
        self.with(|s| {
            let needle = query.title.as_ref().map(|q| q.as_str().to_lowercase());
            let mut chats: Vec<Chat> = s
                .chats
                .values()
                .filter(|c| c.owner == owner)
                .filter(|c| {
                    needle.as_deref().is_none_or(|n| {
                        c.title
                            .as_ref()
                            .is_some_and(|t| t.as_str().to_lowercase().contains(n))
                    })
                })
                .cloned()
                .collect();
            chats.sort_by(|a, b| {
                order(
                    &ChatCursor::after(a, query.sort),
                    &ChatCursor::after(b, query.sort),
                )
            });
            let total =
                (query.after.is_none() && !query.without_total).then_some(chats.len() as u64);
            let start = match &query.after {
                Some(after) => chats
                    .iter()
                    .position(|c| order(&ChatCursor::after(c, query.sort), after) == O::Greater)
                    .unwrap_or(chats.len()),
                None => usize::try_from(query.page.offset()).unwrap_or(usize::MAX),
            };
            let limit = query.page.limit() as usize;
            let rest: Vec<Chat> = chats.into_iter().skip(start).collect();
            let next =
                (rest.len() > limit).then(|| ChatCursor::after(&rest[limit - 1], query.sort));
            let items = rest
                .into_iter()
                .take(limit)
                .map(|chat| {
                    let preview = s
                        .messages
                        .get(&chat.id)
                        .and_then(|ms| ms.iter().find(|m| m.id == chat.current_leaf_id))
                        .map(|m| m.content.clone())
                        .unwrap_or_default();
                    crate::ports::ChatSummary { chat, preview }
                })
                .collect();
            Ok(crate::ports::ChatList { items, total, next })
        })
    }

    async fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: crate::ports::ChatPatch,
        now: Timestamp,
    ) -> Result<Chat, RepoError> {
        self.with(|s| {
            let c = owned_chat(s, owner, chat)?;
            if let Some(title) = patch.title {
                c.title = Some(title);
                c.title_set_by_user = true;
            }
            if let Some(prompt) = patch.system_prompt {
                c.system_prompt = prompt;
            }
            if let Some(model) = patch.model_id {
                c.model_id = model;
            }
            if let Some(preset) = patch.preset_id {
                c.preset_id = preset;
            }
            c.updated_at = now;
            Ok(c.clone())
        })
    }

    async fn search_messages(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: domain::SearchQuery,
        page: domain::PageRequest,
    ) -> Result<crate::ports::SearchResults, RepoError> {
        use domain::limits::{SEARCH_INDEXED_MIN, SEARCH_SHORT_WINDOW, SEARCH_TOTAL_CAP};
        self.with(|s| {
            if let Some(chat) = chat {
                owned_chat(s, owner, chat)?;
            }
            let needle = query.as_str().to_lowercase();
            let mut scope: Vec<(&domain::Message, &domain::Chat)> = s
                .chats
                .values()
                .filter(|c| c.owner == owner && chat.is_none_or(|id| id == c.id))
                .flat_map(|c| {
                    s.messages
                        .get(&c.id)
                        .into_iter()
                        .flatten()
                        .map(move |m| (m, c))
                })
                .collect();
            scope.sort_by_key(|(m, _)| std::cmp::Reverse((m.created_at, m.id)));
            let short = query.as_str().chars().count() < SEARCH_INDEXED_MIN;
            let window = usize::try_from(SEARCH_SHORT_WINDOW).unwrap_or(usize::MAX);
            let searched_all = !short || scope.len() <= window;
            if short {
                scope.truncate(window);
            }
            let hits: Vec<crate::ports::SearchHit> = scope
                .into_iter()
                .filter(|(m, _)| m.content.to_lowercase().contains(&needle))
                .map(|(m, c)| crate::ports::SearchHit {
                    message: m.clone(),
                    chat_title: c.title.clone(),
                })
                .collect();
            let total = hits.len() as u64;
            let total_exact = total <= SEARCH_TOTAL_CAP;
            let items = hits
                .into_iter()
                .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
                .take(page.limit() as usize)
                .collect();
            Ok(crate::ports::SearchResults {
                page: domain::Page {
                    items,
                    total: if total_exact { total } else { SEARCH_TOTAL_CAP },
                    request: page,
                },
                total_exact,
                searched_all,
            })
        })
    }

    async fn select_leaf(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        _now: Timestamp,
    ) -> Result<Chat, RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            if !s
                .messages
                .get(&chat)
                .is_some_and(|ms| ms.iter().any(|m| m.id == message))
            {
                return Err(RepoError::NotFound(Entity::Message));
            }
            let c = owned_chat(s, owner, chat)?;
            c.current_leaf_id = message;
            Ok(c.clone())
        })
    }

    async fn create_chat(&self, new: NewChat) -> Result<Chat, RepoError> {
        self.with(|s| {
            if !s.users.contains_key(&new.owner) {
                return Err(RepoError::NotFound(Entity::User));
            }
            let chat = Chat {
                id: new.id,
                owner: new.owner,
                title_set_by_user: new.title.is_some(),
                title: new.title,
                system_prompt: new.system_prompt,
                model_id: new.model_id,
                preset_id: new.preset_id,
                root_id: new.root_id,
                current_leaf_id: new.root_id,
                message_count: 1,
                created_at: new.created_at,
                updated_at: new.created_at,
            };
            let root = Message {
                id: new.root_id,
                chat_id: new.id,
                parent_id: None,
                role: Role::System,
                content: new.root_content,
                status: MessageStatus::Complete,
                created_at: new.created_at,
                generation: None,
            };
            s.chats.insert(chat.id, chat.clone());
            s.messages.insert(chat.id, vec![root]);
            Ok(chat)
        })
    }

    async fn get_chat(&self, owner: UserId, chat: ChatId) -> Result<Chat, RepoError> {
        self.with(|s| owned_chat(s, owner, chat).map(|c| c.clone()))
    }

    async fn list_messages(&self, owner: UserId, chat: ChatId) -> Result<Vec<Message>, RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            let mut messages = s.messages.get(&chat).cloned().unwrap_or_default();
            for m in &mut messages {
                m.generation = s.records.get(&m.id).map(|r| Box::new(r.stats()));
            }
            Ok(messages)
        })
    }

    // The fake never reports the version after a write (`None`): callers then read again.
    async fn append_message_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (message, move_leaf): (NewMessage, bool),
        expected: Option<crate::ports::ChatVersion>,
    ) -> Result<(Message, Option<crate::ports::ChatVersion>), RepoError> {
        self.with(|s| {
            let before = version_of(s, chat);
            let stored = insert_message(s, owner, chat, message, move_leaf)?;
            Ok((stored, version_after(s, chat, expected, before)))
        })
    }

    async fn append_turn_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (question, answer): (NewMessage, NewMessage),
        expected: Option<crate::ports::ChatVersion>,
    ) -> Result<(Message, Option<crate::ports::ChatVersion>), RepoError> {
        self.with(|s| {
            let before = version_of(s, chat);
            let stored = insert_message(s, owner, chat, question, true)?;
            insert_message(s, owner, chat, answer, false)?;
            Ok((stored, version_after(s, chat, expected, before)))
        })
    }

    async fn append_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        (message, record): (NewMessage, GenerationRecord),
        expected: Option<crate::ports::ChatVersion>,
    ) -> Result<(Message, Option<crate::ports::ChatVersion>), RepoError> {
        self.with(|s| {
            let before = version_of(s, chat);
            let stored = insert_message(s, owner, chat, message, true)?;
            s.records.insert(stored.id, record);
            Ok((stored, version_after(s, chat, expected, before)))
        })
    }

    async fn finish_answer_from(
        &self,
        owner: UserId,
        chat: ChatId,
        answer: crate::ports::FinishedAnswer,
        expected: Option<crate::ports::ChatVersion>,
    ) -> Result<Option<crate::ports::ChatVersion>, RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            let before = version_of(s, chat);
            let stored = s
                .messages
                .get_mut(&chat)
                .and_then(|list| list.iter_mut().find(|m| m.id == answer.message))
                .ok_or(RepoError::NotFound(Entity::Message))?;
            if stored.status != MessageStatus::Streaming {
                return Err(RepoError::Conflict("the answer has already ended"));
            }
            stored.content = answer.content;
            stored.status = answer.status;
            let stored = stored.clone();
            let question = stored.parent_id;
            if let Some(record) = answer.record {
                s.records.insert(stored.id, record);
            }
            if let Some(c) = s.chats.get_mut(&chat) {
                if c.current_leaf_id == answer.leaf_at_start || Some(c.current_leaf_id) == question
                {
                    c.current_leaf_id = stored.id;
                }
                c.updated_at = Timestamp::from_unix_micros(
                    answer
                        .now
                        .as_unix_micros()
                        .max(c.updated_at.as_unix_micros() + 1),
                );
            }
            Ok(version_after(s, chat, expected, before))
        })
    }

    async fn interrupt_streaming(
        &self,
        created_before: Timestamp,
        now: Timestamp,
    ) -> Result<u64, RepoError> {
        self.with(|s| {
            let mut marked = 0;
            let mut touched = Vec::new();
            for (chat, list) in &mut s.messages {
                for m in list.iter_mut().filter(|m| {
                    m.status == MessageStatus::Streaming && m.created_at < created_before
                }) {
                    m.status = MessageStatus::Interrupted;
                    marked += 1;
                    touched.push((*chat, m.id, m.parent_id));
                }
            }
            for (chat, id, parent) in touched {
                if let Some(c) = s.chats.get_mut(&chat) {
                    c.updated_at = now;
                    if Some(c.current_leaf_id) == parent {
                        c.current_leaf_id = id;
                    }
                }
            }
            Ok(marked)
        })
    }

    async fn set_generated_title(
        &self,
        owner: UserId,
        chat: ChatId,
        title: domain::ChatTitle,
    ) -> Result<bool, RepoError> {
        self.with(|s| {
            // As the adapters: a chat that is not the owner's (or is gone) has nothing to title.
            let Some(c) = s.chats.get_mut(&chat).filter(|c| c.owner == owner) else {
                return Ok(false);
            };
            if c.title.is_some() || c.title_set_by_user {
                return Ok(false);
            }
            c.title = Some(title);
            Ok(true)
        })
    }

    async fn delete_subtree(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<DeletedSubtree, RepoError> {
        self.with(|s| {
            let current = owned_chat(s, owner, chat)?.current_leaf_id;
            let messages = s.messages.get(&chat).cloned().unwrap_or_default();
            let mut tree = ConversationTree::build(chat, messages)
                .map_err(|e| RepoError::Corrupt(Box::new(e)))?;
            let (removed, parent) = tree.remove_subtree(message).map_err(|e| match e {
                domain::TreeError::RootRemoval => RepoError::Conflict("the root cannot be deleted"),
                _ => RepoError::NotFound(Entity::Message),
            })?;
            let leaf = if removed.contains(&current) {
                parent
            } else {
                current
            };
            if let Some(list) = s.messages.get_mut(&chat) {
                list.retain(|m| !removed.contains(&m.id));
            }
            for id in &removed {
                if let Some(mut record) = s.records.remove(id) {
                    record.message_id = None;
                    s.unattached_records.push(record);
                }
            }
            let c = owned_chat(s, owner, chat)?;
            c.current_leaf_id = leaf;
            c.message_count -= removed.len() as u64;
            Ok(DeletedSubtree {
                removed,
                current_leaf: leaf,
            })
        })
    }

    async fn delete_chat(&self, owner: UserId, chat: ChatId) -> Result<(), RepoError> {
        self.with(|s| {
            owned_chat(s, owner, chat)?;
            s.chats.remove(&chat);
            for m in s.messages.remove(&chat).unwrap_or_default() {
                if let Some(mut record) = s.records.remove(&m.id) {
                    // The record outlives its chat, detached.
                    record.chat_id = None;
                    record.message_id = None;
                    s.unattached_records.push(record);
                }
            }
            Ok(())
        })
    }

    async fn record_generation(&self, record: GenerationRecord) -> Result<(), RepoError> {
        self.with(|s| {
            s.unattached_records.push(record);
            Ok(())
        })
    }
}

/// A chat's version (see [`crate::ports::ChatVersion`]).
fn version_of(s: &State, chat: ChatId) -> Option<crate::ports::ChatVersion> {
    s.chats
        .get(&chat)
        .map(|c| (c.updated_at.as_unix_micros(), c.message_count))
}

/// The version after a write made from `expected`, when nobody wrote in between.
fn version_after(
    s: &State,
    chat: ChatId,
    expected: Option<crate::ports::ChatVersion>,
    before: Option<crate::ports::ChatVersion>,
) -> Option<crate::ports::ChatVersion> {
    expected
        .filter(|_| expected == before)
        .and(version_of(s, chat))
}
