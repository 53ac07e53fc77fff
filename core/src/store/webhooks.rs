//! Webhook endpoints and their delivery log, always addressed through the tenant's
//! [`TenantStore`].
//!
//! The store trusts what it is given: URLs, event names and device ids are checked by
//! [`crate::webhooks`] before they get here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::outbox::insert_events;
use super::{StoreError, TenantStore, Tx, is_missing_reference};
use crate::events::{NewEvent, RecordedEvent, WireEvent};

/// The columns [`endpoint`] reads, in order.
const ENDPOINT_COLUMNS: &str =
    "id, url, description, events, device_ids, enabled, disabled_reason, created_at, updated_at";

/// The columns [`delivery`] reads, in order (`d`: deliveries, `e`: events).
const DELIVERY_COLUMNS: &str = "d.id, e.id, e.type, e.body, d.status, d.attempts, \
     d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at, \
     d.created_at, d.expires_at";

/// A webhook endpoint as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// A label for people.
    pub description: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// The devices whose events it receives; `None`: every device.
    pub device_ids: Option<Vec<String>>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled, when wagate disabled it.
    pub disabled_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new endpoint, already checked.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Where deliveries go.
    pub url: String,
    /// A label for people.
    pub description: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// The devices whose events it receives; `None`: every device.
    pub device_ids: Option<Vec<String>>,
}

/// What an update does to an endpoint's device filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeviceFilterChange {
    /// The filter stays as it is.
    #[default]
    Keep,
    /// The filter goes: the endpoint receives the events of every device.
    AllDevices,
    /// The endpoint receives the events of these devices only.
    Only(Vec<String>),
}

/// Changes to an endpoint, already checked; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// A new URL.
    pub url: Option<String>,
    /// A new label.
    pub description: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// What happens to the device filter.
    pub device_ids: DeviceFilterChange,
    /// Enables or disables deliveries; enabling clears the reason it was disabled.
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for an attempt (or a retry).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed, or the endpoint is gone.
    Dead,
    /// The event (a QR code) expired before it was delivered.
    Expired,
}

impl DeliveryStatus {
    /// The status's wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Expired => "expired",
        }
    }

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One delivery of an event to an endpoint, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// The delivery.
    pub id: Uuid,
    /// The event: also the `webhook-id`.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The exact JSON sent.
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The status code of the last attempt, if the endpoint answered.
    pub last_status_code: Option<i32>,
    /// What went wrong in the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When the event stops being worth delivering.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A page of the delivery log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<DeliveryRecord>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next_before: Option<Uuid>,
}

/// Why a delivery cannot be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryRefusal {
    /// The endpoint has no such delivery.
    NotFound,
    /// The event (a QR code) has expired; delivering it would show a dead code.
    Expired,
}

fn endpoint(row: &Row) -> Endpoint {
    Endpoint {
        id: row.get(0),
        url: row.get(1),
        description: row.get(2),
        events: row.get(3),
        device_ids: row.get(4),
        enabled: row.get(5),
        disabled_reason: row.get(6),
        created_at: row.get(7),
        updated_at: row.get(8),
    }
}

fn delivery(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let raw: &str = row.get(4);
    let status = DeliveryStatus::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("a webhook delivery has status `{raw}`")))?;
    Ok(DeliveryRecord {
        id: row.get(0),
        event_id: row.get(1),
        event_type: row.get(2),
        body: row.get(3),
        status,
        attempts: row.get(5),
        next_attempt_at: row.get(6),
        last_attempt_at: row.get(7),
        last_status_code: row.get(8),
        last_error: row.get(9),
        delivered_at: row.get(10),
        created_at: row.get(11),
        expires_at: row.get(12),
    })
}

impl TenantStore<'_> {
    /// Creates an endpoint of the tenant signing with `secret`.
    pub async fn create_endpoint(
        &self,
        new: &NewEndpoint,
        secret: &str,
    ) -> Result<Endpoint, StoreError> {
        let tenant = self.tenant;
        let row = self
            .store
            .query_one(
                &format!("create a webhook endpoint in tenant {tenant}"),
                &format!(
                    "INSERT INTO webhook_endpoints (id, tenant_id, url, description, events,
                        device_ids, secret)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[
                    &Uuid::new_v4(),
                    &tenant.0,
                    &new.url,
                    &new.description,
                    &new.events,
                    &new.device_ids,
                    &secret,
                ],
            )
            .await
            .map_err(|e| {
                e.refine(|e| is_missing_reference(e).then_some(StoreError::TenantNotFound(tenant)))
            })?;
        Ok(endpoint(&row))
    }

    /// The tenant's endpoints, oldest first.
    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let tenant = self.tenant;
        Ok(self
            .store
            .query(
                &format!("list the webhooks of tenant {tenant}"),
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1
                     ORDER BY created_at, id"
                ),
                &[&tenant.0],
            )
            .await?
            .iter()
            .map(endpoint)
            .collect())
    }

    /// The tenant's endpoint `id`, if it has one.
    pub async fn find_endpoint(&self, id: Uuid) -> Result<Option<Endpoint>, StoreError> {
        let tenant = self.tenant;
        Ok(self
            .store
            .query_opt(
                &format!("read webhook {id} of tenant {tenant}"),
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                     WHERE tenant_id = $1 AND id = $2"
                ),
                &[&tenant.0, &id],
            )
            .await?
            .as_ref()
            .map(endpoint))
    }

    /// Applies `patch` to the tenant's endpoint `id`; `None` if it has none.
    pub async fn update_endpoint(
        &self,
        id: Uuid,
        patch: &EndpointPatch,
    ) -> Result<Option<Endpoint>, StoreError> {
        let tenant = self.tenant;
        let (set_devices, devices) = match &patch.device_ids {
            DeviceFilterChange::Keep => (false, None),
            DeviceFilterChange::AllDevices => (true, None),
            DeviceFilterChange::Only(ids) => (true, Some(ids)),
        };
        Ok(self
            .store
            .query_opt(
                &format!("update webhook {id} of tenant {tenant}"),
                &format!(
                    "UPDATE webhook_endpoints SET
                        url = coalesce($3, url),
                        description = coalesce($4, description),
                        events = coalesce($5, events),
                        device_ids = CASE WHEN $6 THEN $7 ELSE device_ids END,
                        enabled = coalesce($8, enabled),
                        disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END,
                        updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[
                    &tenant.0,
                    &id,
                    &patch.url,
                    &patch.description,
                    &patch.events,
                    &set_devices,
                    &devices,
                    &patch.enabled,
                ],
            )
            .await?
            .as_ref()
            .map(endpoint))
    }

    /// Deletes the tenant's endpoint `id` and its delivery log; false if it had none.
    pub async fn delete_endpoint(&self, id: Uuid) -> Result<bool, StoreError> {
        let tenant = self.tenant;
        let deleted = self
            .store
            .execute_through_deadlocks(
                &format!("delete webhook {id} of tenant {tenant}"),
                "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id],
            )
            .await?;
        Ok(deleted > 0)
    }

    /// Makes `secret` the endpoint's signing secret; the current one keeps signing for
    /// `grace`. `None` if the tenant has no such endpoint.
    pub async fn rotate_endpoint_secret(
        &self,
        id: Uuid,
        secret: &str,
        grace: Duration,
    ) -> Result<Option<Endpoint>, StoreError> {
        let tenant = self.tenant;
        let grace_ms = grace.as_millis() as f64;
        Ok(self
            .store
            .query_opt(
                &format!("rotate the secret of webhook {id} of tenant {tenant}"),
                &format!(
                    "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
                        previous_secret_until = now() + $4 * interval '1 millisecond',
                        updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
                ),
                &[&tenant.0, &id, &secret, &grace_ms],
            )
            .await?
            .as_ref()
            .map(endpoint))
    }

    /// Queues a `ping` event for the tenant's endpoint `id` alone (whatever its filters);
    /// returns the event and its delivery, `None` if the tenant has no such endpoint.
    pub async fn ping_endpoint(&self, id: Uuid) -> Result<Option<(WireEvent, Uuid)>, StoreError> {
        let tenant = self.tenant;
        let mut client = self.store.client().await?;
        let tx = Tx::begin(
            &mut client,
            format!("queue a test event for webhook {id} of tenant {tenant}"),
        )
        .await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &id],
            )
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let ping = NewEvent::ping();
        let event = WireEvent {
            id: Uuid::new_v4(),
            event_type: ping.event_type.to_string(),
            tenant: tenant.0,
            device_id: None,
            seq: 0,
            occurred_at: Utc::now(),
            data: ping.data,
        };
        insert_events(
            &tx,
            tenant,
            None,
            &[(RecordedEvent::of(&event), None)],
            Some(id),
        )
        .await?;
        let delivery: Uuid = tx
            .query_one(
                "SELECT id FROM webhook_deliveries WHERE event_id = $1",
                &[&event.id],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Some((event, delivery)))
    }

    /// A page of the endpoint's delivery log, newest first: at most `limit` deliveries (with
    /// `status`, when given) older than delivery `before`, when given.
    pub async fn list_deliveries(
        &self,
        endpoint: Uuid,
        status: Option<DeliveryStatus>,
        limit: usize,
        before: Option<Uuid>,
    ) -> Result<DeliveryPage, StoreError> {
        let tenant = self.tenant;
        let doing = format!("list the deliveries of webhook {endpoint} of tenant {tenant}");
        let owned = self
            .store
            .query_opt(
                &doing,
                "SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
                &[&tenant.0, &endpoint],
            )
            .await?
            .is_some();
        if !owned {
            return Err(StoreError::EndpointNotFound { tenant, endpoint });
        }
        let rows = self
            .store
            .query(
                &doing,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                     JOIN events e ON e.id = d.event_id
                     WHERE d.endpoint_id = $1
                       AND ($2::text IS NULL OR d.status = $2)
                       AND ($3::uuid IS NULL OR (d.created_at, d.id) < (
                            SELECT created_at, id FROM webhook_deliveries
                            WHERE id = $3 AND endpoint_id = $1))
                     ORDER BY d.created_at DESC, d.id DESC
                     LIMIT $4"
                ),
                &[
                    &endpoint,
                    &status.map(DeliveryStatus::as_str),
                    &before,
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut deliveries = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        let next_before = if deliveries.len() > limit {
            deliveries.truncate(limit);
            deliveries.last().map(|d| d.id)
        } else {
            None
        };
        Ok(DeliveryPage {
            deliveries,
            next_before,
        })
    }

    /// Makes the endpoint's delivery due now, whatever its status: a delivered event is sent
    /// again with the same `webhook-id`, a dead one gets one more attempt.
    pub async fn retry_delivery(
        &self,
        endpoint: Uuid,
        id: Uuid,
    ) -> Result<Result<DeliveryRecord, RetryRefusal>, StoreError> {
        let tenant = self.tenant;
        let doing = format!("retry delivery {id} of webhook {endpoint} of tenant {tenant}");
        let row = self
            .store
            .query_opt(
                &doing,
                &format!(
                    "WITH target AS (
                        SELECT d.id, d.expires_at FROM webhook_deliveries d
                        JOIN webhook_endpoints w ON w.id = d.endpoint_id
                        WHERE w.tenant_id = $1 AND d.endpoint_id = $2 AND d.id = $3
                        FOR UPDATE OF d
                     ), retried AS (
                        UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(),
                            lease_owner = NULL
                        FROM target
                        WHERE d.id = target.id
                          AND (target.expires_at IS NULL OR target.expires_at > now())
                        RETURNING d.id
                     ), woken AS (
                        SELECT pg_notify('{channel}', '') FROM retried
                     )
                     SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM woken)",
                    channel = super::outbox::CHANNEL
                ),
                &[&tenant.0, &endpoint, &id],
            )
            .await?;
        let (found, retried): (i64, i64) = row.map(|r| (r.get(0), r.get(1))).unwrap_or((0, 0));
        if found == 0 {
            return Ok(Err(RetryRefusal::NotFound));
        }
        if retried == 0 {
            return Ok(Err(RetryRefusal::Expired));
        }
        let row = self
            .store
            .query_one(
                &doing,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                     JOIN events e ON e.id = d.event_id WHERE d.id = $1"
                ),
                &[&id],
            )
            .await?;
        Ok(Ok(delivery(&row)?))
    }
}
