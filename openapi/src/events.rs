//! The event payloads webhooks deliver, as schemas: the delivery log shows each event in this
//! form, so the spec documents exactly what endpoints receive.
//!
//! The JSON itself is made by `wagate_core::events::wire`; reading every logged event back
//! through these types (the delivery log does) keeps the two in step.

use chrono::{DateTime, Utc};
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{Enum, Object, Union};
use uuid::Uuid;

use crate::devices::DeviceStateName;

/// `data` of `qr_refreshed`: a new QR code is showing.
#[derive(Debug, Clone, Object)]
pub struct QrRefreshedData {
    /// The QR string to render.
    pub qr_code: String,
    /// A PNG of it, served without auth until it expires.
    pub qr_link: String,
    /// When the code stops being scannable.
    pub expires_at: DateTime<Utc>,
    /// Its position in the series, from 0.
    pub index: u32,
}

/// `data` of `pair_code_issued`: a pairing code was issued.
#[derive(Debug, Clone, Object)]
pub struct PairCodeIssuedData {
    /// `XXXX-XXXX`, to enter on the phone.
    pub pair_code: String,
    /// When it stops being usable.
    pub expires_at: DateTime<Utc>,
}

/// `data` of `logged_in`: the device is linked and usable.
#[derive(Debug, Clone, Object)]
pub struct LoggedInData {
    /// The account's device JID, e.g. `628912344551:3@s.whatsapp.net`.
    pub jid: String,
    /// The account's LID, when known.
    pub lid: Option<String>,
    /// The account's display name, when known.
    pub push_name: Option<String>,
    /// The phone's platform, e.g. `android`, when it said.
    pub platform: Option<String>,
}

/// `data` of `logged_out`: the device is no longer linked.
#[derive(Debug, Clone, Object)]
pub struct LoggedOutData {
    /// `logout` (the API), `unlinked_from_phone`, or `session_rejected` (WhatsApp refused the
    /// stored session).
    pub reason: String,
}

/// Why a login attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LoginFailureReason {
    /// Every QR code of the series expired unscanned.
    QrExhausted,
    /// WhatsApp refused the pairing code, or the code entered was wrong.
    PairCodeRejected,
    /// WhatsApp did not answer in time.
    Timeout,
    /// WhatsApp considers this client too old.
    ClientOutdated,
}

/// `data` of `login_failed`: a login attempt ended without a linked device.
#[derive(Debug, Clone, Object)]
pub struct LoginFailedData {
    /// Why.
    pub reason: LoginFailureReason,
}

/// `data` of `state_changed`: the device moved between states.
#[derive(Debug, Clone, Object)]
pub struct StateChangedData {
    /// The previous state.
    pub from: DeviceStateName,
    /// The new state.
    pub to: DeviceStateName,
}

/// `data` of `ping`: the event `POST /webhooks/{id}/test` sends.
#[derive(Debug, Clone, Object)]
pub struct PingData {
    /// A note for people.
    pub message: String,
}

/// Declares the envelope of one event type.
macro_rules! event {
    ($(#[$doc:meta])* $name:ident, $data:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Object)]
        pub struct $name {
            /// Unique, and the same on every retry: the `webhook-id` header. De-duplicate by it.
            pub id: Uuid,
            /// The tenant the device belongs to.
            pub tenant: Uuid,
            /// The device; null for `ping`.
            pub device_id: Option<String>,
            /// Increases by one with each event of the device (0 for `ping`): order by it.
            pub seq: i64,
            /// When it happened.
            pub occurred_at: DateTime<Utc>,
            /// What happened.
            pub data: $data,
        }
    };
}

event!(
    /// A new QR code is showing; deliveries of it expire with the code.
    QrRefreshedEvent,
    QrRefreshedData
);
event!(
    /// A pairing code was issued.
    PairCodeIssuedEvent,
    PairCodeIssuedData
);
event!(
    /// The device is linked and usable.
    LoggedInEvent,
    LoggedInData
);
event!(
    /// The device was logged out (from the API or the phone).
    LoggedOutEvent,
    LoggedOutData
);
event!(
    /// A login attempt failed.
    LoginFailedEvent,
    LoginFailedData
);
event!(
    /// The device moved between states.
    StateChangedEvent,
    StateChangedData
);
event!(
    /// A test event.
    PingEvent,
    PingData
);

/// An event as a webhook endpoint receives it (the request body); `type` says which.
#[derive(Debug, Clone, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum WebhookEvent {
    /// `qr_refreshed`.
    #[oai(mapping = "qr_refreshed")]
    QrRefreshed(QrRefreshedEvent),
    /// `pair_code_issued`.
    #[oai(mapping = "pair_code_issued")]
    PairCodeIssued(PairCodeIssuedEvent),
    /// `logged_in`.
    #[oai(mapping = "logged_in")]
    LoggedIn(LoggedInEvent),
    /// `logged_out`.
    #[oai(mapping = "logged_out")]
    LoggedOut(LoggedOutEvent),
    /// `login_failed`.
    #[oai(mapping = "login_failed")]
    LoginFailed(LoginFailedEvent),
    /// `state_changed`.
    #[oai(mapping = "state_changed")]
    StateChanged(StateChangedEvent),
    /// `ping`.
    #[oai(mapping = "ping")]
    Ping(PingEvent),
}

impl WebhookEvent {
    /// Reads a recorded event body; `None` if it is not one of the documented events.
    pub fn from_body(body: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        Self::parse_from_json(Some(value)).ok()
    }
}
