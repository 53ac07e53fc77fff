//! How far the start-up restore has come: counters the restore updates as its devices settle and
//! anyone may read at any time (the readiness check, metrics), without a lock on the hot path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How far the start-up restore ([`super::DeviceManager::restore`]) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    /// The linked devices it reconnects; 0 until it has read them from the store.
    pub total: u64,
    /// Of those, the ones it is through with: logged in, disconnected, deleted meanwhile, or
    /// still not settled when their batch's login timeout ran out.
    pub done: u64,
    /// Whether it went through every device and returned. False before it starts, while it
    /// runs, and after it failed (the store did not answer before any device was started; see
    /// [`super::DeviceManager::restore_failure`]): a gateway whose restore failed is not ready.
    pub finished: bool,
}

/// The counters behind [`RestoreProgress`], and why the last attempt failed.
#[derive(Debug, Default)]
pub(super) struct RestoreTracker {
    total: AtomicU64,
    done: AtomicU64,
    finished: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl RestoreTracker {
    /// A restore starts: nothing done, nothing failed.
    pub(super) fn begin(&self) {
        self.finished.store(false, Ordering::Release);
        self.total.store(0, Ordering::Release);
        self.done.store(0, Ordering::Release);
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// It has read the `total` linked devices it reconnects.
    pub(super) fn found(&self, total: usize) {
        self.total.store(total as u64, Ordering::Release);
    }

    /// It is through with `n` more devices.
    pub(super) fn settled(&self, n: usize) {
        if n > 0 {
            self.done.fetch_add(n as u64, Ordering::AcqRel);
        }
    }

    /// It returned after going through every device.
    pub(super) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// It failed with `error`.
    pub(super) fn fail(&self, error: &dyn std::fmt::Display) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    /// Where it stands. `finished` is read first: once it is true, the counts it followed are
    /// seen too.
    pub(super) fn progress(&self) -> RestoreProgress {
        let finished = self.finished.load(Ordering::Acquire);
        RestoreProgress {
            total: self.total.load(Ordering::Acquire),
            done: self.done.load(Ordering::Acquire),
            finished,
        }
    }

    /// Why the last attempt failed, until another starts.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_up_and_finishes() {
        let tracker = RestoreTracker::default();
        let idle = RestoreProgress {
            total: 0,
            done: 0,
            finished: false,
        };
        assert_eq!(tracker.progress(), idle);
        tracker.begin();
        tracker.found(50);
        tracker.settled(32);
        assert_eq!(
            tracker.progress(),
            RestoreProgress {
                total: 50,
                done: 32,
                finished: false
            }
        );
        tracker.settled(18);
        tracker.finish();
        assert_eq!(
            tracker.progress(),
            RestoreProgress {
                total: 50,
                done: 50,
                finished: true
            }
        );
    }

    #[test]
    fn a_failure_is_kept_until_the_next_attempt_and_is_not_finished() {
        let tracker = RestoreTracker::default();
        tracker.begin();
        tracker.fail(&"the database is down");
        assert!(!tracker.progress().finished);
        assert_eq!(tracker.failure().as_deref(), Some("the database is down"));
        tracker.begin();
        assert_eq!(tracker.failure(), None);
    }
}
