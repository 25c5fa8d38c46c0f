use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "generations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub message_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub user_id: Uuid,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_pico_usd: i64,
    pub cost_source: String,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub finish_reason: Option<String>,
    pub created_at: i64,
    pub kind: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
