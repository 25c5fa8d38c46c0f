//! [`AdminRepository`] and [`UsageRepository`] on sea-orm: account search with usage, account
//! deletion, the audit log, invites, run-time settings, and usage sums for quotas.

use domain::{Page, PageRequest, PeriodUsage, QuotaOverrides, Timestamp, Usd, User, UserId};
use sea_orm::prelude::Expr;
use sea_orm::sea_query::{ExprTrait, LikeExpr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement, Value,
};
use usecase::auth::admin::{AdminRepository, AuditEntry, Invite, UserOverview};
use usecase::ports::{Entity, NewUser, RepoError, UsageRepository, UserRepository};

use crate::SeaOrmStore;
use crate::convert::{count, to_user, ts, uuid};
use crate::entity::{audit_log, invites, server_settings, users};
use crate::error::{classify, to_repo_error};

/// `SUM(column)` as a 64-bit integer on every backend (0 for no rows).
fn sum(backend: DbBackend, column: &str) -> String {
    let cast = match backend {
        DbBackend::Postgres => "BIGINT",
        DbBackend::MySql => "SIGNED",
        _ => "INTEGER",
    };
    format!("CAST(COALESCE(SUM({column}), 0) AS {cast})")
}

/// How long a deleted account's tombstone is kept: far longer than any process goes without
/// polling account changes (its cache answers nothing after a missed poll anyway).
const TOMBSTONE_KEPT_MICROS: i64 = 3_600_000_000;

fn placeholder(backend: DbBackend, n: usize) -> String {
    if backend == DbBackend::Postgres {
        format!("${n}")
    } else {
        "?".to_owned()
    }
}

fn usage(cost: i64, tokens: i64) -> PeriodUsage {
    PeriodUsage {
        cost: Usd::from_pico(cost),
        tokens: count(tokens),
    }
}

fn to_invite(row: invites::Model) -> Invite {
    Invite {
        id: row.id.as_u128(),
        code_hash: row.code_hash,
        created_by: row.created_by.map(|u| UserId::from_u128(u.as_u128())),
        created_at: Timestamp::from_unix_micros(row.created_at),
        expires_at: Timestamp::from_unix_micros(row.expires_at),
        used: row.used_at.map(|at| {
            (
                Timestamp::from_unix_micros(at),
                row.used_by.map(|u| UserId::from_u128(u.as_u128())),
            )
        }),
    }
}

/// One page of `find` (already ordered) and the true total, read concurrently.
pub(crate) async fn page_of<E>(
    db: &sea_orm::DatabaseConnection,
    find: sea_orm::Select<E>,
    page: PageRequest,
) -> Result<(Vec<E::Model>, u64), RepoError>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    let total = find.clone().count(db);
    let rows = find
        .offset(page.offset())
        .limit(u64::from(page.limit()))
        .all(db);
    let (rows, total) = tokio::try_join!(rows, total).map_err(to_repo_error)?;
    Ok((rows, total))
}

impl SeaOrmStore {
    /// Per-user sums of cost and tokens of records at or after each of `since`, in one
    /// statement: `(user, [(cost, tokens); N])`.
    async fn sums_since(
        &self,
        users: &[UserId],
        since: &[Timestamp],
    ) -> Result<Vec<(UserId, Vec<PeriodUsage>)>, RepoError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let b = self.backend;
        let mut values: Vec<Value> = Vec::new();
        let mut columns = Vec::new();
        for (i, t) in since.iter().enumerate() {
            let mut column = |name: &str, alias: String| {
                values.push(t.as_unix_micros().into());
                let p = placeholder(b, values.len());
                let summed = sum(
                    b,
                    &format!("CASE WHEN created_at >= {p} THEN {name} ELSE 0 END"),
                );
                format!("{summed} AS {alias}")
            };
            let cost = column("cost_pico_usd", format!("cost{i}"));
            let tokens = column("total_tokens", format!("tokens{i}"));
            columns.push(format!("{cost}, {tokens}"));
        }
        let earliest = since
            .iter()
            .min()
            .copied()
            .unwrap_or(Timestamp::from_unix_micros(0));
        values.push(earliest.as_unix_micros().into());
        let from = placeholder(b, values.len());
        let mut ids = Vec::new();
        for user in users {
            values.push(uuid(user.as_u128()).into());
            ids.push(placeholder(b, values.len()));
        }
        let sql = format!(
            "SELECT user_id, {} FROM generations WHERE created_at >= {from} AND user_id IN ({}) \
             GROUP BY user_id",
            columns.join(", "),
            ids.join(", ")
        );
        let rows = self.read_rows(sql, values).await?;
        rows.into_iter()
            .map(|r| {
                let id: sea_orm::prelude::Uuid = r.try_get("", "user_id").map_err(to_repo_error)?;
                let periods = (0..since.len())
                    .map(|i| {
                        let get = |c: String| r.try_get::<i64>("", &c).map_err(to_repo_error);
                        Ok(usage(get(format!("cost{i}"))?, get(format!("tokens{i}"))?))
                    })
                    .collect::<Result<Vec<_>, RepoError>>()?;
                Ok((UserId::from_u128(id.as_u128()), periods))
            })
            .collect()
    }
}

impl UsageRepository for SeaOrmStore {
    async fn usage_between(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<PeriodUsage, RepoError> {
        let b = self.backend;
        let sql = format!(
            "SELECT {} AS cost, {} AS tokens FROM generations \
             WHERE user_id = {} AND created_at >= {} AND created_at < {}",
            sum(b, "cost_pico_usd"),
            sum(b, "total_tokens"),
            placeholder(b, 1),
            placeholder(b, 2),
            placeholder(b, 3),
        );
        let values: Vec<Value> = vec![
            uuid(user.as_u128()).into(),
            from.as_unix_micros().into(),
            to.as_unix_micros().into(),
        ];
        let row = self
            .read
            .query_one_raw(Statement::from_sql_and_values(b, sql, values))
            .await
            .map_err(to_repo_error)?;
        Ok(row.map_or_else(PeriodUsage::default, |r| {
            usage(
                r.try_get("", "cost").unwrap_or(0),
                r.try_get("", "tokens").unwrap_or(0),
            )
        }))
    }

    async fn quota_overrides(&self, user: UserId) -> Result<QuotaOverrides, RepoError> {
        Ok(self.get_user(user).await?.quota)
    }

    async fn usage_since(
        &self,
        user: UserId,
        since: [Timestamp; 2],
    ) -> Result<[PeriodUsage; 2], RepoError> {
        let sums = self.sums_since(&[user], &since).await?;
        let periods = sums.into_iter().next().map(|(_, p)| p).unwrap_or_default();
        Ok([
            periods.first().copied().unwrap_or_default(),
            periods.get(1).copied().unwrap_or_default(),
        ])
    }
}

impl AdminRepository for SeaOrmStore {
    async fn search_users(
        &self,
        query: Option<String>,
        page: PageRequest,
        since: Timestamp,
    ) -> Result<Page<UserOverview>, RepoError> {
        let mut find = users::Entity::find();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            find = find.filter(
                Expr::col(users::Column::UsernameCanonical)
                    .like(LikeExpr::new(format!("%{escaped}%")).escape('\\')),
            );
        }
        let (rows, total) = page_of(
            &self.read,
            find.order_by_asc(users::Column::CreatedAt)
                .order_by_asc(users::Column::Id),
            page,
        )
        .await?;
        let accounts: Vec<User> = rows.into_iter().map(to_user).collect::<Result<_, _>>()?;
        let ids: Vec<UserId> = accounts.iter().map(|u| u.id).collect();
        let sums: std::collections::HashMap<UserId, PeriodUsage> = self
            .sums_since(&ids, &[since])
            .await?
            .into_iter()
            .map(|(id, p)| (id, p.first().copied().unwrap_or_default()))
            .collect();
        Ok(Page {
            items: accounts
                .into_iter()
                .map(|user| UserOverview {
                    this_month: sums.get(&user.id).copied().unwrap_or_default(),
                    user,
                })
                .collect(),
            total,
            request: page,
        })
    }

    async fn delete_user(&self, id: UserId, now: Timestamp) -> Result<(), RepoError> {
        let txn = self.begin_write().await?;
        let b = self.backend;
        let p1 = placeholder(b, 1);
        let key = uuid(id.as_u128());
        // Rows that name the account without a key to it.
        for sql in [
            format!("DELETE FROM generation_leases WHERE user_id = {p1}"),
            format!("DELETE FROM generation_slots WHERE user_id = {p1}"),
            format!("UPDATE audit_log SET actor_id = NULL WHERE actor_id = {p1}"),
            format!("UPDATE audit_log SET target_id = NULL WHERE target_id = {p1}"),
            format!("UPDATE invites SET created_by = NULL WHERE created_by = {p1}"),
            format!("UPDATE invites SET used_by = NULL WHERE used_by = {p1}"),
        ] {
            txn.execute_raw(Statement::from_sql_and_values(b, sql, [key.into()]))
                .await
                .map_err(to_repo_error)?;
        }
        if b == DbBackend::Postgres {
            // Shared rate-limit state (only replicas on PostgreSQL keep it) names the account
            // in its keys.
            txn.execute_raw(Statement::from_sql_and_values(
                b,
                "DELETE FROM rate_limit_buckets WHERE key LIKE $1",
                [format!("%{key}%").into()],
            ))
            .await
            .map_err(to_repo_error)?;
        }
        // Everything else it owns goes by ON DELETE CASCADE (chats, then their messages;
        // records, keys, sessions, presets, templates, settings).
        let deleted = users::Entity::delete_by_id(key)
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        if deleted.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::User));
        }
        // Its tombstone, for the other processes' account caches.
        let p2 = placeholder(b, 2);
        let at = ts(now);
        txn.execute_raw(Statement::from_sql_and_values(
            b,
            format!("INSERT INTO account_tombstones (user_id, deleted_at) VALUES ({p1}, {p2})"),
            [key.into(), at.into()],
        ))
        .await
        .map_err(to_repo_error)?;
        txn.commit().await.map_err(to_repo_error)?;
        // The old ones go, outside the deletion's transaction: on InnoDB a range delete
        // there would lock against another deletion's new tombstone.
        let prune = Statement::from_sql_and_values(
            b,
            format!("DELETE FROM account_tombstones WHERE deleted_at < {p1}"),
            [(at - TOMBSTONE_KEPT_MICROS).into()],
        );
        if let Err(e) = self.write.execute_raw(prune).await {
            tracing::warn!(error = %e, "old account tombstones were not removed");
        }
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), RepoError> {
        audit_log::ActiveModel {
            id: Set(uuid(entry.id)),
            actor_id: Set(entry.actor.map(|a| uuid(a.as_u128()))),
            actor_name: Set(entry.actor_name),
            action: Set(entry.action),
            target_id: Set(entry.target.map(|t| uuid(t.as_u128()))),
            target_name: Set(entry.target_name),
            detail: Set(entry.detail.chars().take(1_000).collect()),
            created_at: Set(ts(entry.at)),
        }
        .insert(&self.write)
        .await
        .map(drop)
        .map_err(to_repo_error)
    }

    async fn list_audit(&self, page: PageRequest) -> Result<Page<AuditEntry>, RepoError> {
        let (rows, total) = page_of(
            &self.read,
            audit_log::Entity::find()
                .order_by_desc(audit_log::Column::CreatedAt)
                .order_by_desc(audit_log::Column::Id),
            page,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id.as_u128(),
                    actor: r.actor_id.map(|a| UserId::from_u128(a.as_u128())),
                    actor_name: r.actor_name,
                    action: r.action,
                    target: r.target_id.map(|t| UserId::from_u128(t.as_u128())),
                    target_name: r.target_name,
                    detail: r.detail,
                    at: Timestamp::from_unix_micros(r.created_at),
                })
                .collect(),
            total,
            request: page,
        })
    }

    async fn create_invite(&self, invite: Invite) -> Result<(), RepoError> {
        invites::ActiveModel {
            id: Set(uuid(invite.id)),
            code_hash: Set(invite.code_hash),
            created_by: Set(invite.created_by.map(|u| uuid(u.as_u128()))),
            created_at: Set(ts(invite.created_at)),
            expires_at: Set(ts(invite.expires_at)),
            used_at: Set(None),
            used_by: Set(None),
        }
        .insert(&self.write)
        .await
        .map(drop)
        .map_err(to_repo_error)
    }

    async fn list_invites(&self, page: PageRequest) -> Result<Page<Invite>, RepoError> {
        let (rows, total) = page_of(
            &self.read,
            invites::Entity::find()
                .order_by_desc(invites::Column::CreatedAt)
                .order_by_desc(invites::Column::Id),
            page,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(to_invite).collect(),
            total,
            request: page,
        })
    }

    async fn create_user_with_invite(
        &self,
        code_hash: String,
        user: NewUser,
        now: Timestamp,
    ) -> Result<User, RepoError> {
        let id = uuid(user.id.as_u128());
        let txn = self.begin_write().await?;
        // One statement decides: only an unused, unexpired invite is taken.
        let taken = invites::Entity::update_many()
            .col_expr(invites::Column::UsedAt, Expr::value(ts(now)))
            .col_expr(invites::Column::UsedBy, Expr::value(id))
            .filter(invites::Column::CodeHash.eq(code_hash))
            .filter(invites::Column::UsedAt.is_null())
            .filter(invites::Column::ExpiresAt.gt(ts(now)))
            .exec(&txn)
            .await
            .map_err(to_repo_error)?;
        if taken.rows_affected == 0 {
            return Err(RepoError::NotFound(Entity::Invite));
        }
        let row = crate::users::new_user_row(user)
            .insert(&txn)
            .await
            .map_err(|e| classify(e, "username is taken", Entity::User))?;
        txn.commit().await.map_err(to_repo_error)?;
        to_user(row)
    }

    async fn setting(&self, name: &'static str) -> Result<Option<String>, RepoError> {
        Ok(server_settings::Entity::find_by_id(name.to_owned())
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .map(|r| r.value))
    }

    async fn put_setting(
        &self,
        name: &'static str,
        value: String,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        server_settings::Entity::insert(server_settings::ActiveModel {
            name: Set(name.to_owned()),
            value: Set(value),
            updated_at: Set(ts(now)),
        })
        .on_conflict(
            OnConflict::column(server_settings::Column::Name)
                .update_columns([
                    server_settings::Column::Value,
                    server_settings::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.write)
        .await
        .map(drop)
        .map_err(to_repo_error)
    }
}
