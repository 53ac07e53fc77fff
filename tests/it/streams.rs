//! `GET /devices/{device_id}/login/events` and `GET /events`: a device's and a tenant's events as
//! Server-Sent Events over real HTTP, in the outbox's order and with its ids, resumable with
//! `Last-Event-ID`; a reader that stops reading is closed without holding anyone else up.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use serde_json::json;
use wagate_core::domain::DeviceId;
use wagate_core::events::NewEvent;
use wagate_core::store::DeviceChange;

use crate::support::sse::{EventStream, Message};
use crate::support::{Gateway, Options, showing_qr};

const WAIT: Duration = Duration::from_secs(15);

/// Reads messages until one of type `event` (included).
async fn until(stream: &mut EventStream, event: &str) -> Vec<Message> {
    let mut read = Vec::new();
    while let Some(message) = stream.next(WAIT).await {
        let done = message.event == event;
        read.push(message);
        if done {
            return read;
        }
    }
    panic!("the stream ended before `{event}`: {read:?}");
}

/// The ids of the event messages among `messages`.
fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().filter_map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_login_is_seen_on_the_device_stream_in_the_outboxs_order_with_its_ids() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;

    let mut stream = api
        .stream("/devices/d1/login/events", None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let opened = stream.next(WAIT).await.expect("the state first");
    let qr = showing_qr(&api, "d1").await;
    gateway.sandbox.scan_qr(&qr).await.expect("linked");
    let read = until(&mut stream, "logged_in").await;

    assert!(stream.content_type().starts_with("text/event-stream"));
    assert_eq!(opened.event, "state");
    assert_eq!(opened.data["device_id"], "d1");
    assert_eq!(opened.data["state"], "disconnected");
    let outbox = gateway.recorded_envelopes(tenant, "d1").await;
    let outbox_ids: Vec<String> = outbox
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(ids(&read), outbox_ids, "every event, once, in order");
    for (message, envelope) in read.iter().zip(&outbox) {
        assert_eq!(message.event, envelope["type"].as_str().unwrap_or_default());
        assert_eq!(&message.data, envelope, "the envelope webhooks deliver");
    }
    assert!(read.iter().any(|m| m.event == "qr_refreshed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_reconnects_with_last_event_id_misses_nothing_and_gets_nothing_twice() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let mut first = api
        .stream("/devices/d1/login/events", None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    first.next(WAIT).await.expect("the state");
    let qr = showing_qr(&api, "d1").await;

    // Gone mid-series, after the first code; the login goes on meanwhile.
    let before = until(&mut first, "qr_refreshed").await;
    drop(first);
    gateway.sandbox.scan_qr(&qr).await.expect("linked");
    api.wait_logged_in("d1").await;
    let last_seen = ids(&before).pop().expect("an event id");
    let mut second = api
        .stream("/devices/d1/login/events", Some(&last_seen))
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let resumed = until(&mut second, "logged_in").await;

    assert_eq!(resumed[0].event, "state");
    assert_eq!(resumed[0].data["state"], "logged_in");
    let mut union = ids(&before);
    union.extend(ids(&resumed));
    let outbox: Vec<String> = gateway
        .recorded_envelopes(tenant, "d1")
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(
        union, outbox,
        "the two streams together are the outbox, once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_device_has_no_stream_and_a_bad_last_event_id_is_refused() {
    let gateway = Gateway::start().await;
    let owner = gateway.tenant("acme").await;
    let other = gateway.tenant("globex").await;
    owner.create_device("d1").await;

    let foreign = other
        .stream("/devices/d1/login/events", None)
        .await
        .err()
        .expect("not a stream");
    let bad = owner
        .stream("/devices/d1/login/events", Some("not-an-id"))
        .await
        .err()
        .expect("not a stream");

    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    assert_eq!(foreign.code(), "DEVICE_NOT_FOUND");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    assert!(
        bad.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Last-Event-ID")),
        "{}",
        bad.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_credentials() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let anonymous = gateway
        .anonymous()
        .stream("/devices/d1/login/events", None)
        .await
        .err()
        .expect("not a stream");

    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["code"], Value::from("AUTHENTICATION_ERROR"));
}

/// The types of the event messages among `messages`, with their device.
fn typed(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .filter(|m| m.id.is_some())
        .map(|m| {
            let device = m.data["device_id"].as_str().unwrap_or_default().to_string();
            (device, m.event.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_stream_shows_every_devices_login_and_its_filters_narrow_it() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    api.create_device("d2").await;

    let mut all = api
        .stream("/events", None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let mut narrow = api
        .stream("/events?types=logged_in,login_failed&device_ids=d2", None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let all_states = [all.next(WAIT).await, all.next(WAIT).await];
    let narrow_state = narrow.next(WAIT).await.expect("d2's state");
    gateway.scan_login(&api, "d1").await;
    gateway.scan_login(&api, "d2").await;
    let mut seen = until(&mut all, "logged_in").await;
    seen.extend(until(&mut all, "logged_in").await);
    let narrowed = until(&mut narrow, "logged_in").await;

    let states: Vec<(Value, Value)> = all_states
        .iter()
        .map(|m| {
            let m = m.as_ref().expect("a state");
            assert_eq!(m.event, "state");
            (m.data["device_id"].clone(), m.data["state"].clone())
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (json!("d1"), json!("disconnected")),
            (json!("d2"), json!("disconnected"))
        ]
    );
    let logins: Vec<_> = typed(&seen)
        .into_iter()
        .filter(|(_, t)| t == "logged_in")
        .collect();
    assert_eq!(
        logins,
        vec![
            ("d1".into(), "logged_in".into()),
            ("d2".into(), "logged_in".into())
        ]
    );
    assert!(
        typed(&seen)
            .iter()
            .any(|(d, t)| d == "d1" && t == "qr_refreshed")
    );
    assert_eq!(narrow_state.event, "state");
    assert_eq!(narrow_state.data["device_id"], "d2");
    assert_eq!(typed(&narrowed), vec![("d2".into(), "logged_in".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_stream_refuses_an_unknown_type_or_a_malformed_device_id() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let unknown = api
        .stream("/events?types=logged_in,teleported", None)
        .await
        .err()
        .expect("not a stream");
    let malformed = api
        .stream("/events?device_ids=not%20a%20device", None)
        .await
        .err()
        .expect("not a stream");

    for (answer, parameter) in [(&unknown, "types"), (&malformed, "device_ids")] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(parameter), "{message}");
    }
    assert!(
        unknown.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("teleported")),
        "{}",
        unknown.body
    );
}

/// How long the gateway of the stalled-reader test lets a connection take nothing.
const STALL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_closed_while_other_devices_log_in() {
    let gateway = Gateway::start_with(Options {
        write_stall: STALL,
        ..Options::default()
    })
    .await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    api.create_device("d2").await;
    let mut stalled = api.stalled_stream("/devices/d1/login/events").await;

    // Far more than the connection's buffers hold (about 10 MiB; a socket's send buffer may grow
    // to 4 MiB), fewer events than the bus
    // keeps for one reader: only the stalled connection can end this stream.
    let d1 = DeviceId::parse("d1").expect("an id");
    let padding = "x".repeat(12 * 1024);
    let mut last = None;
    for batch in 0..8 {
        let events = (0..100)
            .map(|i| NewEvent {
                event_type: "state_changed",
                data: json!({ "from": "connecting", "to": "connected", "n": batch * 100 + i,
                              "padding": padding }),
                expires_at: None,
            })
            .collect();
        let recorded = gateway
            .store
            .tenant(tenant)
            .record_events(&d1, DeviceChange::default(), events)
            .await
            .expect("recorded");
        for event in recorded {
            last = Some(event.id);
            gateway.manager.events().publish(event);
        }
    }
    let started = tokio::time::Instant::now();
    gateway.scan_login(&api, "d2").await;
    api.wait_logged_in("d2").await;
    let other_login = started.elapsed();
    // Nothing read meanwhile: the stall lasts well past the limit before the reader looks.
    tokio::time::sleep(STALL * 3).await;
    let rest = stalled
        .read_until_closed(Duration::from_secs(30))
        .await
        .expect("the gateway closed the stalled stream");

    println!("d2 logged in {other_login:?} after the flood began, beside the stalled reader");
    let last = last.expect("events").to_string();
    let received = String::from_utf8_lossy(&rest);
    assert!(
        received.contains("event: state_changed"),
        "some events got through"
    );
    assert!(
        !received.contains(&last),
        "closed with events unsent: the stream did not simply end"
    );
}
