//! Live event streams against a real PostgreSQL. A device's: its state first, the replay after
//! the last event a reader saw, then the bus, with no gap and no duplicate at the seam, and a
//! reader that falls behind told where to resume. A tenant's: every device's state, then the
//! events its filter admits, resumable without loss.

mod support;

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::json;
use support::{add_device, device_id, store, tenant};
use uuid::Uuid;
use wagate_core::domain::{DeviceId, DeviceState, TenantId};
use wagate_core::events::stream::{StreamItem, device_stream, tenant_stream};
use wagate_core::events::{EventBus, NewEvent, RecordedEvent};
use wagate_core::store::{DeviceChange, EventFilter, Store};

/// Records `n` events of `device`, as the engine does, and publishes them on `bus`.
async fn record(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    device: &DeviceId,
    n: usize,
) -> Vec<RecordedEvent> {
    record_typed(store, bus, tenant, device, "state_changed", n).await
}

/// Records `n` events of type `event_type` of `device` and publishes them on `bus`.
async fn record_typed(
    store: &Store,
    bus: &EventBus,
    tenant: TenantId,
    device: &DeviceId,
    event_type: &'static str,
    n: usize,
) -> Vec<RecordedEvent> {
    let events = (0..n)
        .map(|i| NewEvent {
            event_type,
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

    assert_eq!(
        first,
        StreamItem::State {
            device_id: "d1".into(),
            state: DeviceState::Disconnected
        }
    );
    assert_eq!(id_of(&second), later[0].id);
    let StreamItem::Event(event) = second else {
        unreachable!()
    };
    assert_eq!(event.body, later[0].body, "the envelope webhooks deliver");
    assert_eq!(event.envelope().id, later[0].id);
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
    assert!(matches!(next(&mut stream).await, StreamItem::State { .. }));
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
    assert!(matches!(next(&mut stream).await, StreamItem::State { .. }));
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

/// The states a tenant stream opens with, as (device, state), until its first event.
async fn opening_states(
    stream: &mut (impl Stream<Item = StreamItem> + Unpin),
    devices: usize,
) -> Vec<(String, DeviceState)> {
    let mut states = Vec::new();
    for _ in 0..devices {
        match next(stream).await {
            StreamItem::State { device_id, state } => states.push((device_id, state)),
            other => panic!("expected a state, got {other:?}"),
        }
    }
    states
}

#[tokio::test]
async fn a_tenant_stream_opens_with_every_devices_state_then_carries_all_their_events() {
    let (store, bus) = (store().await, EventBus::new());
    let (mine, theirs) = (tenant(&store).await.id, tenant(&store).await.id);
    let (d1, d2) = (device_id("d1"), device_id("d2"));
    add_device(&store, mine, &d2).await;
    add_device(&store, mine, &d1).await;
    add_device(&store, theirs, &d1).await;

    let stream = tenant_stream(&store, &bus, mine, EventFilter::default(), None)
        .await
        .expect("read");
    let mut stream = Box::pin(stream);
    let states = opening_states(&mut stream, 2).await;
    let a = record(&store, &bus, mine, &d2, 1).await;
    record(&store, &bus, theirs, &d1, 1).await;
    let b = record(&store, &bus, mine, &d1, 1).await;

    let disconnected = DeviceState::Disconnected;
    assert_eq!(
        states,
        vec![("d1".into(), disconnected), ("d2".into(), disconnected)]
    );
    assert_eq!(id_of(&next(&mut stream).await), a[0].id);
    assert_eq!(
        id_of(&next(&mut stream).await),
        b[0].id,
        "not the other tenant's"
    );
}

#[tokio::test]
async fn a_tenant_streams_filters_admit_only_the_named_types_and_devices() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let (d1, d2) = (device_id("d1"), device_id("d2"));
    add_device(&store, tenant, &d1).await;
    add_device(&store, tenant, &d2).await;
    let filter = EventFilter {
        types: Some(vec!["logged_in".into()]),
        devices: Some(vec![d2.clone()]),
    };

    let stream = tenant_stream(&store, &bus, tenant, filter, None)
        .await
        .expect("read");
    let mut stream = Box::pin(stream);
    let states = opening_states(&mut stream, 1).await;
    record_typed(&store, &bus, tenant, &d1, "logged_in", 1).await;
    record_typed(&store, &bus, tenant, &d2, "state_changed", 1).await;
    let wanted = record_typed(&store, &bus, tenant, &d2, "logged_in", 1).await;

    assert_eq!(states, vec![("d2".into(), DeviceState::Disconnected)]);
    assert_eq!(id_of(&next(&mut stream).await), wanted[0].id);
}

#[tokio::test]
async fn a_resumed_tenant_stream_loses_nothing_of_any_device() {
    let (store, bus) = (store().await, EventBus::new());
    let tenant = tenant(&store).await.id;
    let (d1, d2) = (device_id("d1"), device_id("d2"));
    add_device(&store, tenant, &d1).await;
    add_device(&store, tenant, &d2).await;
    let seen_last = record(&store, &bus, tenant, &d1, 2).await;
    let missed_1 = record(&store, &bus, tenant, &d2, 2).await;
    let missed_2 = record(&store, &bus, tenant, &d1, 1).await;

    let stream = tenant_stream(
        &store,
        &bus,
        tenant,
        EventFilter::default(),
        Some(seen_last[1].id),
    )
    .await
    .expect("read");
    let mut stream = Box::pin(stream);
    opening_states(&mut stream, 2).await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(id_of(&next(&mut stream).await));
    }
    let live = record(&store, &bus, tenant, &d2, 1).await;

    let mut expected: Vec<Uuid> = missed_1.iter().chain(&missed_2).map(|e| e.id).collect();
    expected.sort();
    replayed.sort();
    assert_eq!(replayed, expected, "what the reader missed, each once");
    assert_eq!(id_of(&next(&mut stream).await), live[0].id);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "nothing more: the events it saw are not sent again from its own device"
    );
}
