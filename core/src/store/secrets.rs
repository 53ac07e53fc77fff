//! API secrets at rest: PBKDF2-HMAC-SHA256 in a PHC-like string, and a cache of recent
//! successful verifications so that each request does not pay for PBKDF2.
//!
//! Hashing and verifying block for tens of milliseconds: call them from `spawn_blocking`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Tenant, TenantId};

const SCHEME: &str = "pbkdf2-sha256";
const ITERATIONS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// `len` random letters and digits from a CSPRNG.
pub(crate) fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `pbkdf2-sha256$<iterations>$<salt>$<hash>` for `secret`, with a fresh salt.
pub(super) fn hash(secret: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill(&mut salt);
    let derived = derive(secret, &salt, ITERATIONS);
    format!(
        "{SCHEME}${ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(derived)
    )
}

/// Whether `secret` matches `stored`. With nothing stored (an unknown user) or an unreadable
/// hash it still spends one full derivation, so timing does not tell which usernames exist.
pub(super) fn verify(secret: &str, stored: Option<&str>) -> bool {
    match stored.and_then(parse) {
        Some((iterations, salt, expected)) => {
            let derived = derive(secret, &salt, iterations);
            bool::from(derived.as_slice().ct_eq(&expected))
        }
        None => {
            if stored.is_some() {
                tracing::warn!(
                    "a stored secret hash is not in {SCHEME} format; it matches nothing"
                );
            }
            derive(secret, &[0; SALT_LEN], ITERATIONS);
            false
        }
    }
}

fn derive(secret: &str, salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt, iterations, &mut out);
    out
}

fn parse(stored: &str) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    if parts.next()? != SCHEME {
        return None;
    }
    let iterations = parts.next()?.parse().ok().filter(|&n| n > 0)?;
    let salt = B64.decode(parts.next()?).ok()?;
    let hash = B64.decode(parts.next()?).ok()?;
    (parts.next().is_none() && hash.len() == HASH_LEN).then_some((iterations, salt, hash))
}

/// Usernames remembered at most; past that the cache starts over.
const CACHE_CAPACITY: usize = 1024;
/// How long a verification is trusted, which bounds how long another process's password
/// change can go unnoticed here.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Recently verified credentials, by username.
///
/// An entry holds SHA-256(username ‖ 0 ‖ password), never the password itself.
#[derive(Default)]
pub(super) struct VerifiedCache {
    entries: Mutex<Entries>,
    /// Verifications running now, by the digest of the pair they verify; see
    /// [`VerifiedCache::turn`].
    running: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to verify one pair, held while its verification runs; see [`VerifiedCache::turn`].
pub(super) struct Turn<'a> {
    cache: &'a VerifiedCache,
    pair: [u8; 32],
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Released under the map's lock, where every waiter took its handle: when the map's is
        // the only handle left, nobody waits and the entry goes.
        let mut running = lock(&self.cache.running);
        drop(self.held.take());
        if running
            .get(&self.pair)
            .is_some_and(|turns| Arc::strong_count(turns) == 1)
        {
            running.remove(&self.pair);
        }
    }
}

#[derive(Default)]
struct Entries {
    by_username: HashMap<String, Verified>,
    /// Counts forgettings, so that a verification that read the database before a credential
    /// was revoked cannot put it back afterwards (see [`VerifiedCache::put`]).
    epoch: u64,
}

struct Verified {
    digest: [u8; 32],
    tenant: Tenant,
    at: Instant,
}

fn digest(username: &str, password: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(username)
        .chain_update([0])
        .chain_update(password)
        .finalize()
        .into()
}

/// `mutex` locked; what it guards stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VerifiedCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        lock(&self.entries)
    }

    /// Waits until no other verification of this exact pair runs, and holds that turn.
    ///
    /// Requests that arrive together with a credential not yet in the cache (a client's
    /// connections after a restart) would each spend a PBKDF2 on it; in turn, the first
    /// verifies and the others find it in the cache. Only identical pairs wait for each other,
    /// so wrong passwords tried for a username never hold up its right one.
    pub(super) async fn turn(&self, username: &str, password: &str) -> Turn<'_> {
        let pair = digest(username, password);
        let turns = Arc::clone(lock(&self.running).entry(pair).or_default());
        let held = turns.lock_owned().await;
        Turn {
            cache: self,
            pair,
            held: Some(held),
        }
    }

    /// The tenant, when this exact pair was verified recently.
    pub(super) fn get(&self, username: &str, password: &str) -> Option<Tenant> {
        let entries = self.lock();
        let entry = entries.by_username.get(username)?;
        let fresh = entry.at.elapsed() < CACHE_TTL;
        let same = bool::from(entry.digest.ct_eq(&digest(username, password)));
        (fresh && same).then(|| entry.tenant.clone())
    }

    /// Where the cache stands now: take it before reading a credential from the database and
    /// hand it to [`VerifiedCache::put`].
    pub(super) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Remembers a pair that just verified, unless something was forgotten since `epoch`: the
    /// pair was read before that, and may be what was revoked.
    pub(super) fn put(&self, epoch: u64, username: &str, password: &str, tenant: Tenant) {
        let mut entries = self.lock();
        if entries.epoch != epoch {
            return;
        }
        let by_username = &mut entries.by_username;
        if by_username.len() >= CACHE_CAPACITY {
            by_username.retain(|_, e| e.at.elapsed() < CACHE_TTL);
            if by_username.len() >= CACHE_CAPACITY {
                by_username.clear();
            }
        }
        let entry = Verified {
            digest: digest(username, password),
            tenant,
            at: Instant::now(),
        };
        by_username.insert(username.to_string(), entry);
    }

    /// Forgets `username`, whose secret changed or went away.
    pub(super) fn forget(&self, username: &str) {
        let mut entries = self.lock();
        entries.by_username.remove(username);
        entries.epoch += 1;
    }

    /// Forgets every credential of `tenant`, which is going away.
    pub(super) fn forget_tenant(&self, tenant: TenantId) {
        let mut entries = self.lock();
        entries.by_username.retain(|_, e| e.tenant.id != tenant);
        entries.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_and_nothing_else() {
        let stored = hash("s3cret");
        assert!(verify("s3cret", Some(&stored)));
        assert!(!verify("s3cret!", Some(&stored)));
    }

    #[test]
    fn hashes_are_salted_and_name_their_parameters() {
        let (a, b) = (hash("same"), hash("same"));
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[..2], ["pbkdf2-sha256", "100000"]);
        assert_eq!(B64.decode(parts[2]).unwrap().len(), SALT_LEN);
        assert_eq!(B64.decode(parts[3]).unwrap().len(), HASH_LEN);
    }

    #[test]
    fn nothing_verifies_against_a_missing_or_malformed_hash() {
        assert!(!verify("", None));
        assert!(!verify("x", Some("md5$abc")));
        assert!(!verify("x", Some("pbkdf2-sha256$0$AAAA$AAAA")));
    }

    #[test]
    fn the_cache_answers_only_for_the_password_it_saw() {
        let cache = VerifiedCache::default();
        let tenant = Tenant {
            id: TenantId(uuid::Uuid::new_v4()),
            name: "acme".into(),
        };
        cache.put(cache.epoch(), "alice", "right", tenant.clone());
        assert_eq!(cache.get("alice", "right"), Some(tenant));
        assert_eq!(cache.get("alice", "wrong"), None);
        cache.forget("alice");
        assert_eq!(cache.get("alice", "right"), None);
    }

    #[tokio::test]
    async fn a_second_verification_of_the_same_pair_waits_for_the_first() {
        use futures_util::FutureExt as _;
        let cache = VerifiedCache::default();
        let first = cache.turn("alice", "right").await;
        let mut second = std::pin::pin!(cache.turn("alice", "right"));
        assert!((&mut second).now_or_never().is_none(), "it waits");
        drop(first);
        assert!(second.now_or_never().is_some(), "its turn came");
    }

    #[tokio::test]
    async fn verifications_of_other_passwords_do_not_wait() {
        use futures_util::FutureExt as _;
        let cache = VerifiedCache::default();
        let _right = cache.turn("alice", "right").await;
        assert!(cache.turn("alice", "wrong").now_or_never().is_some());
        assert!(cache.turn("bob", "right").now_or_never().is_some());
    }

    #[tokio::test]
    async fn finished_turns_leave_nothing_behind() {
        let cache = VerifiedCache::default();
        let first = cache.turn("alice", "right").await;
        let second = async { drop(cache.turn("alice", "right").await) };
        tokio::join!(async { drop(first) }, second);
        drop(cache.turn("bob", "right").await);
        assert!(lock(&cache.running).is_empty());
    }

    fn tenant(name: &str) -> Tenant {
        Tenant {
            id: TenantId(uuid::Uuid::new_v4()),
            name: name.into(),
        }
    }

    #[test]
    fn a_verification_read_before_a_revocation_is_not_remembered() {
        let cache = VerifiedCache::default();
        let before = cache.epoch();
        cache.forget("alice");
        cache.put(before, "alice", "right", tenant("acme"));
        assert_eq!(cache.get("alice", "right"), None);
    }

    #[test]
    fn forgetting_a_tenant_forgets_only_its_credentials() {
        let cache = VerifiedCache::default();
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        cache.put(cache.epoch(), "alice", "a", acme.clone());
        cache.put(cache.epoch(), "bob", "b", acme.clone());
        cache.put(cache.epoch(), "carol", "c", globex.clone());
        cache.forget_tenant(acme.id);
        assert_eq!(cache.get("alice", "a"), None);
        assert_eq!(cache.get("bob", "b"), None);
        assert_eq!(cache.get("carol", "c"), Some(globex));
    }
}
