//! Failed sign-ins are throttled per client address and per username, before any hashing: a
//! wrong password costs PBKDF2 time (about 20 ms), so without a limit a hundred guesses a second
//! would take both cores. Credentials that verified recently are answered from memory first and
//! never wait here, so real clients are not slowed by someone else's guessing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use poem::Request;

use crate::ApiError;

/// A sign-in the throttle let through; [`Admitted::failed`] counts it when the credential
/// turns out wrong.
pub(crate) struct Admitted {
    throttle: Arc<AuthThrottle>,
    address: Option<IpAddr>,
    username: String,
}

impl Admitted {
    /// Counts the sign-in as failed against its address and username.
    pub(crate) fn failed(self) {
        self.throttle.failed(self.address, &self.username);
    }
}

/// Lets a sign-in of `username` from `req`'s address through, or answers 429 `RATE_LIMITED`
/// while either has failed too often; before any credential is checked.
pub(crate) fn admit(req: &Request, username: &str) -> Result<Admitted, ApiError> {
    let throttle = req
        .data::<Arc<AuthThrottle>>()
        .ok_or_else(|| ApiError::internal("auth throttle missing"))?;
    let address = req.remote_addr().as_socket_addr().map(|a| a.ip());
    if let Some(wait) = throttle.blocked(address, username) {
        return Err(ApiError::too_many_failed_sign_ins(wait));
    }
    Ok(Admitted {
        throttle: Arc::clone(throttle),
        address,
        username: username.to_string(),
    })
}

/// Who failed: the address a request came from, or the username it claimed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    Username(String),
}

/// Failed sign-ins in the last `window`, by address and by username.
#[derive(Debug)]
pub struct AuthThrottle {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<Subject, VecDeque<Instant>>>,
}

/// Subjects tracked at most; beyond it the expired ones go, and if that is not enough the
/// oldest knowledge is dropped rather than memory grown without bound.
const CAPACITY: usize = 100_000;

impl Default for AuthThrottle {
    /// 10 failures a minute.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

impl AuthThrottle {
    /// A throttle that refuses after `limit` failures within `window`.
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn subjects(address: Option<IpAddr>, username: &str) -> impl Iterator<Item = Subject> {
        address
            .map(Subject::Address)
            .into_iter()
            .chain(std::iter::once(Subject::Username(username.to_string())))
    }

    /// How long a sign-in from `address` as `username` must wait, if either is over the limit.
    pub fn blocked(&self, address: Option<IpAddr>, username: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        Self::subjects(address, username)
            .filter_map(|subject| {
                let times = failures.get_mut(&subject)?;
                while times.front().is_some_and(|t| now - *t >= self.window) {
                    times.pop_front();
                }
                // Free again once the oldest failure that keeps it over the limit expires.
                let over = times.len().checked_sub(self.limit)?;
                times.get(over).map(|t| self.window - (now - *t))
            })
            .max()
    }

    /// Records a failed sign-in from `address` as `username`.
    pub fn failed(&self, address: Option<IpAddr>, username: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= CAPACITY {
            failures.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
            if failures.len() >= CAPACITY {
                failures.clear();
            }
        }
        for subject in Self::subjects(address, username) {
            let times = failures.entry(subject).or_default();
            times.push_back(now);
            // Only the last `limit + 1` matter for the decision.
            if times.len() > self.limit + 1 {
                times.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn an_address_is_blocked_after_the_limit_for_about_the_window() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(60));
        for n in 0..3 {
            assert_eq!(throttle.blocked(HOME, &format!("user{n}")), None);
            throttle.failed(HOME, &format!("user{n}"));
        }
        // Three failures are answered; the fourth attempt waits, whatever its username.
        let wait = throttle.blocked(HOME, "someone-else").expect("blocked");
        assert!(
            wait <= Duration::from_secs(60) && wait > Duration::from_secs(50),
            "{wait:?}"
        );
    }

    #[test]
    fn a_username_is_blocked_from_every_address() {
        let throttle = AuthThrottle::new(2, Duration::from_secs(60));
        for n in 0..3u8 {
            throttle.failed(Some(IpAddr::from([10, 0, 0, n])), "admin");
        }
        assert!(
            throttle
                .blocked(Some(IpAddr::from([10, 9, 9, 9])), "admin")
                .is_some()
        );
        assert!(
            throttle
                .blocked(Some(IpAddr::from([10, 9, 9, 9])), "other")
                .is_none()
        );
    }

    #[test]
    fn failures_expire_with_the_window() {
        let throttle = AuthThrottle::new(1, Duration::from_millis(20));
        throttle.failed(HOME, "admin");
        throttle.failed(HOME, "admin");
        assert!(throttle.blocked(HOME, "admin").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(throttle.blocked(HOME, "admin").is_none());
    }
}
