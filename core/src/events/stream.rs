//! A device's events as a live stream: its state when the stream opens, the recorded events
//! after the one the reader saw last (replayed from the store), then the events recorded from
//! now on (from the bus), with no gap and no duplicate where the replay meets the bus.
//!
//! Invariant: the bus is subscribed before the store is read, so every event committed after
//! that read reaches the stream from the bus; the read's snapshot numbers the newest event it
//! holds, and the bus's events at or below that number are dropped as already sent.

use futures_util::Stream;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{EventBus, WireEvent};
use crate::domain::{DeviceId, DeviceState, TenantId};
use crate::store::{RecordedEvent, Resumption, Store, StoreError};

/// One item of a device's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// The device's state when the stream opened; always first.
    State(DeviceState),
    /// A recorded event, with the JSON envelope webhooks deliver for it.
    Event(RecordedEvent),
    /// The reader fell so far behind that events were dropped for it: the stream ends here, and
    /// the reader resumes after `last_id` (the last event it was sent), losing nothing.
    Behind {
        /// The last event the stream sent, if any.
        last_id: Option<Uuid>,
    },
}

/// Opens the stream of `device`'s events, resuming after event `after` when given; `None` when
/// the tenant has no such device.
pub async fn device_stream(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    device: &DeviceId,
    after: Option<Uuid>,
) -> Result<Option<impl Stream<Item = StreamItem> + Send + 'static>, StoreError> {
    // Before the read: see the module's invariant.
    let live = bus.subscribe();
    let Some(resumption) = store.tenant(tenant).resume_events(device, after).await? else {
        return Ok(None);
    };
    Ok(Some(items(resumption, live, tenant, device.clone())))
}

/// What the stream yields next from the bus.
struct Live {
    events: broadcast::Receiver<WireEvent>,
    tenant: TenantId,
    device: DeviceId,
    last_seq: i64,
    last_id: Option<Uuid>,
    ended: bool,
}

fn items(
    resumption: Resumption,
    events: broadcast::Receiver<WireEvent>,
    tenant: TenantId,
    device: DeviceId,
) -> impl Stream<Item = StreamItem> + Send + 'static {
    let last_id = resumption.replay.last().map(|e| e.id);
    let head = std::iter::once(StreamItem::State(resumption.state))
        .chain(resumption.replay.into_iter().map(StreamItem::Event));
    let live = Live {
        events,
        tenant,
        device,
        last_seq: resumption.last_seq,
        last_id,
        ended: false,
    };
    futures_util::StreamExt::chain(
        futures_util::stream::iter(head),
        futures_util::stream::unfold(live, next_live),
    )
}

async fn next_live(mut live: Live) -> Option<(StreamItem, Live)> {
    if live.ended {
        return None;
    }
    loop {
        match live.events.recv().await {
            Ok(event) => {
                let ours = event.tenant == live.tenant.0
                    && event.device_id.as_deref() == Some(live.device.as_str());
                if !ours || event.seq <= live.last_seq {
                    continue;
                }
                live.last_seq = event.seq;
                live.last_id = Some(event.id);
                let item = StreamItem::Event(RecordedEvent {
                    id: event.id,
                    seq: event.seq,
                    body: serde_json::to_string(&event).expect("a JSON value serialises"),
                    event_type: event.event_type,
                });
                return Some((item, live));
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                live.ended = true;
                let item = StreamItem::Behind {
                    last_id: live.last_id,
                };
                return Some((item, live));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}
