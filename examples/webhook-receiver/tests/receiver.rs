//! The receiver over real HTTP, signed the way wagate signs its deliveries.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};
use reqwest::StatusCode;
use serde_json::json;
use standardwebhooks::Webhook;
use tokio::sync::broadcast::Receiver as Lines;
use tokio::sync::broadcast::error::TryRecvError;
use wagate_webhook_receiver::{Handled, Receiver, app};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A receiver served on a free loopback port, and what it has handled so far.
struct Running {
    url: String,
    handled: Lines<Handled>,
    client: reqwest::Client,
}

async fn start() -> Running {
    let receiver = Arc::new(Receiver::new(SECRET).expect("the test secret is valid"));
    let handled = receiver.subscribe();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind a loopback port");
    let addr = *acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("a tcp listener has a socket address");
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app(receiver)));
    Running {
        url: format!("http://{addr}/webhook"),
        handled,
        client: reqwest::Client::new(),
    }
}

impl Running {
    /// Posts `body` as wagate would, signed with `secret`.
    async fn deliver(&self, webhook_id: &str, body: &str, secret: &str) -> reqwest::Response {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs() as i64;
        let signature = Webhook::new(secret)
            .expect("the test secret is valid")
            .sign(webhook_id, timestamp, body.as_bytes())
            .expect("the body is utf-8");
        self.client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("the receiver answers")
    }

    /// What was handled; the receiver handles before it answers, so nothing is still in flight.
    fn handled_so_far(&mut self) -> Vec<Handled> {
        let mut all = Vec::new();
        loop {
            match self.handled.try_recv() {
                Ok(handled) => all.push(handled),
                Err(TryRecvError::Empty) => return all,
                Err(err) => panic!("the subscription broke: {err}"),
            }
        }
    }
}

fn logged_in(event_id: &str) -> String {
    json!({
        "id": event_id,
        "type": "logged_in",
        "tenant": "7d0e2a52-6a1c-4c43-9c1e-3f7f5b0f6a11",
        "device_id": "phone-1",
        "seq": 4,
        "occurred_at": "2025-01-02T03:04:05Z",
        "data": {
            "jid": "15551234567@s.whatsapp.net",
            "lid": null,
            "push_name": "Ada",
            "platform": "android"
        }
    })
    .to_string()
}

const EVENT_ID: &str = "0b9f8a3e-5a3c-4f5e-9d67-2f4f3b1c8e01";

#[tokio::test]
async fn a_signed_logged_in_event_is_handled_with_its_login_line() {
    let mut receiver = start().await;

    let response = receiver
        .deliver(EVENT_ID, &logged_in(EVENT_ID), SECRET)
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let handled = receiver.handled_so_far();
    assert_eq!(handled.len(), 1);
    assert_eq!(
        handled[0].line,
        "device phone-1 logged in as 15551234567@s.whatsapp.net"
    );
    assert_eq!(handled[0].webhook_id, EVENT_ID);
    assert_eq!(handled[0].event_type, "logged_in");
    assert_eq!(handled[0].device_id.as_deref(), Some("phone-1"));
}

#[tokio::test]
async fn a_bad_signature_is_refused_with_401_and_not_handled() {
    let mut receiver = start().await;

    let response = receiver
        .deliver(EVENT_ID, &logged_in(EVENT_ID), OTHER_SECRET)
        .await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let reason = response.text().await.expect("a plain-text reason");
    assert!(reason.contains("signature"), "reason: {reason}");
    assert!(receiver.handled_so_far().is_empty());
}

#[tokio::test]
async fn the_same_webhook_id_twice_is_handled_once() {
    let mut receiver = start().await;
    let body = logged_in(EVENT_ID);

    let first = receiver.deliver(EVENT_ID, &body, SECRET).await;
    let retry = receiver.deliver(EVENT_ID, &body, SECRET).await;

    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(receiver.handled_so_far().len(), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_400() {
    let mut receiver = start().await;

    let response = receiver.deliver(EVENT_ID, "not json", SECRET).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(receiver.handled_so_far().is_empty());
}
