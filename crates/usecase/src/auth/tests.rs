use domain::{Password, Timestamp, Username};

use std::sync::Arc;

use super::*;
use crate::auth::account::AccountUseCase;
use crate::testing::{InMemoryStore, ManualClock, PlainHasher, ReadableTokens, SequentialIds};

type Service = AuthService<InMemoryStore, PlainHasher, ReadableTokens, ManualClock, SequentialIds>;

fn service() -> Service {
    AuthService::new(
        InMemoryStore::new(),
        PlainHasher,
        ReadableTokens::default(),
        ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000)),
        SequentialIds::default(),
        AuthPolicy {
            refresh_ttl_secs: 3_600,
            registration: domain::RegistrationPolicy::Open,
        },
    )
}

fn name(n: &str) -> Username {
    Username::parse(n).unwrap()
}

fn pw(p: &str) -> Password {
    Password::parse(p).unwrap()
}

#[tokio::test]
async fn registering_a_taken_name_in_another_case_is_refused() {
    let s = service();
    s.register(name("Alice"), pw("password1"), None)
        .await
        .unwrap();
    assert!(matches!(
        s.register(name("ALICE"), pw("password2"), None).await,
        Err(AuthError::UsernameTaken)
    ));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_fail_alike() {
    let s = service();
    s.register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    assert!(matches!(
        s.login(name("alice"), pw("password2")).await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        s.login(name("nobody"), pw("password1")).await,
        Err(AuthError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn an_access_token_authenticates_until_it_expires() {
    let s = service();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let pair = s.login(name("alice"), pw("password1")).await.unwrap();
    assert_eq!(
        s.authenticate(&pair.access.token, false).await.unwrap().id,
        user.id
    );
    s.clock.advance_micros(61_000_000);
    assert!(matches!(
        s.authenticate(&pair.access.token, false).await,
        Err(AuthError::Unauthenticated)
    ));
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_revokes_the_family() {
    let s = service();
    s.register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let first = s.login(name("alice"), pw("password1")).await.unwrap();
    let second = s.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert!(matches!(
        s.refresh(&first.refresh_token).await,
        Err(AuthError::RefreshTokenReused)
    ));
    assert!(matches!(
        s.refresh(&second.refresh_token).await,
        Err(AuthError::RefreshTokenReused)
    ));
    // Another login starts a new family, unaffected.
    let other = s.login(name("alice"), pw("password1")).await.unwrap();
    assert!(s.refresh(&other.refresh_token).await.is_ok());
}

#[tokio::test]
async fn api_keys_authenticate_until_revoked_and_a_wrong_secret_never_does() {
    let s = service();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let issued = s
        .create_api_key(user.id, "script".into(), ApiKeyOptions::default())
        .await
        .unwrap();
    assert!(issued.key.starts_with(&issued.record.prefix));
    assert_eq!(
        s.authenticate(&issued.key, false).await.unwrap().id,
        user.id
    );
    let forged = format!("{}{}", issued.record.prefix, "x".repeat(43));
    assert!(matches!(
        s.authenticate(&forged, false).await,
        Err(AuthError::Unauthenticated)
    ));
    assert!(matches!(
        s.authenticate("arb_short", false).await,
        Err(AuthError::Unauthenticated)
    ));
    s.revoke_api_key(user.id, issued.record.id).await.unwrap();
    assert!(matches!(
        s.authenticate(&issued.key, false).await,
        Err(AuthError::Unauthenticated)
    ));
    assert!(matches!(
        s.revoke_api_key(user.id, issued.record.id).await,
        Err(AuthError::ApiKeyNotFound)
    ));
}

#[tokio::test]
async fn an_account_holds_at_most_a_hundred_unrevoked_keys() {
    let s = service();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let mut first = None;
    for i in 0..API_KEYS_MAX {
        let key = s
            .create_api_key(user.id, format!("k{i}"), ApiKeyOptions::default())
            .await
            .unwrap();
        first.get_or_insert(key.record.id);
    }
    let extra = s
        .create_api_key(user.id, "one more".into(), ApiKeyOptions::default())
        .await;
    assert!(matches!(extra, Err(AuthError::TooManyApiKeys)), "{extra:?}");
    s.revoke_api_key(user.id, first.unwrap()).await.unwrap();
    s.create_api_key(user.id, "in its place".into(), ApiKeyOptions::default())
        .await
        .unwrap();
    assert_eq!(s.list_api_keys(user.id).await.unwrap().len(), API_KEYS_MAX);
}

/// A service whose clock the test moves.
type ClockedService =
    AuthService<InMemoryStore, PlainHasher, ReadableTokens, Arc<ManualClock>, SequentialIds>;

fn service_with_clock() -> (ClockedService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
        1_800_000_000,
    )));
    let s = AuthService::new(
        InMemoryStore::new(),
        PlainHasher,
        ReadableTokens::default(),
        Arc::clone(&clock),
        SequentialIds::default(),
        AuthPolicy {
            refresh_ttl_secs: 3_600,
            registration: domain::RegistrationPolicy::Open,
        },
    );
    (s, clock)
}

#[tokio::test]
async fn an_api_key_works_until_its_expiry_and_not_after() {
    let (s, clock) = service_with_clock();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let options = ApiKeyOptions {
        valid_days: Some(1),
        read_only: false,
    };
    let daily = s
        .create_api_key(user.id, "daily".into(), options)
        .await
        .unwrap();
    assert!(s.authenticate(&daily.key, true).await.is_ok());
    clock.advance_micros(Timestamp::MICROS_PER_DAY - 1_000_000);
    assert!(
        s.authenticate(&daily.key, false).await.is_ok(),
        "a second before expiry"
    );
    clock.advance_micros(2_000_000);
    assert!(matches!(
        s.authenticate(&daily.key, false).await,
        Err(AuthError::Unauthenticated)
    ));
}

#[tokio::test]
async fn a_read_only_key_reads_and_never_writes() {
    let (s, clock) = service_with_clock();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let options = ApiKeyOptions {
        valid_days: None,
        read_only: true,
    };
    let reader = s
        .create_api_key(user.id, "reader".into(), options)
        .await
        .unwrap();
    assert!(s.authenticate(&reader.key, false).await.is_ok());
    assert!(matches!(
        s.authenticate(&reader.key, true).await,
        Err(AuthError::ReadOnlyKey)
    ));
    clock.advance_micros(365 * Timestamp::MICROS_PER_DAY);
    assert!(
        s.authenticate(&reader.key, false).await.is_ok(),
        "no expiry"
    );
}

#[tokio::test]
async fn only_a_verified_key_records_its_use() {
    let s = service();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let key = s
        .create_api_key(user.id, "k".into(), ApiKeyOptions::default())
        .await
        .unwrap();
    let forged = format!("{}{}", key.record.prefix, "x".repeat(43));
    assert!(s.authenticate(&forged, false).await.is_err());
    assert_eq!(
        s.list_api_keys(user.id).await.unwrap()[0].last_used_at,
        None,
        "a wrong secret with a valid prefix records no use"
    );
    s.authenticate(&key.key, false).await.unwrap();
    assert!(
        s.list_api_keys(user.id).await.unwrap()[0]
            .last_used_at
            .is_some()
    );
}

#[tokio::test]
async fn logout_revokes_one_refresh_token_or_all() {
    let s = service();
    let user = s
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let a = s.login(name("alice"), pw("password1")).await.unwrap();
    let b = s.login(name("alice"), pw("password1")).await.unwrap();
    let c = s.login(name("alice"), pw("password1")).await.unwrap();
    assert_eq!(
        s.logout(user.id, Some(&a.refresh_token), false)
            .await
            .unwrap(),
        1
    );
    assert!(s.refresh(&a.refresh_token).await.is_err());
    assert_eq!(s.logout(user.id, None, true).await.unwrap(), 2);
    assert!(s.refresh(&b.refresh_token).await.is_err());
    assert!(s.refresh(&c.refresh_token).await.is_err());
}

/// Two processes on one store: `cached` serves accounts from its cache, `operator` (the
/// CLI, another replica) changes them.
fn two_processes() -> (Service, Service) {
    let store = InMemoryStore::new();
    let make = |store: InMemoryStore| {
        AuthService::new(
            store,
            PlainHasher,
            ReadableTokens::default(),
            ManualClock::new(Timestamp::from_unix_seconds(1_800_000_000)),
            SequentialIds::default(),
            AuthPolicy {
                registration: domain::RegistrationPolicy::Open,
                refresh_ttl_secs: 3_600,
            },
        )
    };
    let cached = make(store.clone()).with_account_cache(AccountCacheConfig {
        capacity: 100,
        poll_interval_micros: 500_000,
        max_age_micros: 60_000_000,
    });
    (cached, make(store))
}

/// Two processes on one store: alice, registered on the second, signed in on the first (her
/// account cached there); her access token.
async fn alice_cached_on_one_of_two() -> (Service, Service, User, String) {
    let (cached, operator) = two_processes();
    cached.sync_account_changes().await.unwrap();
    let user = operator
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let pair = cached.login(name("alice"), pw("password1")).await.unwrap();
    let access = pair.access.token.clone();
    let found = cached.authenticate(&access, false).await.unwrap();
    assert_eq!(found.id, user.id);
    (cached, operator, user, access)
}

/// After `cached` polls the account changes, `access` is refused.
async fn refused_from_the_next_poll(cached: &Service, access: &str) {
    cached.sync_account_changes().await.unwrap();
    assert!(matches!(
        cached.authenticate(access, false).await,
        Err(AuthError::Unauthenticated)
    ));
}

#[tokio::test]
async fn a_cached_account_sees_a_change_made_elsewhere_at_the_next_poll() {
    let (cached, operator, _, access) = alice_cached_on_one_of_two().await;
    operator.set_disabled(&name("alice"), true).await.unwrap();
    // Served from the cache until the next poll: the store was not asked.
    assert!(cached.authenticate(&access, false).await.is_ok());
    refused_from_the_next_poll(&cached, &access).await;
}

#[tokio::test]
async fn an_account_deleted_elsewhere_is_refused_from_the_next_poll() {
    let (cached, operator, user, access) = alice_cached_on_one_of_two().await;
    operator
        .delete_own_account(&user, pw("password1"))
        .await
        .unwrap();
    refused_from_the_next_poll(&cached, &access).await;
}

#[tokio::test]
async fn a_password_reset_elsewhere_ends_every_access_token_issued_before_it() {
    let (cached, operator, _, old) = alice_cached_on_one_of_two().await;
    operator
        .set_password(&name("alice"), pw("password2"))
        .await
        .unwrap();
    refused_from_the_next_poll(&cached, &old).await;
    let new = cached.login(name("alice"), pw("password2")).await.unwrap();
    assert!(cached.authenticate(&new.access.token, false).await.is_ok());
    // Locally, a reset takes effect at once, without waiting for a poll.
    cached
        .set_password(&name("alice"), pw("password3"))
        .await
        .unwrap();
    assert!(cached.authenticate(&new.access.token, false).await.is_err());
}

#[tokio::test]
async fn without_a_recent_poll_the_cache_answers_nothing() {
    let (cached, operator) = two_processes();
    operator
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let pair = cached.login(name("alice"), pw("password1")).await.unwrap();
    // Never polled: every request reads the account.
    cached
        .authenticate(&pair.access.token, false)
        .await
        .unwrap();
    operator.set_disabled(&name("alice"), true).await.unwrap();
    assert!(
        cached
            .authenticate(&pair.access.token, false)
            .await
            .is_err()
    );
    operator.set_disabled(&name("alice"), false).await.unwrap();
    let pair = cached.login(name("alice"), pw("password1")).await.unwrap();
    cached.sync_account_changes().await.unwrap();
    cached
        .authenticate(&pair.access.token, false)
        .await
        .unwrap();
    // Polls stop (the database is down): after two intervals the cache is not trusted.
    cached.clock.advance_micros(1_000_001);
    operator.set_disabled(&name("alice"), true).await.unwrap();
    assert!(
        cached
            .authenticate(&pair.access.token, false)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_api_key_revoked_elsewhere_stops_at_the_next_poll() {
    let (cached, operator) = two_processes();
    cached.sync_account_changes().await.unwrap();
    let user = operator
        .register(name("alice"), pw("password1"), None)
        .await
        .unwrap();
    let issued = operator
        .create_api_key(user.id, "bot".into(), ApiKeyOptions::default())
        .await
        .unwrap();
    assert!(cached.authenticate(&issued.key, false).await.is_ok());
    operator
        .revoke_api_key(user.id, issued.record.id)
        .await
        .unwrap();
    assert!(cached.authenticate(&issued.key, false).await.is_ok());
    cached.sync_account_changes().await.unwrap();
    assert!(matches!(
        cached.authenticate(&issued.key, false).await,
        Err(AuthError::Unauthenticated)
    ));
}
