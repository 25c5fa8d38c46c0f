//! Which settings a generation uses: each one comes from the first layer that gives it, in
//! the order request > preset (the request's, else the chat's) > chat > the user's default >
//! the server's default.

use crate::chat::{Chat, SystemPrompt};
use crate::model::ModelId;
use crate::preset::Preset;

/// What one layer says about a generation (`None`: nothing, ask the next layer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationSettings {
    /// The model.
    pub model: Option<ModelId>,
    /// The sampling temperature.
    pub temperature: Option<f64>,
    /// The answer's token cap.
    pub max_tokens: Option<u32>,
    /// The system prompt sent first.
    pub system_prompt: Option<SystemPrompt>,
}

impl GenerationSettings {
    /// What a preset says.
    #[must_use]
    pub fn of_preset(preset: &Preset) -> Self {
        Self {
            model: preset.model_id.clone(),
            temperature: preset.temperature.map(crate::Temperature::value),
            max_tokens: preset.max_tokens.map(crate::MaxTokens::value),
            system_prompt: preset.system_prompt.clone(),
        }
    }

    /// What a chat says (its model and system prompt).
    #[must_use]
    pub fn of_chat(chat: &Chat) -> Self {
        Self {
            model: chat.model_id.clone(),
            system_prompt: chat.system_prompt.clone(),
            ..Self::default()
        }
    }

    /// Each setting from `self` where it gives one, else from `lower`.
    #[must_use]
    pub fn over(self, lower: Self) -> Self {
        Self {
            model: self.model.or(lower.model),
            temperature: self.temperature.or(lower.temperature),
            max_tokens: self.max_tokens.or(lower.max_tokens),
            system_prompt: self.system_prompt.or(lower.system_prompt),
        }
    }

    /// The settings of a generation from its layers, highest first: the request, the preset
    /// (the request's, else the chat's), the chat. The model, when none of them names one,
    /// is left for the user's default and then the server's ([`Self::model_or`]).
    #[must_use]
    pub fn resolve(request: Self, preset: Option<&Preset>, chat: &Chat) -> Self {
        request
            .over(preset.map(Self::of_preset).unwrap_or_default())
            .over(Self::of_chat(chat))
    }

    /// The model: the resolved one, else the user's default, else the server's.
    #[must_use]
    pub fn model_or(&self, user_default: Option<ModelId>, server_default: &ModelId) -> ModelId {
        self.model
            .clone()
            .or(user_default)
            .unwrap_or_else(|| server_default.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ChatId, MaxTokens, MessageId, PresetId, PresetName, Temperature, Timestamp, UserId,
    };

    fn model(id: &str) -> ModelId {
        ModelId::parse(id).unwrap()
    }

    fn prompt(text: &str) -> SystemPrompt {
        SystemPrompt::parse(text).unwrap()
    }

    fn chat(model_id: Option<&str>, system: Option<&str>) -> Chat {
        Chat {
            id: ChatId::from_u128(1),
            owner: UserId::from_u128(2),
            title: None,
            title_set_by_user: false,
            system_prompt: system.map(prompt),
            model_id: model_id.map(model),
            preset_id: None,
            root_id: MessageId::from_u128(3),
            current_leaf_id: MessageId::from_u128(3),
            message_count: 1,
            created_at: Timestamp::from_unix_micros(0),
            updated_at: Timestamp::from_unix_micros(0),
        }
    }

    fn preset(model_id: Option<&str>, temperature: Option<f64>, system: Option<&str>) -> Preset {
        Preset {
            id: PresetId::from_u128(4),
            owner: UserId::from_u128(2),
            name: PresetName::parse("p").unwrap(),
            description: None,
            model_id: model_id.map(model),
            temperature: temperature.map(|t| Temperature::new(t).unwrap()),
            max_tokens: Some(MaxTokens::new(256, None, 1_000).unwrap()),
            system_prompt: system.map(prompt),
            is_favorite: false,
            usage_count: 0,
            created_at: Timestamp::from_unix_micros(0),
            updated_at: Timestamp::from_unix_micros(0),
        }
    }

    #[test]
    fn the_request_wins_then_the_preset_then_the_chat() {
        let request = GenerationSettings {
            temperature: Some(0.1),
            ..GenerationSettings::default()
        };
        let p = preset(Some("p/model"), Some(0.9), Some("preset prompt"));
        let c = chat(Some("c/model"), Some("chat prompt"));
        let s = GenerationSettings::resolve(request, Some(&p), &c);
        assert_eq!(
            s.model,
            Some(model("p/model")),
            "the preset's model beats the chat's"
        );
        assert_eq!(
            s.temperature,
            Some(0.1),
            "the request's temperature beats the preset's"
        );
        assert_eq!(s.max_tokens, Some(256), "only the preset gives one");
        assert_eq!(s.system_prompt, Some(prompt("preset prompt")));

        let request = GenerationSettings {
            model: Some(model("r/model")),
            ..GenerationSettings::default()
        };
        let s = GenerationSettings::resolve(request, Some(&p), &c);
        assert_eq!(
            s.model,
            Some(model("r/model")),
            "the request beats everything"
        );
    }

    #[test]
    fn without_a_preset_the_chat_speaks_and_the_user_then_the_server_name_the_model() {
        let c = chat(None, Some("chat prompt"));
        let s = GenerationSettings::resolve(GenerationSettings::default(), None, &c);
        assert_eq!(s.model, None);
        assert_eq!(s.system_prompt, Some(prompt("chat prompt")));
        assert_eq!(s.temperature, None);
        let server = model("server/default");
        assert_eq!(
            s.model_or(Some(model("user/default")), &server),
            model("user/default")
        );
        assert_eq!(s.model_or(None, &server), server);
        let c = chat(Some("c/model"), None);
        let s = GenerationSettings::resolve(GenerationSettings::default(), None, &c);
        assert_eq!(
            s.model_or(Some(model("user/default")), &server),
            model("c/model")
        );
    }

    #[test]
    fn a_preset_without_a_prompt_leaves_the_chats() {
        let p = preset(None, None, None);
        let c = chat(Some("c/model"), Some("chat prompt"));
        let s = GenerationSettings::resolve(GenerationSettings::default(), Some(&p), &c);
        assert_eq!(s.model, Some(model("c/model")));
        assert_eq!(s.system_prompt, Some(prompt("chat prompt")));
    }
}
