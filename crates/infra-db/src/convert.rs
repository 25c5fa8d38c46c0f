//! Rows to domain values and back. Stored data is re-validated: the database is an input
//! like any other.

use domain::{
    Category, Chat, ChatId, ChatTitle, Message, MessageId, ModelId, ModelInfo, PresetId, Pricing,
    PromptTemplate, SystemPrompt, TemplateContent, TemplateDescription, TemplateId, TemplateName,
    Timestamp, Usd, User, UserId, Username,
};
use sea_orm::prelude::Uuid;
use usecase::RepoError;

use crate::entity::{chats, generations, messages, models, prompt_templates, users};
use crate::error::corrupt;

pub(crate) fn uuid(id: u128) -> Uuid {
    Uuid::from_u128(id)
}

pub(crate) fn ts(t: Timestamp) -> i64 {
    t.as_unix_micros()
}

pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn to_user(row: users::Model) -> Result<User, RepoError> {
    Ok(User {
        id: UserId::from_u128(row.id.as_u128()),
        username: Username::parse(row.username).map_err(corrupt)?,
        disabled: row.disabled,
        role: row.role.parse().map_err(corrupt)?,
        pending: row.pending,
        quota: domain::QuotaOverrides {
            daily_cost: row.quota_daily_cost_pico.map(Usd::from_pico),
            monthly_cost: row.quota_monthly_cost_pico.map(Usd::from_pico),
            daily_tokens: row.quota_daily_tokens.map(count),
            monthly_tokens: row.quota_monthly_tokens.map(count),
        },
        token_epoch: row.token_epoch,
        created_at: Timestamp::from_unix_micros(row.created_at),
    })
}

pub(crate) fn to_chat(row: chats::Model) -> Result<Chat, RepoError> {
    Ok(Chat {
        id: ChatId::from_u128(row.id.as_u128()),
        owner: UserId::from_u128(row.user_id.as_u128()),
        title: row
            .title
            .map(ChatTitle::parse)
            .transpose()
            .map_err(corrupt)?,
        title_set_by_user: row.title_set_by_user,
        system_prompt: row
            .system_prompt
            .map(SystemPrompt::parse)
            .transpose()
            .map_err(corrupt)?,
        model_id: row
            .model_id
            .map(ModelId::parse)
            .transpose()
            .map_err(corrupt)?,
        preset_id: row.preset_id.map(|p| PresetId::from_u128(p.as_u128())),
        root_id: MessageId::from_u128(row.root_id.as_u128()),
        current_leaf_id: MessageId::from_u128(row.current_leaf_id.as_u128()),
        message_count: count(row.message_count),
        created_at: Timestamp::from_unix_micros(row.created_at),
        updated_at: Timestamp::from_unix_micros(row.updated_at),
    })
}

pub(crate) fn to_message(row: messages::Model) -> Result<Message, RepoError> {
    Ok(Message {
        id: MessageId::from_u128(row.id.as_u128()),
        chat_id: ChatId::from_u128(row.chat_id.as_u128()),
        parent_id: row.parent_id.map(|p| MessageId::from_u128(p.as_u128())),
        role: row.role.parse().map_err(corrupt)?,
        content: row.content,
        status: row.status.parse().map_err(corrupt)?,
        created_at: Timestamp::from_unix_micros(row.created_at),
        generation: None,
    })
}

/// What an answer shows of its generation record.
pub(crate) fn to_stats(row: generations::Model) -> Result<domain::GenerationStats, RepoError> {
    Ok(domain::GenerationStats {
        model: ModelId::parse(row.model).map_err(corrupt)?,
        provider: row.provider,
        usage: domain::TokenUsage {
            prompt_tokens: count(row.prompt_tokens),
            completion_tokens: count(row.completion_tokens),
            total_tokens: count(row.total_tokens),
        },
        cost: Usd::from_pico(row.cost_pico_usd),
        cost_source: row.cost_source.parse().map_err(corrupt)?,
        latency_ms: count(row.latency_ms),
        time_to_first_token_ms: row.ttft_ms.map(count),
        finish_reason: row.finish_reason,
    })
}

/// Lists of simple names are stored comma-separated (names never contain commas).
pub(crate) fn join_names(names: &[String]) -> String {
    names.join(",")
}

pub(crate) fn split_names(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn to_template(row: prompt_templates::Model) -> Result<PromptTemplate, RepoError> {
    Ok(PromptTemplate {
        id: TemplateId::from_u128(row.id.as_u128()),
        owner: UserId::from_u128(row.user_id.as_u128()),
        name: TemplateName::parse(row.name).map_err(corrupt)?,
        description: row
            .description
            .map(TemplateDescription::parse)
            .transpose()
            .map_err(corrupt)?,
        content: TemplateContent::parse(row.content).map_err(corrupt)?,
        category: row
            .category
            .map(Category::parse)
            .transpose()
            .map_err(corrupt)?,
        is_public: row.is_public,
        is_favorite: row.is_favorite,
        usage_count: count(row.usage_count),
        created_at: Timestamp::from_unix_micros(row.created_at),
        updated_at: Timestamp::from_unix_micros(row.updated_at),
    })
}

pub(crate) fn to_model_info(row: models::Model) -> Result<ModelInfo, RepoError> {
    Ok(ModelInfo {
        id: ModelId::parse(row.id).map_err(corrupt)?,
        name: row.name,
        description: row.description,
        context_length: row.context_length.and_then(|c| u32::try_from(c).ok()),
        pricing: Pricing {
            prompt: Usd::parse_decimal(&row.prompt_price).map_err(corrupt)?,
            completion: Usd::parse_decimal(&row.completion_price).map_err(corrupt)?,
        },
        input_modalities: split_names(&row.input_modalities),
        output_modalities: split_names(&row.output_modalities),
        created: row.created,
        fetched_at: Timestamp::from_unix_micros(row.fetched_at),
    })
}
