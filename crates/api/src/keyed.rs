//! Rate limiters whose per-key state is bounded: governor's GCRA decisions over a store of
//! at most [`KEYS_MAX`] keys (a `quick_cache`, which evicts the least useful keys when
//! full). governor's own keyed store grows with every distinct key until it is shrunk; here
//! a flood of distinct client IPs or usernames costs a fixed amount of memory. A key that
//! was evicted simply starts again with a full quota, as a key seen for the first time does.
//!
//! With replicas on one PostgreSQL, a limiter may share its budget: the same GCRA over a
//! bucket per key in the database, so N replicas grant one budget, not N. When the database
//! cannot answer, the replica's own limiter decides.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use usecase::cluster::{Coordination, Spend};

use crate::error::ApiError;

/// Keys each limiter remembers at most (≈ 100 bytes each).
pub const KEYS_MAX: usize = 50_000;

/// How long a shared decision may take before this replica's own limiter decides (a busy
/// or unreachable database must not hold every request).
const SHARED_DECISION_TIMEOUT: Duration = Duration::from_millis(500);

/// A keyed rate limiter over a [`BoundedStore`].
#[derive(Debug)]
pub struct BoundedLimiter {
    limiter: RateLimiter<String, BoundedStore, DefaultClock, NoOpMiddleware>,
    /// Requests allowed per `period` (all at once, then one every `period / per_period`).
    per_period: u32,
    period: Duration,
    shared: Option<SharedBudget>,
    /// The store's states, for tests to count them.
    #[cfg(test)]
    states: Arc<States>,
}

/// A budget shared by every replica.
#[derive(Debug)]
struct SharedBudget {
    port: Arc<dyn Coordination>,
    /// The limiter's name, prefixed to its keys.
    name: &'static str,
    /// Whether the last shared decision failed (logged once per outage).
    failing: AtomicBool,
}

type States = quick_cache::sync::Cache<String, Arc<AtomicU64>>;

/// No measurement yet (the GCRA's theoretical arrival time is never this).
const UNSET: u64 = u64::MAX;

/// The GCRA state of each key, at most `capacity` keys.
#[derive(Debug)]
pub struct BoundedStore(Arc<States>);

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let state = self
            .0
            .get_or_insert_with(key.as_str(), || {
                Ok::<_, std::convert::Infallible>(Arc::new(AtomicU64::new(UNSET)))
            })
            .unwrap_or_else(|never| match never {});
        // Compare-and-swap, as governor's own stores do: concurrent requests of one key
        // are decided one after the other.
        let mut previous = state.load(Ordering::Acquire);
        loop {
            let old = (previous != UNSET).then(|| Nanos::from(previous));
            let (decision, next) = f(old)?;
            match state.compare_exchange_weak(
                previous,
                next.into(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(decision),
                Err(changed) => previous = changed,
            }
        }
    }
}

impl BoundedLimiter {
    /// A limiter allowing `per_period` requests per `period` and key (all at once, then one
    /// every `period / per_period`), remembering at most `keys` keys.
    #[must_use]
    pub fn new(per_period: u32, period: Duration, keys: usize) -> Self {
        let n = NonZeroU32::new(per_period.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period((period / n.get()).max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_minute(n))
            .allow_burst(n);
        let states = Arc::new(States::new(keys.max(1)));
        Self {
            limiter: RateLimiter::new(
                quota,
                BoundedStore(Arc::clone(&states)),
                DefaultClock::default(),
            ),
            per_period: n.get(),
            period,
            shared: None,
            #[cfg(test)]
            states,
        }
    }

    /// Shares the budget with every replica through `port` (when given), keys prefixed by
    /// `name`.
    #[must_use]
    pub fn shared(mut self, port: Option<&Arc<dyn Coordination>>, name: &'static str) -> Self {
        self.shared = port.map(|port| SharedBudget {
            port: Arc::clone(port),
            name,
            failing: AtomicBool::new(false),
        });
        self
    }

    /// Spends one request of `key`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when the key is over its quota, with the whole seconds (at
    /// least one) until it may try again.
    pub async fn check(&self, key: String) -> Result<(), ApiError> {
        if let Some(shared) = &self.shared {
            let spend = shared.port.spend(
                format!("{}:{key}", shared.name),
                self.per_period,
                self.period,
            );
            let spent = tokio::time::timeout(SHARED_DECISION_TIMEOUT, spend)
                .await
                .unwrap_or_else(|_| {
                    Err(usecase::ports::RepoError::Unavailable(
                        "the shared rate limit did not answer in time".into(),
                    ))
                });
            match spent {
                Ok(spend) => {
                    if shared.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(limiter = shared.name, "shared rate limits answer again");
                    }
                    return match spend {
                        Spend::Allowed => Ok(()),
                        Spend::Denied(wait) => Err(limited(wait)),
                    };
                }
                Err(e) => {
                    if !shared.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(limiter = shared.name, error = %e, "shared rate limits unavailable; this replica's own limits apply");
                    }
                }
            }
        }
        self.check_here(key)
    }

    /// Spends one request of `key` in this process's limiter only.
    ///
    /// # Errors
    /// As [`BoundedLimiter::check`].
    pub fn check_here(&self, key: String) -> Result<(), ApiError> {
        self.limiter
            .check_key(&key)
            .map_err(|not_until| limited(not_until.wait_time_from(DefaultClock::default().now())))
    }
}

fn limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_key_is_limited_to_its_quota_and_others_are_not() {
        let limiter = BoundedLimiter::new(2, Duration::from_secs(60), 10);
        assert!(limiter.check_here("a".into()).is_ok());
        assert!(limiter.check_here("a".into()).is_ok());
        assert!(
            limiter.check_here("a".into()).is_err(),
            "the third in a minute"
        );
        assert!(limiter.check_here("b".into()).is_ok());
    }

    #[test]
    fn concurrent_requests_of_one_key_never_exceed_the_quota() {
        let limiter = Arc::new(BoundedLimiter::new(100, Duration::from_secs(60), 10));
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if limiter.check_here("same".into()).is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 100);
    }

    /// R5 for the rate limiters (`make test-reliability`): a million distinct keys leave
    /// each limiter at its capacity, and the process's memory growth within what that
    /// capacity costs.
    #[test]
    #[ignore = "reliability suite: run with --ignored"]
    #[expect(clippy::print_stdout, reason = "the figure is the report")]
    fn r5_rate_limiters_stay_bounded_under_a_million_distinct_keys() {
        let rss = || usecase::testing::resident_mib(None);
        let before = rss();
        let limiter = BoundedLimiter::new(5, Duration::from_secs(60), KEYS_MAX);
        for i in 0..1_000_000_u32 {
            let key = format!("203.0.{}.{}:user{i}", (i >> 8) & 255, i & 255);
            assert!(limiter.check_here(key).is_ok(), "a new key has its quota");
        }
        let after = rss();
        println!(
            "R5 rate limiter: 1,000,000 distinct keys: {} remembered (cap {KEYS_MAX}); RSS growth {:.1} MiB",
            limiter.states.len(),
            after - before
        );
        assert!(limiter.states.len() <= KEYS_MAX);
        assert!(after - before < 32.0, "{:.1} MiB", after - before);
    }
}
