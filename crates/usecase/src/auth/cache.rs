//! A bounded cache of account state, so authenticating a request costs no database round
//! trip while account changes still take effect within a bounded time on every process.
//!
//! Entries (users by id, API keys by prefix) are trusted only while the revocation poll
//! keeps succeeding: each process asks the database, every `poll` interval, which accounts
//! changed and which keys were revoked since its previous poll (minus a slack for clock skew
//! and commit lag) and forgets those entries. If no poll has succeeded within twice the
//! interval (the database is down, or no poller runs, as in the CLI), nothing is served from
//! the cache. A change made anywhere is therefore seen within one poll interval plus the
//! poll's own duration; a change made by this process is seen at once.

use std::sync::Mutex;

use domain::{Timestamp, User, UserId};

use super::ApiKeyRecord;
use crate::ports::RepoError;

/// How the cache is sized and how fresh it must be.
#[derive(Debug, Clone, Copy)]
pub struct AccountCacheConfig {
    /// Most users and API keys held (each).
    pub capacity: usize,
    /// How often the owner of the cache calls [`super::AuthService::sync_account_changes`].
    pub poll_interval_micros: i64,
    /// The oldest an entry may be, whatever the polls say.
    pub max_age_micros: i64,
}

/// How far back each poll looks before the previous one started: replicas' clocks may
/// differ, and a change is stamped a little before it commits.
pub(super) const POLL_SLACK_MICROS: i64 = 5_000_000;

/// Why a load put nothing in the cache.
enum Miss<T> {
    /// Nothing there (an unknown key).
    Absent,
    /// Found, but too slowly to be trusted later.
    Slow(T),
    /// The store failed.
    Failed(RepoError),
}

#[derive(Debug, Default)]
struct SyncState {
    /// When the last successful poll started (its query saw every change committed then).
    last_ok: Option<Timestamp>,
}

pub(super) struct AccountCache {
    users: quick_cache::sync::Cache<UserId, (User, Timestamp)>,
    keys: quick_cache::sync::Cache<String, (ApiKeyRecord, Timestamp)>,
    state: Mutex<SyncState>,
    config: AccountCacheConfig,
}

impl std::fmt::Debug for AccountCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCache")
            .field("users", &self.users.len())
            .field("keys", &self.keys.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn hit(cache: &'static str, hit: bool) {
    if hit {
        metrics::counter!("arbor_cache_hits_total", "cache" => cache).increment(1);
    } else {
        metrics::counter!("arbor_cache_misses_total", "cache" => cache).increment(1);
    }
}

impl AccountCache {
    pub(super) fn new(config: AccountCacheConfig) -> Self {
        let capacity = config.capacity.max(1);
        Self {
            users: quick_cache::sync::Cache::new(capacity),
            keys: quick_cache::sync::Cache::new(capacity),
            state: Mutex::new(SyncState::default()),
            config,
        }
    }

    fn last_ok(&self) -> Option<Timestamp> {
        self.state.lock().map_or(None, |s| s.last_ok)
    }

    /// Whether cached entries may be served at `now`.
    fn trusted(&self, now: Timestamp) -> bool {
        self.last_ok().is_some_and(|t| {
            now.as_unix_micros() - t.as_unix_micros()
                <= self.config.poll_interval_micros.saturating_mul(2)
        })
    }

    fn young(&self, fetched: Timestamp, now: Timestamp) -> bool {
        now.as_unix_micros() - fetched.as_unix_micros() <= self.config.max_age_micros
    }

    /// The user, from the cache when it may answer at `now`, else from `load` (concurrent
    /// misses for one user share one load). `clock` reads the time after the load: a load
    /// slower than the polls' overlap is not cached (a change committed meanwhile could be
    /// missed by every poll).
    pub(super) async fn user_or_load(
        &self,
        id: UserId,
        (now, clock): (Timestamp, impl Fn() -> Timestamp),
        load: impl Future<Output = Result<User, RepoError>>,
    ) -> Result<User, RepoError> {
        if !self.trusted(now) {
            hit("accounts", false);
            return load.await;
        }
        if self
            .users
            .get(&id)
            .is_some_and(|(_, at)| !self.young(at, now))
        {
            self.users.remove(&id);
        }
        let mut loaded = false;
        let found = self
            .users
            .get_or_insert_async(&id, async {
                loaded = true;
                match load.await {
                    Ok(user) if self.quick(now, clock()) => Ok((user, now)),
                    Ok(user) => Err(Miss::Slow(user)),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        hit("accounts", !loaded);
        match found {
            Ok((user, _)) | Err(Miss::Slow(user)) => Ok(user),
            Err(Miss::Failed(e)) => Err(e),
            Err(Miss::Absent) => Err(RepoError::NotFound(crate::ports::Entity::User)),
        }
    }

    pub(super) fn forget_user(&self, id: UserId) {
        self.users.remove(&id);
    }

    /// Whether a load that started at `started` and ended at `ended` may be cached.
    fn quick(&self, started: Timestamp, ended: Timestamp) -> bool {
        ended.as_unix_micros() - started.as_unix_micros()
            <= POLL_SLACK_MICROS - self.config.poll_interval_micros.saturating_mul(2)
    }

    /// The unrevoked key with this prefix, from the cache when it may answer at `now`, else
    /// from `load` (see [`Self::user_or_load`]). Unknown prefixes are not cached.
    pub(super) async fn key_or_load(
        &self,
        prefix: &str,
        (now, clock): (Timestamp, impl Fn() -> Timestamp),
        load: impl Future<Output = Result<Option<ApiKeyRecord>, RepoError>>,
    ) -> Result<Option<ApiKeyRecord>, RepoError> {
        if !self.trusted(now) {
            hit("api_keys", false);
            return load.await;
        }
        if self
            .keys
            .get(prefix)
            .is_some_and(|(_, at)| !self.young(at, now))
        {
            self.keys.remove(prefix);
        }
        let mut loaded = false;
        let found = self
            .keys
            .get_or_insert_async(prefix, async {
                loaded = true;
                match load.await {
                    Ok(Some(key)) if self.quick(now, clock()) => Ok((key, now)),
                    Ok(Some(key)) => Err(Miss::Slow(key)),
                    Ok(None) => Err(Miss::Absent),
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        hit("api_keys", !loaded);
        match found {
            Ok((key, _)) | Err(Miss::Slow(key)) => Ok(Some(key)),
            Err(Miss::Absent) => Ok(None),
            Err(Miss::Failed(e)) => Err(e),
        }
    }

    /// Marks the cached key with this prefix as used at `now`.
    pub(super) fn note_key_use(&self, prefix: &str, now: Timestamp) {
        if let Some((mut key, at)) = self.keys.get(prefix) {
            key.last_used_at = Some(now);
            self.keys.insert(prefix.to_owned(), (key, at));
        }
    }

    pub(super) fn forget_key(&self, id: domain::ApiKeyId) {
        self.keys.retain(|_, (key, _)| key.id != id);
    }

    /// Where the next poll starts looking (`None`: never polled, forget everything).
    pub(super) fn poll_from(&self) -> Option<Timestamp> {
        self.last_ok()
            .map(|t| Timestamp::from_unix_micros(t.as_unix_micros() - POLL_SLACK_MICROS))
    }

    /// Applies a poll that started at `started` and found `changes` (`None`: the first
    /// poll, which looked at nothing and clears the cache).
    pub(super) fn apply(&self, started: Timestamp, changes: Option<super::AccountChanges>) {
        match changes {
            Some(changes) => {
                for user in changes.users {
                    self.users.remove(&user);
                }
                for prefix in changes.api_keys {
                    self.keys.remove(&prefix);
                }
            }
            None => {
                self.users.clear();
                self.keys.clear();
            }
        }
        if let Ok(mut state) = self.state.lock() {
            state.last_ok = Some(started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_slower_than_the_polls_overlap_is_not_cached() {
        let cache = AccountCache::new(AccountCacheConfig {
            capacity: 10,
            poll_interval_micros: 500_000,
            max_age_micros: 60_000_000,
        });
        let t = Timestamp::from_unix_seconds(1_800_000_000);
        assert!(cache.quick(t, t.plus_micros(1_000)));
        assert!(cache.quick(t, t.plus_micros(4_000_000)));
        assert!(!cache.quick(t, t.plus_micros(4_000_001)));
    }

    /// R5 of the reliability suite for the account cache: a million distinct users through
    /// its real path (trusted after a poll, loaded on a miss) keep at most its capacity.
    #[tokio::test]
    #[ignore = "reliability suite (make test-reliability): a million loads"]
    #[expect(clippy::print_stdout, reason = "the figure is the suite's report")]
    async fn r5_a_million_distinct_users_stay_within_the_account_cache_capacity() {
        const CAPACITY: usize = 10_000;
        let cache = AccountCache::new(AccountCacheConfig {
            capacity: CAPACITY,
            poll_interval_micros: 500_000,
            max_age_micros: 60_000_000,
        });
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        cache.apply(now, None);
        let mut loads = 0_u32;
        for i in 0..1_000_000_u128 {
            let id = UserId::from_u128(i + 1);
            let user = cache
                .user_or_load(id, (now, || now), async {
                    loads += 1;
                    Ok(User {
                        id,
                        username: domain::Username::parse(format!("user_{i}")).unwrap(),
                        disabled: false,
                        role: domain::AccountRole::User,
                        pending: false,
                        quota: domain::QuotaOverrides::default(),
                        token_epoch: 0,
                        created_at: now,
                    })
                })
                .await
                .unwrap();
            assert_eq!(user.id, id);
        }
        let kept = cache.users.len();
        println!(
            "R5 account cache: 1,000,000 distinct users, capacity {CAPACITY}: {kept} kept, {loads} loads"
        );
        assert_eq!(loads, 1_000_000, "every distinct user was a miss");
        assert!(kept <= CAPACITY, "{kept} users kept");
        assert!(kept >= CAPACITY / 2, "the cache still serves: {kept}");
    }
}
