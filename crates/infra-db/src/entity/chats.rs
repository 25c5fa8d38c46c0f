use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: Option<String>,
    pub title_set_by_user: bool,
    pub system_prompt: Option<String>,
    pub model_id: Option<String>,
    pub preset_id: Option<Uuid>,
    pub root_id: Uuid,
    pub current_leaf_id: Uuid,
    pub message_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
