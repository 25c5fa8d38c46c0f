//! [`UserRepository`] on sea-orm.

use domain::{Page, PageRequest, Timestamp, User, UserId, Username};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::ExprTrait;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use usecase::ports::{Entity, NewUser, RepoError, UserChange, UserCredentials, UserRepository};

use crate::SeaOrmStore;
use crate::convert::{to_user, ts, uuid};
use crate::entity::users;
use crate::error::{classify, to_repo_error};

/// The row of a new account.
pub(crate) fn new_user_row(user: NewUser) -> users::ActiveModel {
    users::ActiveModel {
        id: Set(uuid(user.id.as_u128())),
        username: Set(user.username.as_str().to_owned()),
        username_canonical: Set(user.username.canonical()),
        password_hash: Set(user.password_hash),
        disabled: Set(false),
        token_epoch: Set(0),
        created_at: Set(ts(user.created_at)),
        updated_at: Set(ts(user.created_at)),
        role: Set(user.role.as_str().to_owned()),
        pending: Set(user.pending),
        quota_daily_cost_pico: Set(None),
        quota_monthly_cost_pico: Set(None),
        quota_daily_tokens: Set(None),
        quota_monthly_tokens: Set(None),
    }
}

impl UserRepository for SeaOrmStore {
    async fn create_user(&self, user: NewUser) -> Result<User, RepoError> {
        let row = new_user_row(user)
            .insert(&self.write)
            .await
            .map_err(|e| classify(e, "username is taken", Entity::User))?;
        to_user(row)
    }

    async fn find_credentials(
        &self,
        username: &Username,
    ) -> Result<Option<UserCredentials>, RepoError> {
        let row = users::Entity::find()
            .filter(users::Column::UsernameCanonical.eq(username.canonical()))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?;
        row.map(|row| {
            let password_hash = row.password_hash.clone();
            Ok(UserCredentials {
                user: to_user(row)?,
                password_hash,
            })
        })
        .transpose()
    }

    async fn get_user(&self, id: UserId) -> Result<User, RepoError> {
        users::Entity::find_by_id(uuid(id.as_u128()))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::User))
            .and_then(to_user)
    }

    async fn list_users(&self, page: PageRequest) -> Result<Page<User>, RepoError> {
        let (rows, total) = crate::admin::page_of(
            &self.read,
            users::Entity::find()
                .order_by_asc(users::Column::CreatedAt)
                .order_by_asc(users::Column::Id),
            page,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(to_user).collect::<Result<_, _>>()?,
            total,
            request: page,
        })
    }

    async fn update_user(
        &self,
        id: UserId,
        change: UserChange,
        now: Timestamp,
    ) -> Result<User, RepoError> {
        let mut update = users::Entity::update_many()
            .col_expr(users::Column::UpdatedAt, Expr::value(ts(now)))
            .filter(users::Column::Id.eq(uuid(id.as_u128())));
        if let Some(disabled) = change.disabled {
            update = update.col_expr(users::Column::Disabled, Expr::value(disabled));
        }
        if let Some(hash) = change.password_hash {
            update = update.col_expr(users::Column::PasswordHash, Expr::value(hash));
        }
        if let Some(role) = change.role {
            update = update.col_expr(users::Column::Role, Expr::value(role.as_str()));
        }
        if let Some(pending) = change.pending {
            update = update.col_expr(users::Column::Pending, Expr::value(pending));
        }
        if let Some(q) = change.quota {
            let tokens = |t: Option<u64>| t.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
            update = update
                .col_expr(
                    users::Column::QuotaDailyCostPico,
                    Expr::value(q.daily_cost.map(domain::Usd::as_pico)),
                )
                .col_expr(
                    users::Column::QuotaMonthlyCostPico,
                    Expr::value(q.monthly_cost.map(domain::Usd::as_pico)),
                )
                .col_expr(
                    users::Column::QuotaDailyTokens,
                    Expr::value(tokens(q.daily_tokens)),
                )
                .col_expr(
                    users::Column::QuotaMonthlyTokens,
                    Expr::value(tokens(q.monthly_tokens)),
                );
        }
        if change.end_sessions {
            // One atomic statement: two concurrent resets both count.
            update = update.col_expr(
                users::Column::TokenEpoch,
                Expr::col(users::Column::TokenEpoch).add(1),
            );
        }
        let result = update.exec(&self.write).await.map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::User));
        }
        users::Entity::find_by_id(uuid(id.as_u128()))
            .one(&self.write)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::User))
            .and_then(to_user)
    }
}
