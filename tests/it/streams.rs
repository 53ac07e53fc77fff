//! `GET /devices/{device_id}/login/events`: a device's events as Server-Sent Events over real
//! HTTP, in the outbox's order and with its ids, resumable with `Last-Event-ID`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::sse::{EventStream, Message};
use crate::support::{Gateway, showing_qr};

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
