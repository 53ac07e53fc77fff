//! An example consumer of wagate's webhooks: it checks each delivery's Standard Webhooks
//! signature, drops redeliveries by `webhook-id`, and turns every event into one line of text.
//!
//! Embed it with [`app`], or run the binary of this crate.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use poem::http::{HeaderMap, StatusCode};
use poem::web::Data;
use poem::{Body, Endpoint, EndpointExt, Response, Route, handler, post};
use serde::Deserialize;
use standardwebhooks::{HEADER_WEBHOOK_ID, Webhook, WebhookError};
use tokio::sync::broadcast;

/// How many delivery ids are remembered for de-duplication.
///
/// wagate retries for a while, not forever, so a bounded window is enough and keeps memory flat.
pub const REMEMBERED_IDS: usize = 10_000;

/// Bodies above this are refused before verification; wagate's events are a few hundred bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Lines a slow subscriber may fall behind before it starts missing some.
const SUBSCRIBER_BACKLOG: usize = 256;

/// Why a webhook secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The secret does not start with `whsec_`.
    MissingPrefix,
    /// The part after `whsec_` is not standard base64, or is empty.
    InvalidKey,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPrefix => f.write_str(
                "the webhook secret must start with whsec_: use the results.secret wagate \
                 returned when the webhook was registered",
            ),
            Self::InvalidKey => f.write_str(
                "the webhook secret is not whsec_ followed by base64: copy results.secret \
                 from wagate again, whole and unchanged",
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// One event that was verified, seen for the first time, and handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The delivery's `webhook-id`: the same on every retry of the event.
    pub webhook_id: String,
    /// The event's `type`, such as `logged_in` or `ping`.
    pub event_type: String,
    /// The device the event is about; `None` for pings.
    pub device_id: Option<String>,
    /// The line printed for the event.
    pub line: String,
}

/// Verifies, de-duplicates and handles wagate webhook deliveries.
pub struct Receiver {
    webhook: Webhook,
    seen: Mutex<SeenIds>,
    handled: broadcast::Sender<Handled>,
}

impl fmt::Debug for Receiver {
    // Written by hand so that the key can never end up in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver for the endpoint whose secret is `secret` (`whsec_` followed by base64).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let key = secret
            .strip_prefix("whsec_")
            .ok_or(SecretError::MissingPrefix)?;
        // `Webhook::new` would also take a bare base64 key, or an empty one, and then reject every
        // delivery as badly signed; refusing here points at the real mistake instead.
        if key.is_empty() {
            return Err(SecretError::InvalidKey);
        }
        let webhook = Webhook::new(secret).map_err(|_| SecretError::InvalidKey)?;
        let (handled, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        Ok(Self {
            webhook,
            seen: Mutex::new(SeenIds::new(REMEMBERED_IDS)),
            handled,
        })
    }

    /// Every event handled from now on; duplicates and refused deliveries are not sent.
    pub fn subscribe(&self) -> broadcast::Receiver<Handled> {
        self.handled.subscribe()
    }

    fn receive(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(err) = self.webhook.verify(body, headers) {
            return refusal(err);
        }
        // verify() has just read this header, so it is present and text.
        let Some(webhook_id) = headers.get(HEADER_WEBHOOK_ID).and_then(|v| v.to_str().ok()) else {
            return plain(StatusCode::UNAUTHORIZED, "missing webhook-id header");
        };
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(envelope) => envelope,
            Err(err) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a wagate event envelope: {err}"),
                );
            }
        };
        let line = match describe(&envelope) {
            Ok(line) => line,
            Err(reason) => return plain(StatusCode::BAD_REQUEST, reason),
        };
        // Only well-formed events are remembered, so a broken delivery does not shadow a good
        // retry; checking and recording in one step keeps concurrent retries from both passing.
        if !self.lock_seen().insert(webhook_id) {
            return plain(StatusCode::OK, "already handled");
        }
        println!("{line}");
        // Nobody listening is the normal case for the binary, not an error.
        let _ = self.handled.send(Handled {
            webhook_id: webhook_id.to_owned(),
            event_type: envelope.event_type,
            device_id: envelope.device_id,
            line,
        });
        StatusCode::NO_CONTENT.into()
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, SeenIds> {
        // The set stays consistent even if a holder panicked, so poisoning is not a reason to fail.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The HTTP side of `receiver`: `POST /webhook`.
///
/// Answers 204 when the event was handled, 200 for a delivery already handled (so wagate stops
/// retrying it), 401 when the signature is missing, wrong or stale, and 400 when the body is not
/// an event envelope.
pub fn app(receiver: Arc<Receiver>) -> impl Endpoint {
    Route::new().at("/webhook", post(deliver)).data(receiver)
}

#[handler]
async fn deliver(receiver: Data<&Arc<Receiver>>, headers: &HeaderMap, body: Body) -> Response {
    // The signature covers the exact bytes sent, so the body is read raw rather than as JSON.
    match body.into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(bytes) => receiver.receive(headers, &bytes),
        Err(err) => plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("could not read the body: {err}"),
        ),
    }
}

/// The envelope every wagate event arrives in; fields this example does not use are still
/// required so that a body from something other than wagate is refused.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    tenant: String,
    device_id: Option<String>,
    seq: i64,
    occurred_at: String,
    data: serde_json::Map<String, serde_json::Value>,
}

fn describe(envelope: &Envelope) -> Result<String, &'static str> {
    let device = envelope.device_id.as_deref().unwrap_or("-");
    Ok(match envelope.event_type.as_str() {
        "logged_in" => {
            let jid = envelope
                .data
                .get("jid")
                .and_then(serde_json::Value::as_str)
                .ok_or("a logged_in event needs a string data.jid")?;
            format!("device {device} logged in as {jid}")
        }
        "ping" => "ping received".to_owned(),
        // Types added to wagate later still get a line instead of a refusal.
        other => format!("device {device}: {other}"),
    })
}

fn refusal(err: WebhookError) -> Response {
    let reason = match err {
        WebhookError::MissingHeader(name) => {
            format!("missing webhook-{name} header: send Standard Webhooks headers")
        }
        WebhookError::InvalidHeader(name) => format!("webhook-{name} header is not plain text"),
        WebhookError::InvalidTimestamp => "webhook-timestamp must be unix seconds".to_owned(),
        WebhookError::TimestampTooOldError => {
            "webhook-timestamp is more than 5 minutes old: check both clocks".to_owned()
        }
        WebhookError::FutureTimestampError => {
            "webhook-timestamp is more than 5 minutes ahead: check both clocks".to_owned()
        }
        WebhookError::InvalidSignature => {
            "signature does not match: check the secret is the one of this webhook".to_owned()
        }
        // Signatures are computed over UTF-8 text, so other bytes cannot be an event at all.
        WebhookError::InvalidPayload => {
            return plain(StatusCode::BAD_REQUEST, "the body must be utf-8 json");
        }
        WebhookError::InvalidSecret(_) => "signature could not be checked".to_owned(),
    };
    plain(StatusCode::UNAUTHORIZED, reason)
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(text.into())
}

/// The most recent delivery ids, oldest first in `order`, all of them in `ids`.
struct SeenIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `id`; false when it was already among the remembered ones.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_is_forgotten_once_the_window_is_full() {
        let mut seen = SeenIds::new(2);
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("c"));
        assert!(seen.insert("a"));
        assert!(!seen.insert("c"));
        assert_eq!(seen.ids.len(), 2);
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_refused() {
        let err = Receiver::new("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_err();
        assert_eq!(err, SecretError::MissingPrefix);
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused() {
        assert_eq!(
            Receiver::new("whsec_not base64!").unwrap_err(),
            SecretError::InvalidKey
        );
    }
}
