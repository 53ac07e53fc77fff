//! Reading recorded events back, for live streams that resume: a device's state and the events
//! recorded after a given one, read in one snapshot so a stream continues from the bus exactly
//! where the store left off.

use uuid::Uuid;

use super::devices::stored_state;
use super::{StoreError, TenantStore};
use crate::domain::{DeviceId, DeviceState};

/// An event as the store holds it: what a stream sends for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The event's id (the webhook's `webhook-id`, a stream's `Last-Event-ID`).
    pub id: Uuid,
    /// Its number among the device's events.
    pub seq: i64,
    /// Its type, e.g. `qr_refreshed`.
    pub event_type: String,
    /// The JSON envelope, exactly as webhooks deliver it.
    pub body: String,
}

/// Where a device's stream picks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumption {
    /// The device's state now.
    pub state: DeviceState,
    /// The number of the device's latest recorded event (0 before any): a live event numbered
    /// at or below it was read here already or came before the stream.
    pub last_seq: i64,
    /// The events to replay, oldest first.
    pub replay: Vec<RecordedEvent>,
}

impl TenantStore<'_> {
    /// The device's state and, when `after` is given, every retained event of the device
    /// recorded after that one. An `after` the store does not hold for this device (purged, or
    /// another device's) replays everything retained: the reader de-duplicates by id, and
    /// nothing is skipped. `None` when the tenant has no such device.
    pub async fn resume_events(
        &self,
        id: &DeviceId,
        after: Option<Uuid>,
    ) -> Result<Option<Resumption>, StoreError> {
        let tenant = self.tenant;
        // One statement, one snapshot: the device's counter and its events are committed
        // together, so `last_seq` is exactly the newest event the replay can hold.
        let rows = self
            .store
            .query(
                &format!("read the events of device `{id}` of tenant {tenant} to resume a stream"),
                "SELECT d.state, d.event_seq, e.id, e.seq, e.type, e.body
                 FROM devices d
                 LEFT JOIN events e
                   ON $3::uuid IS NOT NULL
                  AND e.tenant_id = d.tenant_id AND e.device_id = d.device_id
                  AND e.seq > coalesce((SELECT seq FROM events
                                        WHERE id = $3 AND tenant_id = $1 AND device_id = $2), 0)
                 WHERE d.tenant_id = $1 AND d.device_id = $2
                 ORDER BY e.seq",
                &[&tenant.0, &id.as_str(), &after],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let state = stored_state(tenant, id, first.get(0))?;
        let last_seq: i64 = first.get(1);
        let replay = rows
            .iter()
            .filter_map(|row| {
                Some(RecordedEvent {
                    id: row.get::<_, Option<Uuid>>(2)?,
                    seq: row.get(3),
                    event_type: row.get(4),
                    body: row.get(5),
                })
            })
            .collect();
        Ok(Some(Resumption {
            state,
            last_seq,
            replay,
        }))
    }
}
