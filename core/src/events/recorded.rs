//! An event as it was recorded: who it is about, and its envelope serialised once, at the
//! moment it was written to the outbox. The outbox row, the bus, the plugins and the streams all
//! carry these same bytes, so every consumer sees exactly what webhooks deliver.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::WireEvent;
use crate::domain::TenantId;

/// A recorded event, as every consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The event's id (the webhook's `webhook-id`, a stream's `Last-Event-ID`).
    pub id: Uuid,
    /// The tenant whose device it is about.
    pub tenant: TenantId,
    /// The device; `None` for pings.
    pub device_id: Option<String>,
    /// Its number among the device's events.
    pub seq: i64,
    /// Its type, e.g. `qr_refreshed`.
    pub event_type: String,
    /// When it was recorded.
    pub occurred_at: DateTime<Utc>,
    /// The JSON envelope ([`WireEvent`]), exactly as webhooks deliver it.
    pub body: Arc<str>,
    /// Recorded by another node and relayed to this one's streams; plugins see only the events
    /// of their own node.
    pub relayed: bool,
}

impl RecordedEvent {
    /// Serialises `event`'s envelope: the one place an event becomes bytes.
    pub fn of(event: &WireEvent) -> Self {
        let body = serde_json::to_string(event).expect("a JSON value serialises");
        Self {
            id: event.id,
            tenant: TenantId(event.tenant),
            device_id: event.device_id.clone(),
            seq: event.seq,
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
            body: body.into(),
            relayed: false,
        }
    }

    /// The envelope read back, for a consumer that needs its fields.
    pub fn envelope(&self) -> WireEvent {
        serde_json::from_str(&self.body).expect("a recorded body is an envelope")
    }
}
