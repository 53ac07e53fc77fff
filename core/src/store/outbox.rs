//! The durable outbox: events recorded with the state change that causes them, one delivery row
//! per event and matching endpoint, and the dispatcher's claims on those rows (the dispatcher's
//! statements work on every tenant's deliveries, so they are in `cross_tenant.rs`).
//!
//! Invariants kept here:
//! - An event, its device's state change and its deliveries commit together or not at all; so
//!   does the end of a link with the deletion of the device's keys ([`Link::End`]).
//! - A claim is a lease: `next_attempt_at` moves to the lease's end, so a claim nobody settles
//!   comes back by itself. A claim whose owner's advisory lock is gone (the process died) comes
//!   back at once through [`Store::release_orphaned_claims`].
//! - Settling a delivery checks the lease owner: a dispatcher whose lease was taken over cannot
//!   overwrite the newer attempt.
//!
//! [`Store::release_orphaned_claims`]: super::Store::release_orphaned_claims

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{DeviceChange, Link, StoreError, TenantStore, Tx, keys, link_tokens};
use crate::domain::{DeviceId, DeviceState, TenantId};
use crate::events::{NewEvent, RecordedEvent, WireEvent};

/// The channel a commit that adds deliveries notifies.
pub(crate) const CHANNEL: &str = "wagate_webhooks";

/// First key of the advisory locks dispatchers hold while they live ("wh" in ASCII); the
/// second key is the dispatcher's owner id.
pub(super) const LOCK_CLASS: i32 = 0x7768;

/// A delivery a dispatcher claimed, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub id: Uuid,
    /// Its endpoint.
    pub endpoint_id: Uuid,
    /// Attempts made before this one.
    pub attempts: i32,
    /// When the event stops being worth delivering.
    pub expires_at: Option<DateTime<Utc>>,
    /// The event's id: the `webhook-id`.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The exact JSON to send.
    pub body: String,
    /// Where to send it.
    pub url: String,
    /// The secrets that sign it, newest first.
    pub secrets: Vec<String>,
}

/// How an attempt ended, as the delivery log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// Its status code.
        status_code: u16,
    },
    /// The attempt failed; another is due at `retry_at`.
    Failed {
        /// The endpoint's status code, if it answered.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        retry_at: DateTime<Utc>,
    },
    /// The attempt failed and no other will be made.
    Dead {
        /// The endpoint's status code, if it answered.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
        /// The endpoint answered 410 Gone: it is disabled.
        gone: bool,
    },
    /// The attempt failed and the event expired before the next one would be due.
    Expired {
        /// The endpoint's status code, if it answered.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

impl DeliveryOutcome {
    /// The delivery's status, next attempt, status code and error, as stored.
    pub(super) fn columns(
        &self,
    ) -> (
        &'static str,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<&str>,
    ) {
        match self {
            Self::Delivered { status_code } => {
                ("delivered", None, Some(i32::from(*status_code)), None)
            }
            Self::Failed {
                status_code,
                error,
                retry_at,
            } => (
                "pending",
                Some(*retry_at),
                status_code.map(i32::from),
                Some(error),
            ),
            Self::Dead {
                status_code, error, ..
            } => ("dead", None, status_code.map(i32::from), Some(error)),
            Self::Expired { status_code, error } => {
                ("expired", None, status_code.map(i32::from), Some(error))
            }
        }
    }
}

/// A connection outside the pool that holds a dispatcher's advisory lock (its claims are live
/// while it lasts) and hears the outbox's notifications.
pub struct OutboxListener {
    wakes: Arc<HeardWakes>,
    driver: JoinHandle<()>,
    _client: tokio_postgres::Client,
}

impl Drop for OutboxListener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl OutboxListener {
    /// A listener on `client`, whose notifications `driver` records in `wakes`.
    pub(super) fn new(
        wakes: Arc<HeardWakes>,
        driver: JoinHandle<()>,
        client: tokio_postgres::Client,
    ) -> Self {
        Self {
            wakes,
            driver,
            _client: client,
        }
    }

    /// Waits for the next commits that added deliveries and says for which endpoints; `None`
    /// when the connection is gone (the caller reconnects).
    pub async fn notified(&mut self) -> Option<OutboxWake> {
        loop {
            if let Some(wake) = self.wakes.take() {
                return Some(wake);
            }
            if self.driver.is_finished() {
                return None;
            }
            tokio::select! {
                _ = self.wakes.ready.notified() => {}
                _ = &mut self.driver => return self.wakes.take(),
            }
        }
    }
}

impl TenantStore<'_> {
    /// Records `change` on the tenant's device `id` and `events` about it in one transaction,
    /// with one delivery per event and enabled endpoint whose filters match; returns the events
    /// as recorded (numbered, in order).
    ///
    /// With [`Link::End`] every key row of the device goes in the same transaction: a link
    /// never ends with its keys left behind, nor its keys go while the JID stays. A change to
    /// `logged_in` marks the device's link tokens used in the same transaction. When the
    /// device is not there (or not in `only_from`), nothing at all is written and the answer is
    /// [`StoreError::DeviceNotFound`].
    pub async fn record_events(
        &self,
        id: &DeviceId,
        change: DeviceChange<'_>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let tenant = self.tenant;
        let not_found = || StoreError::DeviceNotFound {
            tenant,
            device_id: id.clone(),
        };
        // Declared first, so it goes last: once the change committed (or did not).
        let _forget = self.store.devices.forget_after(tenant, id);
        let mut client = self.store.client().await?;
        let tx = Tx::begin(
            &mut client,
            format!("record events of device `{id}` of tenant {tenant}"),
        )
        .await?;
        if change.link == Link::End {
            // Locked as for a delete: a concurrent delete of the device, and any key row written
            // for it meanwhile (its foreign-key check takes a share lock on the row), wait until
            // the link has ended.
            tx.query_opt(
                "SELECT 1 FROM devices WHERE tenant_id = $1 AND device_id = $2 FOR UPDATE",
                &[&tenant.0, &id.as_str()],
            )
            .await?
            .ok_or_else(not_found)?;
        }
        let (set_jid, jid) = match change.link {
            Link::Keep => (false, None),
            Link::Set(jid) => (true, Some(jid)),
            Link::End => (true, None),
        };
        let count = events.len() as i64;
        let row = tx
            .query_opt(
                "UPDATE devices SET
                    state = coalesce($3, state),
                    jid = CASE WHEN $4 THEN $5 ELSE jid END,
                    event_seq = event_seq + $6,
                    updated_at = now()
                 WHERE tenant_id = $1 AND device_id = $2
                   AND ($7::text IS NULL OR state = $7)
                   AND ($8::bigint IS NULL OR (internal_id = $8 AND lease_epoch = $9))
                 RETURNING internal_id, event_seq",
                &[
                    &tenant.0,
                    &id.as_str(),
                    &change.state.map(|s| s.as_str()),
                    &set_jid,
                    &jid,
                    &count,
                    &change.only_from.map(|s| s.as_str()),
                    &change.fence.map(|f| f.row),
                    &change.fence.map(|f| f.epoch),
                ],
            )
            .await?;
        let Some(row) = row else {
            // Told apart only when it matters: a fenced write that found its row under
            // another epoch lost its lease (a row gone is a device deleted, whatever took its
            // id since).
            if let Some(fence) = change.fence
                && tx
                    .query_opt(
                        "SELECT 1 FROM devices WHERE internal_id = $1 AND lease_epoch <> $2",
                        &[&fence.row, &fence.epoch],
                    )
                    .await?
                    .is_some()
            {
                return Err(StoreError::LeaseLost {
                    tenant,
                    device_id: id.clone(),
                });
            }
            return Err(not_found());
        };
        if change.link == Link::End {
            keys::delete_key_rows(&tx, row.get(0)).await?;
        }
        if change.state == Some(DeviceState::LoggedIn) {
            // A link page's token is spent by the login it was for.
            link_tokens::use_up(&tx, row.get(0)).await?;
        }
        let last_seq: i64 = row.get(1);
        let first_seq = last_seq - count + 1;
        let now = Utc::now();
        let recorded: Vec<(RecordedEvent, Option<DateTime<Utc>>)> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                let wire = WireEvent {
                    id: Uuid::new_v4(),
                    event_type: event.event_type.to_string(),
                    tenant: tenant.0,
                    device_id: Some(id.to_string()),
                    seq: first_seq + i as i64,
                    occurred_at: now,
                    data: event.data,
                };
                (RecordedEvent::of(&wire), event.expires_at)
            })
            .collect();
        insert_events(&tx, tenant, Some(id.as_str()), &recorded, None).await?;
        tx.commit().await?;
        Ok(recorded.into_iter().map(|(event, _)| event).collect())
    }
}

/// Inserts recorded events and fans each out to the tenant's enabled endpoints that want it
/// (or, with `only_endpoint`, to that endpoint alone); notifies dispatchers when deliveries were
/// added. Runs inside the caller's transaction.
pub(super) async fn insert_events(
    tx: &Tx<'_>,
    tenant: TenantId,
    device: Option<&str>,
    events: &[(RecordedEvent, Option<DateTime<Utc>>)],
    only_endpoint: Option<Uuid>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut seqs = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut ats = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    let mut expiries = Vec::with_capacity(events.len());
    for (event, expires_at) in events {
        ids.push(event.id);
        seqs.push(event.seq);
        types.push(event.event_type.as_str());
        ats.push(event.occurred_at);
        bodies.push(&*event.body);
        expiries.push(*expires_at);
    }
    // The endpoints are read under the share lock their deliveries' foreign keys take anyway,
    // so an endpoint deleted meanwhile is skipped rather than failing the insert at its
    // foreign-key check: the events are recorded whatever happens to an endpoint.
    let (_, added) = tx
        .execute_then_query(
            (
                "INSERT INTO events (id, tenant_id, device_id, seq, type, occurred_at, body, expires_at)
                 SELECT e.id, $1, $2, e.seq, e.type, e.at, e.body, e.expires_at
                 FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::text[],
                             $8::timestamptz[]) AS e(id, seq, type, at, body, expires_at)",
                &[
                    &tenant.0, &device, &ids, &seqs, &types, &ats, &bodies, &expiries,
                ],
            ),
            (
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, next_attempt_at, expires_at)
                 SELECT gen_random_uuid(), w.id, e.id, now(), e.expires_at
                 FROM unnest($3::uuid[], $4::text[], $5::timestamptz[]) WITH ORDINALITY
                      AS e(id, type, expires_at, n)
                 JOIN (SELECT id, events, device_ids FROM webhook_endpoints
                       WHERE tenant_id = $1
                         AND CASE WHEN $6::uuid IS NOT NULL THEN id = $6
                             ELSE enabled AND events && $4
                                  AND (device_ids IS NULL OR $2 = ANY(device_ids)) END
                       FOR KEY SHARE) w
                   ON $6::uuid IS NOT NULL OR e.type = ANY(w.events)
                 ORDER BY e.n
                 RETURNING endpoint_id",
                &[&tenant.0, &device, &ids, &types, &expiries, &only_endpoint],
            ),
        )
        .await?;
    if !added.is_empty() {
        let mut endpoints: Vec<Uuid> = added.iter().map(|row| row.get(0)).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &OutboxWake::payload(&endpoints)],
        )
        .await?;
    }
    Ok(())
}

/// What a dispatcher hears from the outbox: which endpoints got new or retried deliveries.
///
/// The notification's payload names them, space-separated; an empty payload (a retry asked
/// for through the API, a payload that would be too long, or one this build cannot read) says
/// nothing about which, so it wakes every claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxWake {
    /// Deliveries were added for these endpoints.
    Endpoints(HashSet<Uuid>),
    /// Deliveries were added for endpoints not named.
    Any,
}

impl OutboxWake {
    /// Endpoints named at most in one payload; PostgreSQL caps a payload at 8,000 bytes.
    const MOST_NAMED: usize = 100;

    fn payload(endpoints: &[Uuid]) -> String {
        if endpoints.len() > Self::MOST_NAMED {
            return String::new();
        }
        endpoints
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn parse(payload: &str) -> Self {
        let named: Option<HashSet<Uuid>> = payload
            .split_whitespace()
            .map(|id| id.parse().ok())
            .collect();
        match named {
            Some(named) if !named.is_empty() => Self::Endpoints(named),
            _ => Self::Any,
        }
    }

    /// Adds what `other` said to what this one says.
    fn merge(&mut self, other: OutboxWake) {
        match (&mut *self, other) {
            (Self::Endpoints(mine), Self::Endpoints(theirs)) => mine.extend(theirs),
            (_, Self::Any) => *self = Self::Any,
            (Self::Any, _) => {}
        }
    }

    /// Whether it names an endpoint outside `endpoints` (or does not say which).
    pub fn beyond(&self, endpoints: &HashSet<Uuid>) -> bool {
        match self {
            Self::Endpoints(named) => !named.is_subset(endpoints),
            Self::Any => true,
        }
    }
}

/// What the outbox listener heard since the dispatcher last asked, merged into one wake-up.
#[derive(Default)]
pub(super) struct HeardWakes {
    heard: std::sync::Mutex<Option<OutboxWake>>,
    ready: tokio::sync::Notify,
}

impl HeardWakes {
    /// Records a notification's payload and wakes the dispatcher.
    pub(super) fn hear(&self, payload: &str) {
        let wake = OutboxWake::parse(payload);
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *heard {
            Some(pending) => pending.merge(wake),
            None => *heard = Some(wake),
        }
        drop(heard);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<OutboxWake> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_endpoints_or_says_any() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let named = OutboxWake::parse(&OutboxWake::payload(&[a, b]));
        assert_eq!(named, OutboxWake::Endpoints(HashSet::from([a, b])));
        assert_eq!(OutboxWake::parse(""), OutboxWake::Any);
        assert_eq!(OutboxWake::parse("not-a-uuid"), OutboxWake::Any);
        let many: Vec<Uuid> = (0..=OutboxWake::MOST_NAMED)
            .map(|_| Uuid::new_v4())
            .collect();
        assert_eq!(OutboxWake::payload(&many), "");
    }

    #[test]
    fn wakes_heard_in_between_are_merged() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut wake = OutboxWake::Endpoints(HashSet::from([a]));
        wake.merge(OutboxWake::Endpoints(HashSet::from([b])));
        assert_eq!(wake, OutboxWake::Endpoints(HashSet::from([a, b])));
        assert!(!wake.beyond(&HashSet::from([a, b])));
        assert!(wake.beyond(&HashSet::from([a])));
        wake.merge(OutboxWake::Any);
        assert_eq!(wake, OutboxWake::Any);
        assert!(wake.beyond(&HashSet::from([a, b])));
    }
}
