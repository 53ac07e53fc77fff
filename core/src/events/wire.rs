//! The one JSON form of an event that webhooks, plugins and live subscribers share:
//! `{"id", "type", "tenant", "device_id", "seq", "occurred_at", "data"}`.
//!
//! Changing a field's name or meaning breaks every consumer; new fields may be added to `data`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::EngineEventKind;

/// The type of the event an endpoint's `test` call sends.
pub const PING: &str = "ping";

/// Every event type a webhook endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 10] = [
    "qr_refreshed",
    "pair_code_issued",
    "logged_in",
    "logged_out",
    "login_failed",
    "state_changed",
    "passkey_requested",
    "passkey_confirmation",
    "app_state_sync_failed",
    "client_expiring",
];

/// An event as consumers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Unique; the same on every retry and replay (the webhook's `webhook-id`).
    pub id: Uuid,
    /// `qr_refreshed`, `logged_in`, …, or `ping`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The tenant the device belongs to.
    pub tenant: Uuid,
    /// The device; `None` for pings.
    pub device_id: Option<String>,
    /// Increases by one with each event of the device; 0 for pings.
    pub seq: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// What happened; its shape depends on `type`.
    pub data: Value,
}

/// An event about to be recorded; the store gives it its id, number and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The wire type.
    pub event_type: &'static str,
    /// The wire `data`.
    pub data: Value,
    /// When the event stops being worth delivering (a QR code's expiry).
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewEvent {
    /// The wire form of an engine event.
    pub fn from_kind(kind: &EngineEventKind) -> Self {
        let mut expires = None;
        let data = match kind {
            EngineEventKind::QrRefreshed {
                qr_code,
                link,
                expires_at,
                index,
                refreshed,
            } => {
                expires = Some(*expires_at);
                json!({
                    "qr_code": qr_code,
                    "qr_link": link,
                    "expires_at": expires_at,
                    "index": index,
                    "refreshed": refreshed,
                })
            }
            EngineEventKind::PairCodeIssued {
                pair_code,
                expires_at,
            } => json!({ "pair_code": pair_code, "expires_at": expires_at }),
            EngineEventKind::LoggedIn {
                jid,
                lid,
                push_name,
                platform,
                business_name,
            } => json!({
                "jid": jid,
                "lid": lid,
                "push_name": push_name,
                "platform": platform,
                "business_name": business_name,
            }),
            EngineEventKind::PasskeyRequested { request_options } => {
                json!({ "request_options": request_options })
            }
            EngineEventKind::PasskeyConfirmation { code, show_code } => {
                json!({ "code": code, "show_code": show_code })
            }
            EngineEventKind::AppStateSyncFailed {
                fatal,
                retryable,
                connected,
            } => json!({ "fatal": fatal, "retryable": retryable, "connected": connected }),
            EngineEventKind::ClientExpiring { expires_at } => json!({ "expires_at": expires_at }),
            EngineEventKind::LoggedOut { reason } => json!({ "reason": reason }),
            EngineEventKind::LoginFailed { reason } => json!({ "reason": reason.as_str() }),
            EngineEventKind::StateChanged { from, to } => json!({ "from": from, "to": to }),
        };
        Self {
            event_type: kind.name(),
            data,
            expires_at: expires,
        }
    }

    /// The event an endpoint's `test` call sends.
    pub fn ping() -> Self {
        Self {
            event_type: PING,
            data: json!({ "message": "a test event from wagate" }),
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceState;

    #[test]
    fn every_subscribable_type_is_an_engine_event_name() {
        let kind = EngineEventKind::StateChanged {
            from: DeviceState::Connecting,
            to: DeviceState::Connected,
        };
        assert!(EVENT_TYPES.contains(&kind.name()));
        assert!(!EVENT_TYPES.contains(&PING));
    }

    #[test]
    fn a_qr_event_carries_the_public_link_and_expires_with_its_code() {
        let expires_at = Utc::now();
        let link = "https://wa.example.com/statics/images/qrcode/scan-qr-1.png";
        let event = NewEvent::from_kind(&EngineEventKind::QrRefreshed {
            qr_code: "2@abc".into(),
            link: link.into(),
            expires_at,
            index: 2,
            refreshed: false,
        });
        assert_eq!(event.event_type, "qr_refreshed");
        assert_eq!(event.expires_at, Some(expires_at));
        assert_eq!(event.data["qr_link"], link);
        assert_eq!(event.data["index"], 2);
    }

    #[test]
    fn state_changes_name_both_states() {
        let event = NewEvent::from_kind(&EngineEventKind::StateChanged {
            from: DeviceState::Connected,
            to: DeviceState::LoggedIn,
        });
        assert_eq!(
            event.data,
            json!({ "from": "connected", "to": "logged_in" })
        );
    }
}
