//! The settings of one generation and the request they make: the model, preset and
//! sampling resolved by precedence (request > preset > chat > user > server, the domain's
//! rule), checked against the catalogue and the operator's text limits; the prompt built
//! from the branch.

use super::*;

/// The resolved settings of one generation.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) model: ModelId,
    pub(super) info: domain::ModelInfo,
    pub(super) temperature: Option<f64>,
    pub(super) max_tokens: Option<u32>,
    pub(super) system_prompt: Option<SystemPrompt>,
    /// The conversation to send instead of the path, when the caller gave one.
    pub(super) given: Option<GivenPrompt>,
}

impl<R: ChatStore, L: LlmGateway, M: CatalogUseCase, C: Clock, I: IdGenerator>
    ChatService<R, L, M, C, I>
{
    pub(super) async fn check_model(
        &self,
        model: &ModelId,
    ) -> Result<domain::ModelInfo, ChatError> {
        match self.catalog.get_model(model).await {
            Ok((info, _)) => Ok(info),
            Err(CatalogError::UnknownModel(id)) => Err(ChatError::UnknownModel(id)),
            Err(e) => Err(ChatError::Catalog(e)),
        }
    }

    /// One of `owner`'s presets ([`ChatError::UnknownPreset`] when there is none such).
    pub(super) async fn preset_of(
        &self,
        owner: UserId,
        id: PresetId,
    ) -> Result<domain::Preset, ChatError> {
        self.repo.get_preset(owner, id).await.map_err(|e| match e {
            RepoError::NotFound(_) => ChatError::UnknownPreset,
            other => ChatError::Storage(other),
        })
    }

    /// A message's content within the operator's limit.
    pub(super) fn check_message(&self, content: &MessageContent) -> Result<(), ChatError> {
        self.input
            .message(content.as_str())
            .map_err(ChatError::Invalid)
    }

    /// A chat's title and system prompt within the operator's limits.
    pub(super) fn check_chat_texts(
        &self,
        title: Option<&ChatTitle>,
        system_prompt: Option<&SystemPrompt>,
    ) -> Result<(), ChatError> {
        if let Some(title) = title {
            self.input
                .title(title.as_str())
                .map_err(ChatError::Invalid)?;
        }
        if let Some(prompt) = system_prompt {
            self.input
                .system_prompt("system_prompt", prompt.as_str())
                .map_err(ChatError::Invalid)?;
        }
        Ok(())
    }

    /// The settings of one generation. Each resolves in the order request > preset
    /// (the request's, else the chat's) > chat > user default > server default; the model is
    /// validated against the catalogue.
    pub(super) async fn plan(
        &self,
        owner: UserId,
        chat: &Chat,
        options: GenerationOptions,
    ) -> Result<Plan, ChatError> {
        let preset = match options.preset_id.or(chat.preset_id) {
            Some(id) => Some(self.preset_of(owner, id).await?),
            None => None,
        };
        let request = domain::GenerationSettings {
            model: options.model_id,
            temperature: options.temperature,
            max_tokens: options.max_tokens,
            system_prompt: None,
        };
        let settings = domain::GenerationSettings::resolve(request, preset.as_ref(), chat);
        // The user's default is read only when nothing above names a model.
        let user_default = match settings.model {
            Some(_) => None,
            None => {
                self.catalog
                    .settings(owner)
                    .await
                    .map_err(ChatError::Catalog)?
                    .default_model_id
            }
        };
        let model = settings.model_or(user_default, &self.default_model);
        let info = self.check_model(&model).await?;
        // The answer cannot be longer than the model's whole context.
        if let Some(n) = options.max_tokens {
            domain::MaxTokens::new(i64::from(n), info.context_length, u32::MAX)
                .map_err(ChatError::Invalid)?;
        }
        Ok(Plan {
            temperature: settings.temperature,
            max_tokens: settings.max_tokens,
            system_prompt: settings.system_prompt,
            model,
            info,
            given: options.prompt,
        })
    }

    /// The messages of the prompt for an answer at the end of `path`: the system prompt,
    /// then the path — or the conversation the caller gave.
    fn prompt_of<'a>(
        path: &'a [Message],
        plan: &'a Plan,
    ) -> impl Iterator<Item = (Role, &'a str)> + 'a {
        let given = plan.given.as_ref();
        let own = given.is_none();
        let system = plan
            .system_prompt
            .as_ref()
            .map(SystemPrompt::as_str)
            .filter(|p| own && !p.trim().is_empty())
            .map(|p| (Role::System, p));
        // An empty root, and an answer that ended before its first word (cancelled,
        // failed), are left out: some providers reject empty messages, and they say
        // nothing anyway.
        let path = path
            .iter()
            .filter(move |m| own && (m.role == Role::User || !m.content.trim().is_empty()))
            .map(|m| (m.role, m.content.as_str()));
        given
            .into_iter()
            .flat_map(|g| g.messages.iter().map(|m| (m.role, m.content.as_str())))
            .chain(system)
            .chain(path)
    }

    /// The request for an answer at the end of `path` (see [`Self::prompt_of`]).
    pub(super) fn request_for(path: &[Message], plan: &Plan) -> CompletionRequest {
        CompletionRequest {
            model: plan.model.clone(),
            messages: Self::prompt_of(path, plan)
                .map(|(role, content)| PromptMessage {
                    role,
                    content: content.to_owned(),
                })
                .collect(),
            temperature: plan.temperature,
            max_tokens: plan.max_tokens,
            passthrough: plan.given.as_ref().and_then(|g| g.passthrough.clone()),
        }
    }

    /// The size in bytes of the prompt [`Self::request_for`] sends.
    pub(super) fn prompt_bytes(path: &[Message], plan: &Plan) -> usize {
        Self::prompt_of(path, plan)
            .map(|(_, text)| text.len())
            .sum()
    }
}
