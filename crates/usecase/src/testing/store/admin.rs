//! [`AdminRepository`] and [`UsageRepository`] on the in-memory store.

use super::*;
use crate::auth::admin::{AdminRepository, AuditEntry, Invite, UserOverview};
use crate::ports::UsageRepository;

impl State {
    /// Every record of `user` (attached or not) at or after `from` and before `to`.
    fn usage(&self, user: UserId, from: Timestamp, to: Timestamp) -> domain::PeriodUsage {
        let mut usage = domain::PeriodUsage::default();
        for r in self.records.values().chain(&self.unattached_records) {
            if r.user_id == user && r.created_at >= from && r.created_at < to {
                usage.cost = domain::Usd::from_pico(usage.cost.as_pico() + r.cost.as_pico());
                usage.tokens += r.usage.total_tokens;
            }
        }
        usage
    }
}

fn page_of<T>(mut all: Vec<T>, page: domain::PageRequest) -> domain::Page<T> {
    let total = all.len() as u64;
    let start = usize::try_from(page.offset())
        .unwrap_or(usize::MAX)
        .min(all.len());
    let items = all.drain(start..).take(page.limit() as usize).collect();
    domain::Page {
        items,
        total,
        request: page,
    }
}

const FOREVER: Timestamp = Timestamp::from_unix_micros(i64::MAX);

impl UsageRepository for InMemoryStore {
    async fn usage_between(
        &self,
        user: UserId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<domain::PeriodUsage, RepoError> {
        self.with(|s| Ok(s.usage(user, from, to)))
    }

    async fn quota_overrides(&self, user: UserId) -> Result<domain::QuotaOverrides, RepoError> {
        self.with(|s| {
            s.users
                .get(&user)
                .map(|u| u.user.quota)
                .ok_or(RepoError::NotFound(Entity::User))
        })
    }

    async fn usage_since(
        &self,
        user: UserId,
        since: [Timestamp; 2],
    ) -> Result<[domain::PeriodUsage; 2], RepoError> {
        self.with(|s| Ok(since.map(|from| s.usage(user, from, FOREVER))))
    }
}

impl AdminRepository for InMemoryStore {
    async fn search_users(
        &self,
        query: Option<String>,
        page: domain::PageRequest,
        since: Timestamp,
    ) -> Result<domain::Page<UserOverview>, RepoError> {
        self.with(|s| {
            let needle = query.unwrap_or_default().to_lowercase();
            let mut all: Vec<UserOverview> = s
                .users
                .values()
                .filter(|u| u.user.username.canonical().contains(&needle))
                .map(|u| UserOverview {
                    this_month: s.usage(u.user.id, since, FOREVER),
                    user: u.user.clone(),
                })
                .collect();
            all.sort_by_key(|o| (o.user.created_at, o.user.id));
            Ok(page_of(all, page))
        })
    }

    async fn delete_user(&self, id: UserId, now: Timestamp) -> Result<(), RepoError> {
        self.with(|s| {
            s.users
                .remove(&id)
                .ok_or(RepoError::NotFound(Entity::User))?;
            s.user_changes.push((id, now));
            let chats: Vec<ChatId> = s
                .chats
                .values()
                .filter(|c| c.owner == id)
                .map(|c| c.id)
                .collect();
            for chat in chats {
                s.chats.remove(&chat);
                s.messages.remove(&chat);
            }
            s.records.retain(|_, r| r.user_id != id);
            s.unattached_records.retain(|r| r.user_id != id);
            s.api_keys.retain(|(k, _)| k.user_id != id);
            s.refresh.retain(|r| r.record.user_id != id);
            s.presets.retain(|_, p| p.owner != id);
            s.templates.retain(|_, t| t.owner != id);
            s.settings.remove(&id);
            for entry in &mut s.audit {
                entry.actor = entry.actor.filter(|a| *a != id);
                entry.target = entry.target.filter(|t| *t != id);
            }
            Ok(())
        })
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), RepoError> {
        self.with(|s| {
            s.audit.push(entry);
            Ok(())
        })
    }

    async fn list_audit(
        &self,
        page: domain::PageRequest,
    ) -> Result<domain::Page<AuditEntry>, RepoError> {
        self.with(|s| Ok(page_of(s.audit.iter().rev().cloned().collect(), page)))
    }

    async fn create_invite(&self, invite: Invite) -> Result<(), RepoError> {
        self.with(|s| {
            s.invites.push(invite);
            Ok(())
        })
    }

    async fn list_invites(
        &self,
        page: domain::PageRequest,
    ) -> Result<domain::Page<Invite>, RepoError> {
        self.with(|s| Ok(page_of(s.invites.iter().rev().cloned().collect(), page)))
    }

    async fn create_user_with_invite(
        &self,
        code_hash: String,
        user: NewUser,
        now: Timestamp,
    ) -> Result<User, RepoError> {
        let usable = self.with(|s| {
            Ok(s.invites
                .iter()
                .position(|i| i.code_hash == code_hash && i.used.is_none() && i.expires_at > now))
        })?;
        let Some(at) = usable else {
            return Err(RepoError::NotFound(Entity::Invite));
        };
        let id = user.id;
        let created = self.create_user(user).await?;
        self.with(|s| {
            s.invites[at].used = Some((now, Some(id)));
            Ok(created)
        })
    }

    async fn setting(&self, name: &'static str) -> Result<Option<String>, RepoError> {
        self.with(|s| Ok(s.server_settings.get(name).cloned()))
    }

    async fn put_setting(
        &self,
        name: &'static str,
        value: String,
        _now: Timestamp,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            s.server_settings.insert(name, value);
            Ok(())
        })
    }
}

impl crate::auth::account::SessionRepository for InMemoryStore {
    async fn list_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<crate::auth::account::Session>, RepoError> {
        self.with(|s| {
            let mut live: Vec<_> = s
                .refresh
                .iter()
                .filter(|t| {
                    t.record.user_id == user && !t.used && !t.revoked && t.record.expires_at > now
                })
                .map(|t| {
                    let started = s
                        .refresh
                        .iter()
                        .filter(|o| o.record.family_id == t.record.family_id)
                        .map(|o| o.record.created_at)
                        .min()
                        .unwrap_or(t.record.created_at);
                    crate::auth::account::Session {
                        id: t.record.family_id,
                        started_at: started,
                        last_refreshed_at: t.record.created_at,
                        expires_at: t.record.expires_at,
                    }
                })
                .collect();
            live.sort_by_key(|s| std::cmp::Reverse(s.last_refreshed_at));
            Ok(live)
        })
    }

    async fn revoke_session(
        &self,
        user: UserId,
        session: domain::TokenId,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        self.with(|s| {
            let mut revoked = 0;
            for t in &mut s.refresh {
                if t.record.user_id == user
                    && t.record.family_id == session
                    && !t.used
                    && !t.revoked
                    && t.record.expires_at > now
                {
                    t.revoked = true;
                    revoked += 1;
                }
            }
            if revoked == 0 {
                return Err(RepoError::NotFound(Entity::User));
            }
            Ok(())
        })
    }
}
