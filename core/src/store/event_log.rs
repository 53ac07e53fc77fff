//! Reading recorded events back, for live streams that resume: a device's state and the events
//! recorded after a given one, read in one snapshot so a stream continues from the bus exactly
//! where the store left off.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Row;
use uuid::Uuid;

use super::devices::stored_state;
use super::{StoreError, TenantStore, Tx};
use crate::domain::{DeviceId, DeviceState, TenantId};
use crate::events::RecordedEvent;

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
                "SELECT d.state, d.event_seq, e.id, e.seq, e.type, e.body, e.occurred_at,
                        e.device_id
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
            .filter_map(|row| recorded(tenant, row, 2))
            .collect();
        Ok(Some(Resumption {
            state,
            last_seq,
            replay,
        }))
    }
}

/// How far before a tenant stream's last event its resumption looks again: events of other
/// devices recorded (stamped) before it may have committed after it, within a transaction's
/// time. Readers de-duplicate those by id.
pub const TENANT_REWIND: Duration = Duration::from_secs(10);

/// Which of a tenant's events a tenant stream carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these types; every type when `None`.
    pub types: Option<Vec<String>>,
    /// Only these devices; every device when `None`.
    pub devices: Option<Vec<DeviceId>>,
}

impl EventFilter {
    /// Whether an event of `device` and type `event_type` passes.
    pub fn admits(&self, device: Option<&str>, event_type: &str) -> bool {
        let type_ok = self
            .types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type));
        let device_ok = self.devices.as_ref().is_none_or(|devices| {
            device.is_some_and(|d| devices.iter().any(|want| want.as_str() == d))
        });
        type_ok && device_ok
    }

    fn device_names(&self) -> Option<Vec<&str>> {
        self.devices
            .as_ref()
            .map(|devices| devices.iter().map(DeviceId::as_str).collect())
    }
}

/// Where a tenant's stream picks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantResumption {
    /// Each device the filter admits, its state now and the number of its latest recorded
    /// event (a live event numbered at or below it was read here already or came before the
    /// stream), in device id order.
    pub devices: Vec<(DeviceId, DeviceState, i64)>,
    /// The events to replay, oldest first.
    pub replay: Vec<RecordedEvent>,
}

impl TenantResumption {
    /// Each device's latest recorded event number.
    pub fn last_seqs(&self) -> HashMap<String, i64> {
        self.devices
            .iter()
            .map(|(id, _, seq)| (id.to_string(), *seq))
            .collect()
    }
}

impl TenantStore<'_> {
    /// The state of each of the tenant's devices the filter admits and, when `after` is given,
    /// the retained events it admits recorded after that one: those of its device numbered
    /// after it, and those of every other device stamped at most [`TENANT_REWIND`] before it or
    /// later. An `after` the store does not hold for this tenant replays everything retained.
    pub async fn resume_tenant_events(
        &self,
        filter: &EventFilter,
        after: Option<Uuid>,
    ) -> Result<TenantResumption, StoreError> {
        let tenant = self.tenant;
        let mut client = self.store.client().await?;
        let tx = Tx::begin(
            &mut client,
            format!("read the events of tenant {tenant} to resume a stream"),
        )
        .await?;
        // Both reads in one snapshot, so the devices' counters number exactly what the replay
        // holds.
        tx.execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            &[],
        )
        .await?;
        let devices = filter.device_names();
        let rows = tx
            .query(
                "SELECT device_id, state, event_seq FROM devices
                 WHERE tenant_id = $1 AND ($2::text[] IS NULL OR device_id = ANY($2))
                 ORDER BY device_id",
                &[&tenant.0, &devices],
            )
            .await?;
        let mut states = Vec::with_capacity(rows.len());
        for row in &rows {
            let raw: &str = row.get(0);
            let id = DeviceId::parse(raw).map_err(|e| {
                StoreError::Corrupt(format!("tenant {tenant} has a device id `{raw}`: {e}"))
            })?;
            let state = stored_state(tenant, &id, row.get(1))?;
            states.push((id, state, row.get(2)));
        }
        let replay = match after {
            None => Vec::new(),
            Some(after) => {
                let rewind = TENANT_REWIND.as_secs_f64();
                tx.query(
                    "WITH last AS (SELECT device_id, seq, occurred_at FROM events
                                   WHERE id = $4 AND tenant_id = $1)
                     SELECT e.id, e.seq, e.type, e.body, e.occurred_at, e.device_id
                     FROM events e LEFT JOIN last ON true
                     WHERE e.tenant_id = $1 AND e.device_id IS NOT NULL
                       AND ($2::text[] IS NULL OR e.type = ANY($2))
                       AND ($3::text[] IS NULL OR e.device_id = ANY($3))
                       AND (last.device_id IS NULL
                            OR (e.device_id = last.device_id AND e.seq > last.seq)
                            OR (e.device_id <> last.device_id
                                AND e.occurred_at >= last.occurred_at
                                                     - make_interval(secs => $5)))
                     ORDER BY e.occurred_at, e.device_id, e.seq",
                    &[&tenant.0, &filter.types, &devices, &after, &rewind],
                )
                .await?
                .iter()
                .filter_map(|row| recorded(tenant, row, 0))
                .collect()
            }
        };
        tx.commit().await?;
        Ok(TenantResumption {
            devices: states,
            replay,
        })
    }
}

impl TenantStore<'_> {
    /// The events of the tenant's device `device` numbered `first` to `last`, in order: what
    /// another node's commit recorded, for this node's streams.
    pub async fn events_between(
        &self,
        device: &str,
        first: i64,
        last: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let tenant = self.tenant;
        Ok(self
            .store
            .query(
                &format!("read events {first}–{last} of device `{device}` of tenant {tenant}"),
                "SELECT id, seq, type, body, occurred_at, device_id FROM events
                 WHERE tenant_id = $1 AND device_id = $2 AND seq BETWEEN $3 AND $4
                 ORDER BY seq",
                &[&tenant.0, &device, &first, &last],
            )
            .await?
            .iter()
            .filter_map(|row| recorded(tenant, row, 0))
            .collect())
    }
}

/// The event in `row` from column `first` on (id, seq, type, body, occurred_at, device_id);
/// `None` where the id is null (a device without events in a left join).
fn recorded(tenant: TenantId, row: &Row, first: usize) -> Option<RecordedEvent> {
    Some(RecordedEvent {
        id: row.get::<_, Option<Uuid>>(first)?,
        tenant,
        seq: row.get(first + 1),
        event_type: row.get(first + 2),
        body: row.get::<_, String>(first + 3).into(),
        occurred_at: row.get(first + 4),
        device_id: row.get(first + 5),
        relayed: false,
    })
}
