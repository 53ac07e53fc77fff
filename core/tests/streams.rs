//! A device's live event stream against a real PostgreSQL: its state first, the replay after the
//! last event a reader saw, then the bus, with no gap and no duplicate at the seam, and a reader
//! that falls behind told where to resume.

mod support;

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::json;
use support::{add_device, device_id, store, tenant};
use uuid::Uuid;
use wagate_core::domain::{DeviceId, DeviceState, TenantId};
use wagate_core::events::stream::{StreamItem, device_stream};
use wagate_core::events::{EventBus, NewEvent, WireEvent};
use wagate_core::store::{DeviceChange, Store};

/// Records `n` events of `device`, as the engine does, and publishes them on `bus`.
async fn record(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    device: &DeviceId,
    n: usize,
) -> Vec<WireEvent> {
    let events = (0..n)
        .map(|i| NewEvent {
            event_type: "state_changed",
            data: json!({ "from": "connecting", "to": "connected", "n": i }),
            expires_at: None,
        })
        .collect();
    let recorded = store
        .tenant(tenant)
        .record_events(device, DeviceChange::default(), events)
        .await
        .expect("recorded");
    for event in &recorded {
        bus.publish(event.clone());
    }
    recorded
}

/// The next item, within a second.
async fn next(stream: &mut (impl Stream<Item = StreamItem> + Unpin)) -> StreamItem {
    tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("an item within a second")
        .expect("the stream goes on")
}

/// The id of an event item.
fn id_of(item: &StreamItem) -> Uuid {
    match item {
        StreamItem::Event(event) => event.id,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_stream_sends_the_state_then_only_what_happens_from_now_on() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let d1 = device_id("d1");
    add_device(&store, tenant, &d1).await;
    record(&store, &bus, tenant, &d1, 2).await;

    let stream = device_stream(&store, &bus, tenant, &d1, None)
        .await
        .expect("read")
        .expect("the device exists");
    let mut stream = Box::pin(stream);
    let first = next(&mut stream).await;
    let later = record(&store, &bus, tenant, &d1, 1).await;
    let second = next(&mut stream).await;

    assert_eq!(first, StreamItem::State(DeviceState::Disconnected));
    assert_eq!(id_of(&second), later[0].id);
    let StreamItem::Event(event) = second else {
        unreachable!()
    };
    let body: WireEvent = serde_json::from_str(&event.body).expect("the envelope");
    assert_eq!(body, later[0], "the envelope webhooks deliver");
}

#[tokio::test]
async fn a_resumed_stream_replays_what_came_after_the_last_event_seen_then_goes_live() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let d1 = device_id("d1");
    add_device(&store, tenant, &d1).await;
    let earlier = record(&store, &bus, tenant, &d1, 3).await;

    let stream = device_stream(&store, &bus, tenant, &d1, Some(earlier[0].id))
        .await
        .expect("read")
        .expect("the device exists");
    let mut stream = Box::pin(stream);
    let mut seen = Vec::new();
    assert!(matches!(next(&mut stream).await, StreamItem::State(_)));
    seen.push(id_of(&next(&mut stream).await));
    seen.push(id_of(&next(&mut stream).await));
    let later = record(&store, &bus, tenant, &d1, 2).await;
    seen.push(id_of(&next(&mut stream).await));
    seen.push(id_of(&next(&mut stream).await));

    let expected: Vec<Uuid> = earlier[1..]
        .iter()
        .chain(&later)
        .map(|event| event.id)
        .collect();
    assert_eq!(seen, expected, "each once, in order");
}

#[tokio::test]
async fn events_recorded_while_the_stream_opens_arrive_exactly_once() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let d1 = device_id("d1");
    add_device(&store, tenant, &d1).await;
    let first = record(&store, &bus, tenant, &d1, 1).await;

    // Recorded and published while the stream subscribes and reads: some reach it by the
    // replay, some by the bus, some by both.
    let writer = {
        let (store, bus) = (store.clone(), bus.clone());
        let d1 = d1.clone();
        tokio::spawn(async move { record(&store, &bus, tenant, &d1, 40).await })
    };
    let stream = device_stream(&store, &bus, tenant, &d1, Some(first[0].id))
        .await
        .expect("read")
        .expect("the device exists");
    let written = writer.await.expect("the writer finishes");
    let mut stream = Box::pin(stream);
    assert!(matches!(next(&mut stream).await, StreamItem::State(_)));
    let mut seen = Vec::new();
    for _ in 0..written.len() {
        seen.push(id_of(&next(&mut stream).await));
    }

    let expected: Vec<Uuid> = written.iter().map(|event| event.id).collect();
    assert_eq!(seen, expected);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "nothing more"
    );
}

#[tokio::test]
async fn another_devices_and_another_tenants_events_stay_out() {
    let (store, bus) = (store().await, EventBus::new());
    let (mine, theirs) = (tenant(&store).await.id, tenant(&store).await.id);
    let (d1, d2) = (device_id("d1"), device_id("d2"));
    add_device(&store, mine, &d1).await;
    add_device(&store, mine, &d2).await;
    add_device(&store, theirs, &d1).await;

    let stream = device_stream(&store, &bus, mine, &d1, None)
        .await
        .expect("read")
        .expect("the device exists");
    let mut stream = Box::pin(stream);
    next(&mut stream).await;
    record(&store, &bus, mine, &d2, 1).await;
    record(&store, &bus, theirs, &d1, 1).await;
    let own = record(&store, &bus, mine, &d1, 1).await;

    assert_eq!(id_of(&next(&mut stream).await), own[0].id);
    assert!(
        device_stream(&store, &bus, theirs, &device_id("d2"), None)
            .await
            .expect("read")
            .is_none(),
        "no stream of a device the tenant does not have"
    );
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_where_to_resume_and_the_stream_ends() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let d1 = device_id("d1");
    add_device(&store, tenant, &d1).await;
    let stream = device_stream(&store, &bus, tenant, &d1, None)
        .await
        .expect("read")
        .expect("the device exists");
    let mut stream = Box::pin(stream);
    next(&mut stream).await;
    let sent = record(&store, &bus, tenant, &d1, 1).await;
    assert_eq!(id_of(&next(&mut stream).await), sent[0].id);

    // More than the bus holds for one subscriber, while this reader reads nothing.
    let flood = record(&store, &bus, tenant, &d1, 1100).await;
    let behind = next(&mut stream).await;

    assert_eq!(
        behind,
        StreamItem::Behind {
            last_id: Some(sent[0].id)
        }
    );
    assert!(stream.next().await.is_none(), "the stream ends");
    // Resuming from there loses nothing.
    let resumed = device_stream(&store, &bus, tenant, &d1, Some(sent[0].id))
        .await
        .expect("read")
        .expect("the device exists");
    let replayed: Vec<Uuid> = Box::pin(resumed)
        .skip(1)
        .take(flood.len())
        .map(|item| id_of(&item))
        .collect()
        .await;
    assert_eq!(replayed, flood.iter().map(|e| e.id).collect::<Vec<_>>());
}
