use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    pub context_length: Option<i64>,
    pub prompt_price: String,
    pub completion_price: String,
    #[sea_orm(column_type = "Text")]
    pub input_modalities: String,
    #[sea_orm(column_type = "Text")]
    pub output_modalities: String,
    pub created: Option<i64>,
    pub fetched_at: i64,
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
