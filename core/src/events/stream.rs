//! Recorded events as live streams, of one device or of every device of a tenant: the states
//! when the stream opens, the recorded events after the one the reader saw last (replayed from
//! the store), then the events recorded from now on (from the bus), with no gap where the replay
//! meets the bus.
//!
//! Invariant: the bus is subscribed before the store is read, so every event committed after
//! that read reaches the stream from the bus; the read's snapshot numbers each device's newest
//! event, and the bus's events at or below that number are dropped as already sent.
//!
//! Each stream holds one bus receiver: a bounded buffer of its own that never holds the engine
//! back. A reader the bus leaves behind gets `Behind` and its stream ends.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{EventBus, RecordedEvent};
use crate::domain::{DeviceId, DeviceState, TenantId};
use crate::store::{EventFilter, Store, StoreError};

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A device's state when the stream opened; these come first.
    State {
        /// The device.
        device_id: String,
        /// Its state.
        state: DeviceState,
    },
    /// A recorded event, with the JSON envelope webhooks deliver for it.
    Event(Arc<RecordedEvent>),
    /// The reader fell so far behind that events were dropped for it: the stream ends here, and
    /// the reader resumes after `last_id` (the last event it was sent), losing nothing.
    Behind {
        /// The last event the stream sent, if any.
        last_id: Option<Uuid>,
    },
}

/// Opens the stream of `device`'s events, resuming after event `after` when given; `None` when
/// the tenant has no such device. Exactly once: no gap and no duplicate at the seam.
pub async fn device_stream(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    device: &DeviceId,
    after: Option<Uuid>,
) -> Result<Option<impl Stream<Item = StreamItem> + Send + 'static>, StoreError> {
    // Before the read: see the module's invariant.
    let events = bus.subscribe();
    let Some(resumption) = store.tenant(tenant).resume_events(device, after).await? else {
        return Ok(None);
    };
    let head = vec![StreamItem::State {
        device_id: device.to_string(),
        state: resumption.state,
    }];
    let live = Live {
        events,
        tenant,
        filter: EventFilter {
            types: None,
            devices: Some(vec![device.clone()]),
        },
        last_seqs: HashMap::from([(device.to_string(), resumption.last_seq)]),
        last_id: None,
        ended: false,
    };
    Ok(Some(items(head, resumption.replay, live)))
}

/// Opens the stream of the tenant's events that `filter` admits: a `State` for each device it
/// admits, then, when `after` is given, the retained events since then (those recorded shortly
/// before it may come again; see [`crate::store::TENANT_REWIND`]), then the live ones.
pub async fn tenant_stream(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    filter: EventFilter,
    after: Option<Uuid>,
) -> Result<impl Stream<Item = StreamItem> + Send + 'static, StoreError> {
    // Before the read: see the module's invariant.
    let events = bus.subscribe();
    let resumption = store
        .tenant(tenant)
        .resume_tenant_events(&filter, after)
        .await?;
    let last_seqs = resumption.last_seqs();
    let head = resumption
        .devices
        .into_iter()
        .map(|(id, state, _)| StreamItem::State {
            device_id: id.to_string(),
            state,
        })
        .collect();
    let live = Live {
        events,
        tenant,
        filter,
        last_seqs,
        last_id: None,
        ended: false,
    };
    Ok(items(head, resumption.replay, live))
}

/// What the stream yields next from the bus.
struct Live {
    events: broadcast::Receiver<Arc<RecordedEvent>>,
    tenant: TenantId,
    filter: EventFilter,
    /// Per device, the newest event number sent or known to be before the stream.
    last_seqs: HashMap<String, i64>,
    last_id: Option<Uuid>,
    ended: bool,
}

fn items(
    head: Vec<StreamItem>,
    replay: Vec<RecordedEvent>,
    mut live: Live,
) -> impl Stream<Item = StreamItem> + Send + 'static {
    live.last_id = replay.last().map(|e| e.id);
    let head = head.into_iter().chain(
        replay
            .into_iter()
            .map(|event| StreamItem::Event(Arc::new(event))),
    );
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
                let Some(device) = event.device_id.as_deref() else {
                    continue;
                };
                if event.tenant != live.tenant
                    || !live.filter.admits(Some(device), &event.event_type)
                {
                    continue;
                }
                let last = live.last_seqs.entry(device.to_string()).or_insert(0);
                if event.seq <= *last {
                    continue;
                }
                *last = event.seq;
                live.last_id = Some(event.id);
                return Some((StreamItem::Event(event), live));
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
