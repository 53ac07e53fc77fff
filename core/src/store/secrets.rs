//! API secrets at rest: PBKDF2-HMAC-SHA256 in a PHC-like string, and a cache of recent
//! successful verifications so that each request does not pay for PBKDF2.
//!
//! Hashing and verifying block for tens of milliseconds: call them from `spawn_blocking`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Tenant;

const SCHEME: &str = "pbkdf2-sha256";
const ITERATIONS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// `len` random letters and digits from a CSPRNG.
pub(super) fn random_alphanumeric(len: usize) -> String {
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
    entries: Mutex<HashMap<String, Verified>>,
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

impl VerifiedCache {
    /// The tenant, when this exact pair was verified recently.
    pub(super) fn get(&self, username: &str, password: &str) -> Option<Tenant> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(username)?;
        let fresh = entry.at.elapsed() < CACHE_TTL;
        let same = bool::from(entry.digest.ct_eq(&digest(username, password)));
        (fresh && same).then(|| entry.tenant.clone())
    }

    /// Remembers a pair that just verified.
    pub(super) fn put(&self, username: &str, password: &str, tenant: Tenant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, e| e.at.elapsed() < CACHE_TTL);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        let entry = Verified {
            digest: digest(username, password),
            tenant,
            at: Instant::now(),
        };
        entries.insert(username.to_string(), entry);
    }

    /// Forgets `username`, whose secret changed or went away.
    pub(super) fn forget(&self, username: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(username);
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
            id: crate::domain::TenantId(uuid::Uuid::new_v4()),
            name: "acme".into(),
        };
        cache.put("alice", "right", tenant.clone());
        assert_eq!(cache.get("alice", "right"), Some(tenant));
        assert_eq!(cache.get("alice", "wrong"), None);
        cache.forget("alice");
        assert_eq!(cache.get("alice", "right"), None);
    }
}
