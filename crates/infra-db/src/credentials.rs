//! [`CredentialRepository`] on sea-orm: refresh tokens (rotation, reuse detection) and API keys.

use domain::{ApiKeyId, Timestamp, UserId};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Alias, ExprTrait, Query, UnionType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use usecase::auth::{
    AccountChanges, ApiKeyRecord, CredentialRepository, RefreshSuccessor, RefreshTokenRecord,
    Rotation,
};
use usecase::ports::{Entity, RepoError};

use crate::SeaOrmStore;
use crate::convert::{ts, uuid};
use crate::entity::{api_keys, refresh_tokens, users};
use crate::error::{classify, to_repo_error};

fn to_key(row: api_keys::Model) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::from_u128(row.id.as_u128()),
        user_id: UserId::from_u128(row.user_id.as_u128()),
        name: row.name,
        prefix: row.prefix,
        key_hash: row.key_hash,
        created_at: Timestamp::from_unix_micros(row.created_at),
        last_used_at: row.last_used_at.map(Timestamp::from_unix_micros),
        expires_at: row.expires_at.map(Timestamp::from_unix_micros),
        read_only: row.read_only,
    }
}

impl CredentialRepository for SeaOrmStore {
    async fn replace_password_hash(
        &self,
        user: UserId,
        old: &str,
        new: String,
    ) -> Result<bool, RepoError> {
        let done = users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(new))
            .filter(users::Column::Id.eq(uuid(user.as_u128())))
            .filter(users::Column::PasswordHash.eq(old))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        Ok(done.rows_affected > 0)
    }

    async fn store_refresh_token(&self, r: RefreshTokenRecord) -> Result<(), RepoError> {
        refresh_tokens::ActiveModel {
            id: Set(uuid(r.id.as_u128())),
            user_id: Set(uuid(r.user_id.as_u128())),
            family_id: Set(uuid(r.family_id.as_u128())),
            token_hash: Set(r.token_hash),
            created_at: Set(ts(r.created_at)),
            expires_at: Set(ts(r.expires_at)),
            used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&self.write)
        .await
        .map_err(|e| classify(e, "refresh token collision", Entity::User))?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        hash: &str,
        successor: RefreshSuccessor,
        now: Timestamp,
    ) -> Result<Rotation, RepoError> {
        let txn = self.begin_write().await?;
        let mut query =
            refresh_tokens::Entity::find().filter(refresh_tokens::Column::TokenHash.eq(hash));
        if self.locks_rows() {
            query = query.lock_exclusive();
        }
        let Some(row) = query.one(&txn).await.map_err(to_repo_error)? else {
            return Ok(Rotation::Unknown);
        };
        if row.used_at.is_some() || row.revoked_at.is_some() {
            refresh_tokens::Entity::update_many()
                .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(ts(now)))
                .filter(refresh_tokens::Column::FamilyId.eq(row.family_id))
                .filter(refresh_tokens::Column::RevokedAt.is_null())
                .exec(&txn)
                .await
                .map_err(to_repo_error)?;
            txn.commit().await.map_err(to_repo_error)?;
            return Ok(Rotation::Reused);
        }
        if row.expires_at <= ts(now) {
            return Ok(Rotation::Expired);
        }
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(ts(now)))
            .filter(refresh_tokens::Column::Id.eq(row.id))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        refresh_tokens::ActiveModel {
            id: Set(uuid(successor.id.as_u128())),
            user_id: Set(row.user_id),
            family_id: Set(row.family_id),
            token_hash: Set(successor.token_hash),
            created_at: Set(ts(successor.created_at)),
            expires_at: Set(ts(successor.expires_at)),
            used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| classify(e, "refresh token collision", Entity::User))?;
        txn.commit().await.map_err(to_repo_error)?;
        Ok(Rotation::Rotated(UserId::from_u128(row.user_id.as_u128())))
    }

    async fn revoke_refresh_tokens(
        &self,
        user: UserId,
        hash: Option<&str>,
        now: Timestamp,
    ) -> Result<u64, RepoError> {
        let update = || {
            refresh_tokens::Entity::update_many()
                .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(ts(now)))
                .filter(refresh_tokens::Column::UserId.eq(uuid(user.as_u128())))
                .filter(refresh_tokens::Column::RevokedAt.is_null())
        };
        if let Some(hash) = hash {
            let one = update().filter(refresh_tokens::Column::TokenHash.eq(hash));
            let result = one.exec(&self.write).await.map_err(to_repo_error)?;
            return Ok(result.rows_affected);
        }
        // All of them: twice, in one transaction. A rotation that held a token's row lock
        // while the first statement waited for it commits a successor that statement cannot
        // see (PostgreSQL's read committed takes a statement's snapshot when it starts); the
        // second sees it. A rotation that starts later waits for this transaction and then
        // finds its token revoked.
        let txn = self.begin_write().await?;
        let first = update().exec(&txn).await.map_err(to_repo_error)?;
        let second = update().exec(&txn).await.map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        Ok(first.rows_affected + second.rows_affected)
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<(), RepoError> {
        api_keys::ActiveModel {
            id: Set(uuid(key.id.as_u128())),
            user_id: Set(uuid(key.user_id.as_u128())),
            name: Set(key.name),
            prefix: Set(key.prefix),
            key_hash: Set(key.key_hash),
            created_at: Set(ts(key.created_at)),
            last_used_at: Set(None),
            revoked_at: Set(None),
            expires_at: Set(key.expires_at.map(ts)),
            read_only: Set(key.read_only),
        }
        .insert(&self.write)
        .await
        .map_err(|e| classify(e, "API key prefix collision", Entity::User))?;
        Ok(())
    }

    async fn list_api_keys(&self, user: UserId) -> Result<Vec<ApiKeyRecord>, RepoError> {
        Ok(api_keys::Entity::find()
            .filter(api_keys::Column::UserId.eq(uuid(user.as_u128())))
            .filter(api_keys::Column::RevokedAt.is_null())
            .order_by_desc(api_keys::Column::CreatedAt)
            .all(&self.read)
            .await
            .map_err(to_repo_error)?
            .into_iter()
            .map(to_key)
            .collect())
    }

    async fn revoke_api_key(
        &self,
        user: UserId,
        id: ApiKeyId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let result = api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Expr::value(ts(now)))
            .filter(api_keys::Column::Id.eq(uuid(id.as_u128())))
            .filter(api_keys::Column::UserId.eq(uuid(user.as_u128())))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::User));
        }
        Ok(())
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, RepoError> {
        Ok(api_keys::Entity::find()
            .filter(api_keys::Column::Prefix.eq(prefix))
            .filter(api_keys::Column::RevokedAt.is_null())
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .map(to_key))
    }

    async fn record_api_key_use(&self, id: ApiKeyId, now: Timestamp) -> Result<(), RepoError> {
        let since = ts(now) - usecase::auth::API_KEY_USE_RESOLUTION_MICROS;
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::LastUsedAt, Expr::value(ts(now)))
            .filter(api_keys::Column::Id.eq(uuid(id.as_u128())))
            .filter(
                sea_orm::Condition::any()
                    .add(api_keys::Column::LastUsedAt.is_null())
                    .add(api_keys::Column::LastUsedAt.lt(since)),
            )
            .exec(&self.write)
            .await
            .map(drop)
            .map_err(to_repo_error)
    }

    async fn account_changes_since(&self, since: Timestamp) -> Result<AccountChanges, RepoError> {
        // Changed accounts, and deleted ones (no row left: their tombstones say so), in one
        // round trip.
        let changed = Query::select()
            .column(users::Column::Id)
            .from(users::Entity)
            .and_where(Expr::col(users::Column::UpdatedAt).gte(ts(since)))
            .union(
                UnionType::All,
                Query::select()
                    .expr_as(Expr::col(Alias::new("user_id")), Alias::new("id"))
                    .from(Alias::new("account_tombstones"))
                    .and_where(Expr::col(Alias::new("deleted_at")).gte(ts(since)))
                    .to_owned(),
            )
            .to_owned();
        let mut users = Vec::new();
        for row in self.read.query_all(&changed).await.map_err(to_repo_error)? {
            users.push(
                row.try_get::<sea_orm::prelude::Uuid>("", "id")
                    .map_err(to_repo_error)?,
            );
        }
        let api_keys = api_keys::Entity::find()
            .select_only()
            .column(api_keys::Column::Prefix)
            .filter(api_keys::Column::RevokedAt.gte(ts(since)))
            .into_tuple::<String>()
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        Ok(AccountChanges {
            users: users
                .into_iter()
                .map(|id| UserId::from_u128(id.as_u128()))
                .collect(),
            api_keys,
        })
    }
}

impl usecase::auth::account::SessionRepository for SeaOrmStore {
    async fn list_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<usecase::auth::account::Session>, RepoError> {
        // A session is a family with a live (unused, unrevoked, unexpired) token.
        let live = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::UserId.eq(uuid(user.as_u128())))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .filter(refresh_tokens::Column::ExpiresAt.gt(ts(now)))
            .order_by_desc(refresh_tokens::Column::CreatedAt)
            .limit(1_000)
            .all(&self.read)
            .await
            .map_err(to_repo_error)?;
        let families: Vec<_> = live.iter().map(|t| t.family_id).collect();
        let started: std::collections::HashMap<_, i64> = if families.is_empty() {
            std::collections::HashMap::new()
        } else {
            refresh_tokens::Entity::find()
                .select_only()
                .column(refresh_tokens::Column::FamilyId)
                .column_as(refresh_tokens::Column::CreatedAt.min(), "started")
                .filter(refresh_tokens::Column::UserId.eq(uuid(user.as_u128())))
                .filter(refresh_tokens::Column::FamilyId.is_in(families))
                .group_by(refresh_tokens::Column::FamilyId)
                .into_tuple::<(sea_orm::prelude::Uuid, i64)>()
                .all(&self.read)
                .await
                .map_err(to_repo_error)?
                .into_iter()
                .collect()
        };
        Ok(live
            .into_iter()
            .map(|t| usecase::auth::account::Session {
                id: domain::TokenId::from_u128(t.family_id.as_u128()),
                started_at: Timestamp::from_unix_micros(
                    started.get(&t.family_id).copied().unwrap_or(t.created_at),
                ),
                last_refreshed_at: Timestamp::from_unix_micros(t.created_at),
                expires_at: Timestamp::from_unix_micros(t.expires_at),
            })
            .collect())
    }

    async fn revoke_session(
        &self,
        user: UserId,
        session: domain::TokenId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let result = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(ts(now)))
            .filter(refresh_tokens::Column::UserId.eq(uuid(user.as_u128())))
            .filter(refresh_tokens::Column::FamilyId.eq(uuid(session.as_u128())))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::ExpiresAt.gt(ts(now)))
            .exec(&self.write)
            .await
            .map_err(to_repo_error)?;
        if result.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::User));
        }
        Ok(())
    }
}
