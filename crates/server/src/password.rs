//! argon2id password hashing whose memory is bounded by its concurrency.
//!
//! argon2id needs `m` KiB of working memory per hash (19 MiB by default). Allocating it per
//! call lets a burst of logins leave the process with hundreds of megabytes that the
//! allocator keeps (one arena per blocking thread). Here at most `concurrency` hashes run at
//! once (a semaphore whose permit is held by the blocking work itself, so a request dropped
//! mid-hash does not let another hash start before this one ends), and each takes one of at
//! most `concurrency` working buffers that are reused: the process never holds more than
//! `concurrency × m` KiB for passwords, however many requests arrive.
//!
//! The PHC string format, the parameters and the hash itself are the argon2 crate's; only
//! the memory is ours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use domain::Password;
use tokio::sync::Semaphore;
use usecase::auth::{CryptoError, PasswordHasher};

use crate::adapters::crypto;

/// Salt length in bytes (the PHC recommendation).
const SALT_LEN: usize = 16;

/// What every hash of this hasher shares: parameters, reusable buffers and counters.
#[derive(Debug)]
struct Shared {
    params: Params,
    /// Working memory not in use, each buffer `params.block_count()` blocks long.
    buffers: Mutex<Vec<Vec<Block>>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Shared {
    /// `argon2id(password, salt)` with `params` into `out`, in a pooled buffer.
    fn hash_into(
        &self,
        (algorithm, version, params): (Algorithm, Version, Params),
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let most = self.most_running.fetch_max(now, Ordering::SeqCst).max(now);
        metrics::gauge!("arbor_password_hashes_running").increment(1.0);
        metrics::gauge!("arbor_password_hashes_most_running").set(most as f64);
        let mut memory = self
            .buffers
            .lock()
            .map_err(crypto)?
            .pop()
            .unwrap_or_default();
        // A stored hash made with other costs (the configuration changed) gets memory of its
        // own size; such a buffer is not kept.
        memory.resize(params.block_count(), Block::new());
        let result = Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, &mut memory[..])
            .map_err(crypto);
        if memory.len() == self.params.block_count()
            && let Ok(mut buffers) = self.buffers.lock()
        {
            buffers.push(memory);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("arbor_password_hashes_running").decrement(1.0);
        result
    }

    /// A new PHC string for `password` with the configured costs.
    fn hash(&self, password: &[u8]) -> Result<String, CryptoError> {
        let salt: [u8; SALT_LEN] = rand::random();
        let len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut out = vec![0u8; len];
        let costs = (Algorithm::Argon2id, Version::V0x13, self.params.clone());
        self.hash_into(costs, password, &salt, &mut out)?;
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(crypto)?,
            salt: Some(Salt::new(&salt).map_err(crypto)?),
            hash: Some(Output::new(&out).map_err(crypto)?),
        }
        .to_string())
    }

    /// Whether `password` matches the PHC string `stored` (compared in constant time), or
    /// the bcrypt hash an account imported from the original service still has.
    fn verify(&self, password: &[u8], stored: &str) -> Result<bool, CryptoError> {
        if is_bcrypt(stored) {
            return bcrypt::verify(password, stored).map_err(crypto);
        }
        let parsed = PasswordHash::new(stored).map_err(crypto)?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(crypto)?;
        let version = parsed
            .version
            .map_or(Ok(Version::V0x13), Version::try_from)
            .map_err(crypto)?;
        let params = Params::try_from(&parsed).map_err(crypto)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(crypto("stored hash without salt or output"));
        };
        let mut out = vec![0u8; expected.len()];
        self.hash_into((algorithm, version, params), password, &salt, &mut out)?;
        Ok(constant_time_eq::constant_time_eq(
            &out,
            expected.as_bytes(),
        ))
    }
}

/// A passlib/bcrypt hash (`$2a$`, `$2b$`, `$2y$`), as the original service stored them.
fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// argon2id with configured costs, on the blocking pool, at most `concurrency` at once.
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Argon2Hasher {
    /// A hasher with memory cost `m_kib`, `t` iterations, `p` lanes and at most `concurrency`
    /// hashes (and working buffers) at once.
    ///
    /// # Errors
    /// [`CryptoError`] for parameters argon2 rejects.
    pub fn new(m_kib: u32, t: u32, p: u32, concurrency: usize) -> Result<Self, CryptoError> {
        let params = Params::new(m_kib, t, p, None).map_err(crypto)?;
        let shared = Arc::new(Shared {
            params,
            buffers: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
        });
        // Verifying against this when a user does not exist costs the same as a real check.
        let dummy_hash = shared.hash(b"arbor-dummy-password-for-unknown-users")?;
        Ok(Self {
            shared,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit moves into the
    /// blocking task: if the request is dropped while the hash runs, the permit is released
    /// only when the hash has ended.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Result<T, CryptoError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(crypto)?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let out = work(&shared);
            drop(permit);
            out
        })
        .await
        .map_err(crypto)
    }
}

impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<String, CryptoError> {
        let secret = password.expose().to_owned();
        self.run(move |shared| shared.hash(secret.as_bytes()))
            .await?
    }

    async fn verify(&self, password: &Password, hash: Option<&str>) -> Result<bool, CryptoError> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let secret = password.expose().to_owned();
        let matched = self
            .run(move |shared| shared.verify(secret.as_bytes(), &hash))
            .await?;
        // A malformed stored hash never matches (and is not an error for the caller).
        Ok(known && matched.unwrap_or(false))
    }

    /// Anything but argon2id (an imported bcrypt hash) is replaced at the next login.
    fn needs_rehash(&self, hash: &str) -> bool {
        !hash.starts_with("$argon2id$")
    }
}

#[cfg(test)]
mod tests {

    use argon2::PasswordVerifier as _;

    use super::*;

    #[tokio::test]
    async fn an_imported_bcrypt_hash_verifies_and_asks_to_be_replaced() {
        let h = Argon2Hasher::new(1024, 1, 1, 2).unwrap();
        let stored = bcrypt::hash("the old password", 4).unwrap();
        assert!(stored.starts_with("$2b$04$"));
        let right = Password::parse("the old password").unwrap();
        let wrong = Password::parse("not the old password").unwrap();
        assert!(h.verify(&right, Some(&stored)).await.unwrap());
        assert!(!h.verify(&wrong, Some(&stored)).await.unwrap());
        assert!(h.needs_rehash(&stored));
        assert!(!h.needs_rehash(&h.hash(&right).await.unwrap()));
    }

    #[tokio::test]
    async fn verifies_the_right_password_only_and_unknown_users_never_match() {
        let h = Argon2Hasher::new(1024, 1, 1, 2).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify(&pw, Some(&hash)).await.unwrap());
        let wrong = Password::parse("wrong password").unwrap();
        assert!(!h.verify(&wrong, Some(&hash)).await.unwrap());
        assert!(!h.verify(&pw, None).await.unwrap());
        assert!(!h.verify(&pw, Some("$argon2id$garbage")).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_both_ways() {
        let h = Argon2Hasher::new(1024, 1, 1, 1).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        // Ours, checked by the argon2 crate's own verifier.
        let ours = h.hash(&pw).await.unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", ours.as_str())
                .is_ok()
        );
        // The argon2 crate's (other costs: the configuration changed since), checked by ours.
        let theirs = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&Params::new(2048, 2, 1, None).unwrap()).unwrap(),
            salt: Some(Salt::new(b"0123456789abcdef").unwrap()),
            hash: None,
        };
        let mut out = [0u8; 32];
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(2048, 2, 1, None).unwrap(),
        )
        .hash_password_into(b"correct horse battery", b"0123456789abcdef", &mut out)
        .unwrap();
        let theirs = PasswordHash {
            hash: Some(Output::new(&out).unwrap()),
            ..theirs
        }
        .to_string();
        assert!(h.verify(&pw, Some(&theirs)).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrency_and_memory_are_bounded_even_when_callers_give_up() {
        let h = Argon2Hasher::new(1024, 2, 1, 2).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (h, pw) = (h.clone(), pw.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    // A client that hangs up mid-request: the hash is dropped, not finished.
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_micros(300), h.hash(&pw))
                            .await;
                } else {
                    h.hash(&pw).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Let the abandoned blocking hashes end.
        while h.shared.running.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let most = h.shared.most_running.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} at once");
        assert!(h.shared.buffers.lock().unwrap().len() <= 2);
    }
}
