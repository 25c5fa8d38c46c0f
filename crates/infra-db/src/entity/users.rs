use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub username: String,
    pub username_canonical: String,
    pub password_hash: String,
    pub disabled: bool,
    pub token_epoch: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub role: String,
    pub pending: bool,
    pub quota_daily_cost_pico: Option<i64>,
    pub quota_monthly_cost_pico: Option<i64>,
    pub quota_daily_tokens: Option<i64>,
    pub quota_monthly_tokens: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
