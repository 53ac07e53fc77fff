//! The durable outbox: events recorded with the state change that causes them, one delivery row
//! per event and matching endpoint, and the dispatcher's claims on those rows.
//!
//! Invariants kept here:
//! - An event, its device's state change and its deliveries commit together or not at all.
//! - A claim is a lease: `next_attempt_at` moves to the lease's end, so a claim nobody settles
//!   comes back by itself. A claim whose owner's advisory lock is gone (the process died) comes
//!   back at once through [`Store::release_orphaned_claims`].
//! - Settling a delivery checks the lease owner: a dispatcher whose lease was taken over cannot
//!   overwrite the newer attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::{DeviceChange, Store, StoreError};
use crate::domain::{DeviceId, TenantId};
use crate::events::{NewEvent, WireEvent};

/// The channel a commit that adds deliveries notifies.
pub(crate) const CHANNEL: &str = "wagate_webhooks";

/// First key of the advisory locks dispatchers hold while they live ("wh" in ASCII); the
/// second key is the dispatcher's owner id.
const LOCK_CLASS: i32 = 0x7768;

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
    fn columns(
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
    wakeups: mpsc::Receiver<()>,
    driver: JoinHandle<()>,
    _client: tokio_postgres::Client,
}

impl Drop for OutboxListener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl OutboxListener {
    /// Waits for the next commit that added deliveries; `false` when the connection is gone (the
    /// caller reconnects).
    pub async fn notified(&mut self) -> bool {
        self.wakeups.recv().await.is_some()
    }
}

impl Store {
    /// Records `change` on the tenant's device and `events` about it in one transaction, with
    /// one delivery per event and enabled endpoint whose filters match; returns the events as
    /// recorded (numbered, in order).
    pub async fn record_events(
        &self,
        tenant: TenantId,
        id: &DeviceId,
        change: DeviceChange<'_>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<WireEvent>, StoreError> {
        let doing = || format!("record events of device `{id}` of tenant {tenant}");
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
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
                 RETURNING event_seq",
                &[
                    &tenant.0,
                    &id.as_str(),
                    &change.state.map(|s| s.as_str()),
                    &change.jid.is_some(),
                    &change.jid.flatten(),
                    &count,
                    &change.only_from.map(|s| s.as_str()),
                ],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?
            .ok_or_else(|| StoreError::DeviceNotFound {
                tenant,
                device_id: id.clone(),
            })?;
        let last_seq: i64 = row.get(0);
        let first_seq = last_seq - count + 1;
        let now = Utc::now();
        let recorded: Vec<(WireEvent, Option<DateTime<Utc>>)> = events
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
                (wire, event.expires_at)
            })
            .collect();
        insert_events(&tx, tenant, Some(id.as_str()), &recorded, None)
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        tx.commit().await.map_err(|e| StoreError::db(doing(), e))?;
        Ok(recorded.into_iter().map(|(wire, _)| wire).collect())
    }

    /// Opens the listener of dispatcher `owner`: takes its advisory lock and listens for
    /// commits that add deliveries.
    pub async fn listen_outbox(&self, owner: i32) -> Result<OutboxListener, StoreError> {
        let doing = || format!("open the outbox listener of dispatcher {owner}");
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        // Bounded at one: a wake-up that finds one pending already has nothing to add.
        let (tx, wakeups) = mpsc::channel(1);
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("outbox listener connection lost: {e}");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &owner])
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        Ok(OutboxListener {
            wakeups,
            driver,
            _client: client,
        })
    }

    /// Claims up to `limit` due deliveries of enabled endpoints (none of `skip`) for dispatcher
    /// `owner`, leased for `lease`; oldest due first.
    pub async fn claim_deliveries(
        &self,
        owner: i32,
        lease: Duration,
        limit: usize,
        skip: &[Uuid],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let lease_ms = lease.as_millis() as f64;
        let rows = self
            .client()
            .await?
            .query(
                "WITH due AS (
                    SELECT d.id FROM webhook_deliveries d
                    JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled
                    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                      AND (d.expires_at IS NULL OR d.expires_at > now())
                      AND d.endpoint_id <> ALL($4)
                    ORDER BY d.next_attempt_at
                    LIMIT $3
                    FOR UPDATE OF d SKIP LOCKED
                 )
                 UPDATE webhook_deliveries d SET
                    lease_owner = $1,
                    next_attempt_at = now() + $2 * interval '1 millisecond'
                 FROM due, webhook_endpoints w, events e
                 WHERE d.id = due.id AND w.id = d.endpoint_id AND e.id = d.event_id
                 RETURNING d.id, d.endpoint_id, d.attempts, d.expires_at, e.id, e.type, e.body,
                    w.url, w.secret,
                    CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END",
                &[&owner, &lease_ms, &(limit as i64), &skip],
            )
            .await
            .map_err(|e| StoreError::db("claim webhook deliveries", e))?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut secrets = vec![row.get::<_, String>(8)];
                secrets.extend(row.get::<_, Option<String>>(9));
                ClaimedDelivery {
                    id: row.get(0),
                    endpoint_id: row.get(1),
                    attempts: row.get(2),
                    expires_at: row.get(3),
                    event_id: row.get(4),
                    event_type: row.get(5),
                    body: row.get(6),
                    url: row.get(7),
                    secrets,
                }
            })
            .collect())
    }

    /// Records how attempts of dispatcher `owner` ended, in one statement; an endpoint that
    /// answered 410 is disabled. Deliveries whose lease `owner` no longer holds are left alone.
    pub async fn settle_deliveries(
        &self,
        owner: i32,
        settled: &[(Uuid, DateTime<Utc>, DeliveryOutcome)],
        gone_endpoints: &[Uuid],
    ) -> Result<(), StoreError> {
        let doing = "record webhook delivery attempts";
        let mut ids = Vec::with_capacity(settled.len());
        let mut ats = Vec::with_capacity(settled.len());
        let mut statuses = Vec::with_capacity(settled.len());
        let mut nexts = Vec::with_capacity(settled.len());
        let mut codes = Vec::with_capacity(settled.len());
        let mut errors = Vec::with_capacity(settled.len());
        for (id, at, outcome) in settled {
            let (status, next, code, error) = outcome.columns();
            ids.push(*id);
            ats.push(*at);
            statuses.push(status);
            nexts.push(next);
            codes.push(code);
            errors.push(error);
        }
        let client = self.client().await?;
        client
            .execute(
                "UPDATE webhook_deliveries d SET
                    status = o.status,
                    attempts = d.attempts + 1,
                    next_attempt_at = o.next,
                    last_attempt_at = o.at,
                    last_status_code = o.code,
                    last_error = o.error,
                    delivered_at = CASE WHEN o.status = 'delivered' THEN o.at ELSE d.delivered_at END,
                    lease_owner = NULL
                 FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::timestamptz[],
                             $6::int[], $7::text[]) AS o(id, at, status, next, code, error)
                 WHERE d.id = o.id AND d.lease_owner = $1",
                &[&owner, &ids, &ats, &statuses, &nexts, &codes, &errors],
            )
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        if !gone_endpoints.is_empty() {
            client
                .execute(
                    "UPDATE webhook_endpoints SET enabled = false, updated_at = now(),
                        disabled_reason = 'the endpoint answered 410 Gone: re-enable it with PATCH when it is back'
                     WHERE id = ANY($1)",
                    &[&gone_endpoints],
                )
                .await
                .map_err(|e| StoreError::db(doing, e))?;
        }
        Ok(())
    }

    /// Hands claims back to the outbox at once: those of `owner` when it stops, or, with `None`,
    /// those whose owner no longer holds its advisory lock (its process died). Returns how many.
    pub async fn release_orphaned_claims(&self, owner: Option<i32>) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = now()
                 WHERE status = 'pending' AND lease_owner IS NOT NULL
                   AND CASE WHEN $2::int IS NOT NULL THEN lease_owner = $2
                       ELSE lease_owner NOT IN (
                           SELECT objid::bigint::int FROM pg_locks
                           WHERE locktype = 'advisory' AND classid = $1::int::oid
                             AND objsubid = 2 AND granted
                             AND database = (SELECT oid FROM pg_database
                                             WHERE datname = current_database()))
                   END",
                &[&LOCK_CLASS, &owner],
            )
            .await
            .map_err(|e| StoreError::db("release orphaned webhook claims", e))
    }

    /// Marks pending deliveries whose event expired (QR codes) as expired; returns how many.
    pub async fn expire_deliveries(&self) -> Result<u64, StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE webhook_deliveries SET status = 'expired', lease_owner = NULL,
                    next_attempt_at = NULL,
                    last_error = coalesce(last_error, 'the event expired before it was delivered')
                 WHERE status = 'pending' AND expires_at <= now()
                   AND (lease_owner IS NULL OR next_attempt_at <= now())",
                &[],
            )
            .await
            .map_err(|e| StoreError::db("expire webhook deliveries", e))
    }

    /// Deletes events older than `retention` that have no pending delivery, with their
    /// deliveries; returns how many events went.
    pub async fn purge_events(&self, retention: Duration) -> Result<u64, StoreError> {
        let retention_ms = retention.as_millis() as f64;
        self.client()
            .await?
            .execute(
                "DELETE FROM events e
                 WHERE e.occurred_at < now() - $1 * interval '1 millisecond'
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                   WHERE d.event_id = e.id AND d.status = 'pending')",
                &[&retention_ms],
            )
            .await
            .map_err(|e| StoreError::db("purge old events", e))
    }

    /// When the next pending delivery is due, if any: the dispatcher sleeps until then.
    pub async fn next_due_delivery(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
                &[],
            )
            .await
            .map_err(|e| StoreError::db("find the next due webhook delivery", e))?
            .get(0))
    }
}

/// Inserts recorded events and fans each out to the tenant's enabled endpoints that want it
/// (or, with `only_endpoint`, to that endpoint alone); notifies dispatchers when deliveries were
/// added. Runs inside the caller's transaction.
pub(crate) async fn insert_events(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: TenantId,
    device: Option<&str>,
    events: &[(WireEvent, Option<DateTime<Utc>>)],
    only_endpoint: Option<Uuid>,
) -> Result<(), tokio_postgres::Error> {
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
        bodies.push(serde_json::to_string(event).expect("a JSON value serialises"));
        expiries.push(*expires_at);
    }
    tx.execute(
        "INSERT INTO events (id, tenant_id, device_id, seq, type, occurred_at, body, expires_at)
         SELECT e.id, $1, $2, e.seq, e.type, e.at, e.body, e.expires_at
         FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::text[],
                     $8::timestamptz[]) AS e(id, seq, type, at, body, expires_at)",
        &[
            &tenant.0, &device, &ids, &seqs, &types, &ats, &bodies, &expiries,
        ],
    )
    .await?;
    let added = tx
        .execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, next_attempt_at, expires_at)
             SELECT gen_random_uuid(), w.id, e.id, now(), e.expires_at
             FROM unnest($3::uuid[], $4::text[], $5::timestamptz[]) WITH ORDINALITY
                  AS e(id, type, expires_at, n)
             JOIN webhook_endpoints w ON w.tenant_id = $1
             WHERE CASE WHEN $6::uuid IS NOT NULL THEN w.id = $6
                   ELSE w.enabled AND e.type = ANY(w.events)
                        AND (w.device_ids IS NULL OR $2 = ANY(w.device_ids)) END
             ORDER BY e.n",
            &[&tenant.0, &device, &ids, &types, &expiries, &only_endpoint],
        )
        .await?;
    if added > 0 {
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    }
    Ok(())
}
