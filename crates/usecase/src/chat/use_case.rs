//! [`ChatUseCase`] (every route of conversations, scoped to its owner) and its implementation on [`ChatService`].

use super::*;

/// Inbound port of the conversation capability.
pub trait ChatUseCase: Send + Sync + 'static {
    /// Creates a chat and its root message in one transaction.
    ///
    /// # Errors
    /// [`ChatError::UnknownModel`].
    fn create_chat(
        &self,
        owner: UserId,
        input: NewChatInput,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// One chat.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn get_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// A page of chats (by offset, or after a cursor), with the next page's cursor.
    ///
    /// # Errors
    /// Storage failures.
    fn list_chats(
        &self,
        owner: UserId,
        query: ChatQuery,
    ) -> impl Future<Output = Result<ChatList, ChatError>> + Send;

    /// Deletes a chat with everything in it.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn delete_chat(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;

    /// The chat with its whole tree.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn tree(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<ChatWithTree, ChatError>> + Send;

    /// The current branch, root → current leaf.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn current_branch(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Vec<Message>, ChatError>> + Send;

    /// The current branch as `render` makes it (an HTTP body, say), kept with the chat's
    /// version under `kind`: reading an unchanged chat again costs neither its messages nor
    /// the rendering.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn current_branch_rendered<F>(
        &self,
        owner: UserId,
        chat: ChatId,
        kind: &'static str,
        render: F,
    ) -> impl Future<Output = Result<Arc<Vec<u8>>, ChatError>> + Send
    where
        F: FnOnce(&[Message]) -> Vec<u8> + Send;

    /// Moves the current leaf to `message`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::MessageNotFound`].
    fn select(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// Removes a message and its subtree.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found errors.
    fn delete_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> impl Future<Output = Result<MessageId, ChatError>> + Send;

    /// Sends a user message (under `input.parent` or the current leaf) and stores the
    /// model's answer. The user message is committed before the provider is called and stays
    /// if the provider fails.
    ///
    /// # Errors
    /// Not-found errors, [`ChatError::UnknownModel`], [`ChatError::Llm`].
    fn send(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> impl Future<Output = Result<Reply, ChatError>> + Send;

    /// Changes title, system prompt or model.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::UnknownModel`].
    fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
    ) -> impl Future<Output = Result<Chat, ChatError>> + Send;

    /// Messages containing `query` in one chat or in all of the owner's chats.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn search(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: SearchQuery,
        page: PageRequest,
    ) -> impl Future<Output = Result<SearchResults, ChatError>> + Send;

    /// A new answer as a sibling of the old one: on a user message, answers it again; on an
    /// assistant message, answers its user message again.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found and provider errors.
    fn retry(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> impl Future<Output = Result<Reply, ChatError>> + Send;

    /// "Edits" a message: a sibling with the new content becomes the current leaf (completed
    /// messages are immutable). For a user message with `regenerate` (the answer's model,
    /// preset and sampling overrides), also answers it.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root, and for `regenerate` on an assistant
    /// message; not-found and provider errors.
    fn edit(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        regenerate: Option<GenerationOptions>,
    ) -> impl Future<Output = Result<Edited, ChatError>> + Send;

    /// Edits a user message and streams the answer to the new question, as
    /// [`ChatUseCase::send_stream`] does (the edit is a new sibling question).
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root or an assistant message; as
    /// [`ChatUseCase::send_stream`] otherwise.
    fn edit_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        options: GenerationOptions,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// Like [`ChatUseCase::send`], but the answer is generated by a task of its own and
    /// followed through the returned subscription: `Start`, `Chunk`s, then `Final` or
    /// `Error`, then `Done`. The user message and the `streaming` answer row are committed
    /// before this returns.
    ///
    /// # Errors
    /// As [`ChatUseCase::send`] for what is found before the stream starts, plus
    /// [`ChatError::Busy`], [`ChatError::GenerationRunning`], [`ChatError::ShuttingDown`].
    fn send_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// [`ChatUseCase::retry`], streamed as [`ChatUseCase::send_stream`].
    ///
    /// # Errors
    /// As [`ChatUseCase::retry`] and [`ChatUseCase::send_stream`].
    fn retry_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// The chat's generation (running or recently finished), if any.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    fn generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<Option<GenerationStatus>, ChatError>> + Send;

    /// Stops the chat's running generation; its partial answer is saved `interrupted`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::NoGeneration`] when none runs.
    fn cancel_generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> impl Future<Output = Result<GenerationStatus, ChatError>> + Send;

    /// Re-attaches to the chat's generation: replays the events after `after` (all when
    /// `None`), then follows live.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::NoGeneration`].
    fn attach(
        &self,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> impl Future<Output = Result<Subscription, ChatError>> + Send;

    /// The account's quota limits and its usage in the current day and month.
    ///
    /// # Errors
    /// Storage failures.
    fn quota_usage(
        &self,
        owner: UserId,
    ) -> impl Future<Output = Result<QuotaUsage, ChatError>> + Send;
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator> ChatUseCase
    for ChatService<R, L, M, C, I>
{
    /// Creates a chat and its root message in one transaction.
    ///
    /// # Errors
    /// [`ChatError::UnknownModel`].
    async fn create_chat(&self, owner: UserId, input: NewChatInput) -> Result<Chat, ChatError> {
        self.check_chat_texts(input.title.as_ref(), input.system_prompt.as_ref())?;
        if let Some(message) = &input.initial_message {
            self.input
                .system_prompt("initial_message", message)
                .map_err(ChatError::Invalid)?;
        }
        if let Some(model) = &input.model_id {
            self.check_model(model).await?;
        }
        if let Some(preset) = input.preset_id {
            self.preset_of(owner, preset).await?;
        }
        self.repo
            .create_chat(NewChat {
                id: ChatId::from_u128(self.ids.next_id()),
                owner,
                title: input.title,
                system_prompt: input.system_prompt,
                model_id: input.model_id,
                preset_id: input.preset_id,
                root_id: MessageId::from_u128(self.ids.next_id()),
                root_content: input.initial_message.unwrap_or_default(),
                created_at: self.clock.now(),
            })
            .await
            .map_err(repo)
    }

    /// One chat.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn get_chat(&self, owner: UserId, chat: ChatId) -> Result<Chat, ChatError> {
        self.repo.get_chat(owner, chat).await.map_err(repo)
    }

    /// A page of chats.
    ///
    /// # Errors
    /// Storage failures.
    async fn list_chats(&self, owner: UserId, query: ChatQuery) -> Result<ChatList, ChatError> {
        self.repo.list_chats(owner, query).await.map_err(repo)
    }

    /// Deletes a chat with everything in it.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn delete_chat(&self, owner: UserId, chat: ChatId) -> Result<(), ChatError> {
        self.get_chat(owner, chat).await?;
        // A running answer is stopped first (its partial text and its record saved), so the
        // provider call and the slot end with the chat and what the call used still counts.
        self.stop_generation_if(owner, chat, |_| true).await;
        self.repo.delete_chat(owner, chat).await.map_err(repo)
    }

    /// The chat with its whole tree.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn tree(&self, owner: UserId, chat: ChatId) -> Result<ChatWithTree, ChatError> {
        let chat = self.get_chat(owner, chat).await?;
        let messages = self.cached_messages(owner, &chat).await?;
        let tree = ConversationTree::build(chat.id, messages.as_ref().clone())
            .map_err(|e| ChatError::Storage(RepoError::Corrupt(Box::new(e))))?;
        Ok(ChatWithTree { chat, tree })
    }

    /// The current branch, root → current leaf.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`].
    async fn current_branch_rendered<F>(
        &self,
        owner: UserId,
        chat: ChatId,
        kind: &'static str,
        render: F,
    ) -> Result<Arc<Vec<u8>>, ChatError>
    where
        F: FnOnce(&[Message]) -> Vec<u8> + Send,
    {
        let chat = self.get_chat(owner, chat).await?;
        let (at, key) = (version(&chat), (chat.id, kind));
        if let Some(hit) = self.cache.rendering(key, at, chat.current_leaf_id) {
            metrics::counter!("arbor_cache_hits_total", "cache" => "rendered").increment(1);
            return Ok(hit);
        }
        metrics::counter!("arbor_cache_misses_total", "cache" => "rendered").increment(1);
        let messages = self.cached_messages(owner, &chat).await?;
        let path = path_in(&messages, chat.current_leaf_id).ok_or_else(|| {
            ChatError::Storage(RepoError::Corrupt(
                "the current leaf is not in the chat".into(),
            ))
        })?;
        let bytes = Arc::new(render(&path));
        if matches_version(&chat, &messages) {
            self.cache
                .keep_rendering(key, at, chat.current_leaf_id, Arc::clone(&bytes));
        }
        Ok(bytes)
    }

    async fn current_branch(&self, owner: UserId, chat: ChatId) -> Result<Vec<Message>, ChatError> {
        let t = self.tree(owner, chat).await?;
        let path = t
            .tree
            .path_to(t.chat.current_leaf_id)
            .map_err(|e| ChatError::Storage(RepoError::Corrupt(Box::new(e))))?;
        Ok(path.into_iter().cloned().collect())
    }

    /// Moves the current leaf to `message`.
    ///
    /// # Errors
    /// [`ChatError::ChatNotFound`], [`ChatError::MessageNotFound`].
    async fn select(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<Chat, ChatError> {
        self.repo
            .select_leaf(owner, chat, message, self.clock.now())
            .await
            .map_err(repo)
    }

    /// Removes a message and its subtree.
    ///
    /// # Errors
    /// [`ChatError::InvalidTarget`] for the root; not-found errors.
    async fn delete_message(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
    ) -> Result<MessageId, ChatError> {
        match self.repo.delete_subtree(owner, chat, message).await {
            Ok(d) => {
                // An answer still streaming into the removed subtree is stopped: nobody can
                // read it any more (its record is kept, detached).
                self.stop_generation_if(owner, chat, |answer| d.removed.contains(&answer))
                    .await;
                Ok(d.current_leaf)
            }
            Err(RepoError::Conflict(_)) => Err(ChatError::InvalidTarget(
                "the root message cannot be deleted",
            )),
            Err(e) => Err(repo(e)),
        }
    }

    /// Sends a user message (under `input.parent` or the current leaf) and stores the
    /// model's answer. The user message is committed before the provider is called and stays
    /// if the provider fails.
    ///
    /// # Errors
    /// Not-found errors, [`ChatError::UnknownModel`], [`ChatError::Llm`].
    async fn send(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> Result<Reply, ChatError> {
        self.check_message(&input.content)?;
        // The quota is read while the chat is (one round trip, not two).
        let (current, quota) = tokio::join!(self.get_chat(owner, chat), self.quota_of(owner));
        let current = current?;
        let plan = self.plan(owner, &current, input.options).await?;
        let slot = self.admit_within(owner, quota).await?;
        let turn = self
            .commit_question(
                owner,
                &current,
                (input.parent, input.content),
                &plan,
                Self::start_completion,
                false,
            )
            .await?;
        self.answer(owner, &current, plan, slot, turn).await
    }

    async fn update_chat(
        &self,
        owner: UserId,
        chat: ChatId,
        patch: ChatPatch,
    ) -> Result<Chat, ChatError> {
        self.check_chat_texts(
            patch.title.as_ref(),
            patch.system_prompt.as_ref().and_then(Option::as_ref),
        )?;
        if let Some(Some(model)) = &patch.model_id {
            self.check_model(model).await?;
        }
        if let Some(Some(preset)) = patch.preset_id {
            self.preset_of(owner, preset).await?;
        }
        self.repo
            .update_chat(owner, chat, patch, self.clock.now())
            .await
            .map_err(repo)
    }

    async fn search(
        &self,
        owner: UserId,
        chat: Option<ChatId>,
        query: SearchQuery,
        page: PageRequest,
    ) -> Result<SearchResults, ChatError> {
        self.repo
            .search_messages(owner, chat, query, page)
            .await
            .map_err(repo)
    }

    async fn retry(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> Result<Reply, ChatError> {
        let t = self.tree(owner, chat).await?;
        let user_message = Self::retry_target(&t.tree, message)?;
        let plan = self.plan(owner, &t.chat, options).await?;
        let slot = self.admit(owner).await?;
        let path = tree_path(&t.tree, user_message.id)?;
        let turn = Turn {
            upstream: (
                Instant::now(),
                self.start_completion(Self::request_for(&path, &plan)),
            ),
            question: user_message,
            path,
            answer_row: None,
            after: None,
        };
        self.answer(owner, &t.chat, plan, slot, turn).await
    }

    async fn edit(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        regenerate: Option<GenerationOptions>,
    ) -> Result<Edited, ChatError> {
        self.check_message(&content)?;
        let t = self.tree(owner, chat).await?;
        let (target, parent) = Self::edit_target(&t.tree, message, regenerate.is_some())?;
        let role = target.role;
        // Everything that can refuse the answer is checked before the edit is stored.
        let generation = match regenerate {
            Some(options) => {
                let plan = self.plan(owner, &t.chat, options).await?;
                let slot = self.admit(owner).await?;
                Some((plan, slot))
            }
            None => None,
        };
        let edited = self.new_message(parent, role, content.into_inner(), MessageStatus::Complete);
        // The answer to an edited question is asked for while the edit is committed.
        let upstream = match &generation {
            Some((plan, _)) => {
                let mut path = tree_path(&t.tree, parent)?;
                path.push(edited.stored_in(chat));
                let request = Self::request_for(&path, plan);
                Some((path, (Instant::now(), self.start_completion(request))))
            }
            None => None,
        };
        let edited = self
            .repo
            .append_message(owner, chat, edited, true)
            .await
            .map_err(repo)?;
        let reply = if let (Some((plan, slot)), Some((path, upstream))) = (generation, upstream) {
            let turn = Turn {
                question: edited.clone(),
                path,
                upstream,
                answer_row: None,
                after: None,
            };
            Some(self.answer(owner, &t.chat, plan, slot, turn).await?)
        } else {
            None
        };
        Ok(Edited {
            message: edited,
            reply,
        })
    }

    async fn send_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        input: SendInput,
    ) -> Result<Subscription, ChatError> {
        self.check_message(&input.content)?;
        let (current, quota) = tokio::join!(self.get_chat(owner, chat), self.quota_of(owner));
        let current = current?;
        let plan = self.plan(owner, &current, input.options).await?;
        let slot = self.admit_within(owner, quota).await?;
        let reservation = self.generations.reserve(chat, owner).await?;
        let turn = self
            .commit_question(
                owner,
                &current,
                (input.parent, input.content),
                &plan,
                Self::start_stream,
                true,
            )
            .await?;
        let answer = turn.answer_row.clone().ok_or_else(|| {
            ChatError::Storage(RepoError::Unexpected("no answer row was made".into()))
        })?;
        let leaf = turn.question.id;
        Ok(self.begin_stream(&current, plan, (slot, reservation), leaf, turn, &answer))
    }

    async fn edit_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        content: MessageContent,
        options: GenerationOptions,
    ) -> Result<Subscription, ChatError> {
        let t = self.tree(owner, chat).await?;
        let (_, parent) = Self::edit_target(&t.tree, message, true)?;
        // The edit is a new question beside the old one: a streamed send under its parent.
        self.send_stream(
            owner,
            chat,
            SendInput {
                content,
                parent: Some(parent),
                options,
            },
        )
        .await
    }

    async fn retry_stream(
        &self,
        owner: UserId,
        chat: ChatId,
        message: MessageId,
        options: GenerationOptions,
    ) -> Result<Subscription, ChatError> {
        let t = self.tree(owner, chat).await?;
        let user_message = Self::retry_target(&t.tree, message)?;
        let plan = self.plan(owner, &t.chat, options).await?;
        let slot = self.admit(owner).await?;
        let reservation = self.generations.reserve(chat, owner).await?;
        let path = tree_path(&t.tree, user_message.id)?;
        let upstream = (
            Instant::now(),
            self.start_stream(Self::request_for(&path, &plan)),
        );
        // The answer row is committed while the provider is already asked; a failure drops
        // (cancels) the call.
        let answer = self.new_message(
            user_message.id,
            Role::Assistant,
            String::new(),
            MessageStatus::Streaming,
        );
        self.repo
            .append_message(owner, chat, answer.clone(), false)
            .await
            .map_err(repo)?;
        let turn = Turn {
            question: user_message,
            path,
            upstream,
            answer_row: None,
            after: None,
        };
        Ok(self.begin_stream(
            &t.chat,
            plan,
            (slot, reservation),
            t.chat.current_leaf_id,
            turn,
            &answer,
        ))
    }

    async fn generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<Option<GenerationStatus>, ChatError> {
        self.get_chat(owner, chat).await?;
        Ok(self.generations.status_anywhere(owner, chat).await?)
    }

    async fn cancel_generation(
        &self,
        owner: UserId,
        chat: ChatId,
    ) -> Result<GenerationStatus, ChatError> {
        self.get_chat(owner, chat).await?;
        self.generations
            .cancel_anywhere(owner, chat)
            .await?
            .ok_or(ChatError::NoGeneration)
    }

    async fn attach(
        &self,
        owner: UserId,
        chat: ChatId,
        after: Option<u64>,
    ) -> Result<Subscription, ChatError> {
        self.get_chat(owner, chat).await?;
        self.generations
            .attach_anywhere(owner, chat, after)
            .await?
            .ok_or(ChatError::NoGeneration)
    }

    async fn quota_usage(&self, owner: UserId) -> Result<QuotaUsage, ChatError> {
        self.quota_of(owner).await
    }
}
