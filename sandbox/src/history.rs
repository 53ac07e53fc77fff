//! Every connection the sandbox served, as WhatsApp would see it: when each opened, logged in as
//! which device and closed, and whether a newer login of the same device pushed it out.
//!
//! Cluster tests read it to check, from the server's side, that a device never held two live
//! connections and how long it was offline while moving between gateway processes. Times are
//! wall-clock milliseconds since the Unix epoch, so a test can compare them with its own clock.
//! A socket that never finishes the Noise handshake is given no number, so it has no record.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many records the sandbox keeps; the oldest go first. Enough for any test run, and a
/// long-lived standalone sandbox does not grow without bound.
const LIMIT: usize = 100_000;

/// One connection the sandbox served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The sandbox's number for the connection, as [`crate::ClientInfo::connection`] gives it.
    pub connection: u64,
    /// The device JID it logged in as; `None` if it never did (a registration, a refused login).
    pub jid: Option<String>,
    /// When the websocket opened.
    pub opened_at_ms: u64,
    /// When the server accepted its login as [`ConnectionRecord::jid`].
    pub logged_in_at_ms: Option<u64>,
    /// When it closed; `None` while it is open.
    pub closed_at_ms: Option<u64>,
    /// The sandbox closed it because another connection logged in as the same device. The new
    /// login is accepted before the old socket closes, so this record's `closed_at_ms` comes a
    /// little after its successor's `logged_in_at_ms`.
    pub replaced: bool,
}

/// The records of the latest connections, oldest first, and the count of replacements.
#[derive(Default)]
pub(crate) struct History {
    /// In increasing connection number: records are added as numbers are handed out, under the
    /// same lock, which lets lookups search by number.
    records: VecDeque<ConnectionRecord>,
    replaced_total: u64,
}

impl History {
    /// Starts the record of connection `connection`, whose socket opened at `opened_at_ms`.
    pub fn opened(&mut self, connection: u64, opened_at_ms: u64) {
        if self.records.len() >= LIMIT {
            self.records.pop_front();
        }
        self.records.push_back(ConnectionRecord {
            connection,
            jid: None,
            opened_at_ms,
            logged_in_at_ms: None,
            closed_at_ms: None,
            replaced: false,
        });
    }

    /// Records that the server accepted `connection`'s login as `jid`.
    pub fn logged_in(&mut self, connection: u64, jid: &str) {
        if let Some(record) = self.record(connection) {
            record.jid = Some(jid.to_string());
            record.logged_in_at_ms = Some(now_ms());
        }
    }

    /// Records that the server is closing `connection` because another logged in as its device.
    pub fn replaced(&mut self, connection: u64) {
        self.replaced_total += 1;
        if let Some(record) = self.record(connection) {
            record.replaced = true;
        }
    }

    /// Records that `connection` closed, however it ended; the first close counts.
    pub fn closed(&mut self, connection: u64) {
        if let Some(record) = self.record(connection) {
            record.closed_at_ms.get_or_insert_with(now_ms);
        }
    }

    /// A copy of the records, oldest first.
    pub fn records(&self) -> Vec<ConnectionRecord> {
        self.records.iter().cloned().collect()
    }

    /// How many connections the sandbox closed because another logged in as the same device.
    pub fn replaced_total(&self) -> u64 {
        self.replaced_total
    }

    /// The record of `connection`, unless it is older than the records kept.
    fn record(&mut self, connection: u64) -> Option<&mut ConnectionRecord> {
        let at = self
            .records
            .binary_search_by_key(&connection, |r| r.connection)
            .ok()?;
        self.records.get_mut(at)
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
