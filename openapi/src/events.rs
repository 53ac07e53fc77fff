//! The event payloads webhooks deliver, as schemas: the delivery log shows each event in this
//! form, so the spec documents exactly what endpoints receive.
//!
//! The JSON itself is made by `wagate_core::events::wire`; reading every logged event back
//! through these types (the delivery log does) keeps the two in step.

use poem_openapi::types::{Example, ParseError, ParseFromJSON, ParseResult, ToJSON};
use poem_openapi::{Enum, Object, Union};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::{DeviceStateName, example_time};
use crate::schema_as::schema_as;
use crate::timestamp::Timestamp;

/// The type of an event. Endpoints subscribe to every type but `ping`, which only
/// `POST /webhooks/{id}/test` sends, to that endpoint alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum EventType {
    /// A new QR code is showing.
    QrRefreshed,
    /// A pairing code was issued.
    PairCodeIssued,
    /// The device is linked and usable.
    LoggedIn,
    /// The device was logged out.
    LoggedOut,
    /// A login attempt failed.
    LoginFailed,
    /// The device moved between states.
    StateChanged,
    /// WhatsApp asks the account's passkey to confirm the link.
    PasskeyRequested,
    /// The passkey was accepted; the code to compare with the phone's.
    PasskeyConfirmation,
    /// An app-state sync left collections unsynced.
    AppStateSyncFailed,
    /// WhatsApp named the date this client version stops being accepted.
    ClientExpiring,
    /// A test event (not subscribable).
    Ping,
}

impl EventType {
    /// The type named `name` on the wire.
    pub fn parse(name: &str) -> Option<Self> {
        Self::parse_from_json(Some(Value::from(name))).ok()
    }
}

/// `data` of `qr_refreshed`: a new QR code is showing.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct QrRefreshedData {
    /// The QR string to render.
    pub qr_code: String,
    /// A PNG of it, served without auth until it expires.
    pub qr_link: String,
    /// When the code stops being scannable.
    pub expires_at: Timestamp,
    /// Its position in the series, from 0.
    pub index: u32,
    /// True when WhatsApp rotated the registration mid-series: the same position shown again
    /// under a new secret (replace the code on screen; the series did not move on).
    pub refreshed: bool,
}

impl Example for QrRefreshedData {
    fn example() -> Self {
        Self {
            qr_code: "2@kO3o0bJ8…,Xq1…=,pQ9…=,Zb4…=".into(),
            qr_link: "http://localhost:3000/statics/images/qrcode/\
                      scan-qr-b0b7bb43-9a22-455a-814f-5a225c743310.png"
                .into(),
            expires_at: (example_time() + chrono::Duration::seconds(60)).into(),
            index: 0,
            refreshed: false,
        }
    }
}

/// `data` of `pair_code_issued`: a pairing code was issued.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PairCodeIssuedData {
    /// `XXXX-XXXX`, to enter on the phone.
    pub pair_code: String,
    /// When it stops being usable.
    pub expires_at: Timestamp,
}

impl Example for PairCodeIssuedData {
    fn example() -> Self {
        Self {
            pair_code: "ABCD-1234".into(),
            expires_at: (example_time() + chrono::Duration::seconds(180)).into(),
        }
    }
}

/// `data` of `logged_in`: the device is linked and usable.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LoggedInData {
    /// The account's device JID, e.g. `628912344551:3@s.whatsapp.net`.
    pub jid: String,
    /// The account's LID, when known.
    pub lid: Option<String>,
    /// The account's display name, when known.
    pub push_name: Option<String>,
    /// The phone's platform, e.g. `android`, when it said.
    pub platform: Option<String>,
    /// The business's name, for a WhatsApp Business account.
    pub business_name: Option<String>,
}

impl Example for LoggedInData {
    fn example() -> Self {
        Self {
            jid: "628912344551:3@s.whatsapp.net".into(),
            lid: Some("123456789012345:3@lid".into()),
            push_name: Some("Support desk".into()),
            platform: Some("android".into()),
            business_name: None,
        }
    }
}

/// Why a device is no longer linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum LoggedOutReason {
    /// Logged out through the API (`POST /devices/{id}/logout` or `DELETE /devices/{id}`).
    Logout,
    /// The device was removed on the phone (Linked Devices).
    UnlinkedFromPhone,
    /// WhatsApp refused the stored session.
    SessionRejected,
}

/// `data` of `logged_out`: the device is no longer linked.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LoggedOutData {
    /// Why.
    pub reason: LoggedOutReason,
}

impl Example for LoggedOutData {
    fn example() -> Self {
        Self {
            reason: LoggedOutReason::UnlinkedFromPhone,
        }
    }
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
    /// The phone's signature on the link did not verify: the account is a hosted business
    /// account (HOSTED outside, E2EE inside), which this gateway's WhatsApp client (whatsapp-rust
    /// 0.7.0) cannot link yet; an update of the client fixes it. The device is left disconnected
    /// with no keys.
    PairingSignatureMismatch,
    /// The gateway stopped while the login was pending; reported when it starts again.
    Interrupted,
    /// WhatsApp refused the registration with a 429 (too many link attempts); new logins of
    /// the device answer 429 `RATE_LIMITED` with `Retry-After` until the pause is over.
    RateLimited,
    /// The passkey step failed: WhatsApp refused the assertion, the handshake after it broke
    /// off, or no assertion came in time. The device is left disconnected with no keys.
    PasskeyFailed,
}

/// `data` of `login_failed`: a login attempt ended without a linked device.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LoginFailedData {
    /// Why.
    pub reason: LoginFailureReason,
}

impl Example for LoginFailedData {
    fn example() -> Self {
        Self {
            reason: LoginFailureReason::QrExhausted,
        }
    }
}

/// `data` of `passkey_requested`: WhatsApp asks the account's passkey to confirm the link. The
/// device is in `passkey_required` until the assertion is posted to
/// `POST /devices/{device_id}/login/passkey`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PasskeyRequestedData {
    /// A WebAuthn `PublicKeyCredentialRequestOptions` (base64url `challenge` and credential ids),
    /// for `navigator.credentials.get({publicKey: …})` after decoding those fields.
    pub request_options: Value,
}

impl Example for PasskeyRequestedData {
    fn example() -> Self {
        Self {
            request_options: json!({
                "challenge": "y3Fh3m6yqQk0xq8cJ4mVbA2n0tVfQeZr7v1dXlS9wYc",
                "rpId": "web.whatsapp.com",
                "allowCredentials": [{ "type": "public-key", "id": "q2V5LWlk" }],
                "userVerification": "required",
                "timeout": 120000,
            }),
        }
    }
}

/// `data` of `passkey_confirmation`: WhatsApp accepted the passkey and the link is being
/// confirmed; the phone shows the same code.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PasskeyConfirmationData {
    /// `XXXX-XXXX`.
    pub code: String,
    /// Whether to show the code so the user can compare it with the phone's: false when the
    /// link proved its continuity with an earlier one.
    pub show_code: bool,
}

impl Example for PasskeyConfirmationData {
    fn example() -> Self {
        Self {
            code: "K7QM-2XPA".into(),
            show_code: true,
        }
    }
}

/// `data` of `app_state_sync_failed`: an app-state sync left collections (by WhatsApp's names,
/// e.g. `critical_block`) unsynced.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct AppStateSyncFailedData {
    /// Refused by WhatsApp; not retried on this connection.
    pub fatal: Vec<String>,
    /// Failed this time; the client retries them.
    pub retryable: Vec<String>,
    /// Whether the device is connected and usable anyway (a first login still ends in
    /// `logged_in`, without what the collections hold, such as the push name).
    pub connected: bool,
}

impl Example for AppStateSyncFailedData {
    fn example() -> Self {
        Self {
            fatal: vec!["critical_block".into()],
            retryable: Vec::new(),
            connected: true,
        }
    }
}

/// `data` of `client_expiring`: WhatsApp named the date after which it refuses this gateway's
/// WhatsApp client version. Update wagate before then, or logins fail with `client_outdated`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ClientExpiringData {
    /// That date.
    pub expires_at: Timestamp,
}

impl Example for ClientExpiringData {
    fn example() -> Self {
        Self {
            expires_at: (example_time() + chrono::Duration::days(30)).into(),
        }
    }
}

/// `data` of `state_changed`: the device moved between states.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct StateChangedData {
    /// The previous state.
    pub from: DeviceStateName,
    /// The new state.
    pub to: DeviceStateName,
}

impl Example for StateChangedData {
    fn example() -> Self {
        Self {
            from: DeviceStateName::Connected,
            to: DeviceStateName::LoggedIn,
        }
    }
}

/// `data` of `ping`: the event `POST /webhooks/{id}/test` sends.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PingData {
    /// A note for people.
    pub message: String,
}

impl Example for PingData {
    fn example() -> Self {
        Self {
            message: "a test event from wagate".into(),
        }
    }
}

/// Declares the envelope of one event type.
macro_rules! event {
    ($(#[$doc:meta])* $name:ident, $data:ty, $device:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Object)]
        #[oai(example)]
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
            pub occurred_at: Timestamp,
            /// What happened.
            pub data: $data,
        }

        impl Example for $name {
            fn example() -> Self {
                Self {
                    id: EXAMPLE_EVENT,
                    tenant: EXAMPLE_TENANT,
                    device_id: $device,
                    seq: if $device.is_some() { 7 } else { 0 },
                    occurred_at: example_time().into(),
                    data: <$data as Example>::example(),
                }
            }
        }
    };
}

/// The event id of the examples.
const EXAMPLE_EVENT: Uuid = Uuid::from_u128(0x0b6f6f2e_5c1e_4c1a_9d8e_2f1b5a7c9d31);
/// The tenant of the examples.
const EXAMPLE_TENANT: Uuid = Uuid::from_u128(0x5c1e0b6f_6f2e_4c1a_9d8e_2f1b5a7c9d32);

event!(
    /// A new QR code is showing; deliveries of it expire with the code.
    QrRefreshedEvent,
    QrRefreshedData,
    Some("my-device-id".to_string())
);
event!(
    /// A pairing code was issued.
    PairCodeIssuedEvent,
    PairCodeIssuedData,
    Some("my-device-id".to_string())
);
event!(
    /// The device is linked and usable.
    LoggedInEvent,
    LoggedInData,
    Some("my-device-id".to_string())
);
event!(
    /// The device was logged out (from the API or the phone).
    LoggedOutEvent,
    LoggedOutData,
    Some("my-device-id".to_string())
);
event!(
    /// A login attempt failed.
    LoginFailedEvent,
    LoginFailedData,
    Some("my-device-id".to_string())
);
event!(
    /// The device moved between states.
    StateChangedEvent,
    StateChangedData,
    Some("my-device-id".to_string())
);
event!(
    /// WhatsApp asks the account's passkey to confirm the link.
    PasskeyRequestedEvent,
    PasskeyRequestedData,
    Some("my-device-id".to_string())
);
event!(
    /// The passkey was accepted; the code to compare with the phone's.
    PasskeyConfirmationEvent,
    PasskeyConfirmationData,
    Some("my-device-id".to_string())
);
event!(
    /// An app-state sync left collections unsynced.
    AppStateSyncFailedEvent,
    AppStateSyncFailedData,
    Some("my-device-id".to_string())
);
event!(
    /// WhatsApp named the date this client version stops being accepted.
    ClientExpiringEvent,
    ClientExpiringData,
    Some("my-device-id".to_string())
);
event!(
    /// A test event.
    PingEvent,
    PingData,
    None::<String>
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
    /// `passkey_requested`.
    #[oai(mapping = "passkey_requested")]
    PasskeyRequested(PasskeyRequestedEvent),
    /// `passkey_confirmation`.
    #[oai(mapping = "passkey_confirmation")]
    PasskeyConfirmation(PasskeyConfirmationEvent),
    /// `app_state_sync_failed`.
    #[oai(mapping = "app_state_sync_failed")]
    AppStateSyncFailed(AppStateSyncFailedEvent),
    /// `client_expiring`.
    #[oai(mapping = "client_expiring")]
    ClientExpiring(ClientExpiringEvent),
    /// `ping`.
    #[oai(mapping = "ping")]
    Ping(PingEvent),
}

/// A recorded event exactly as its endpoints receive it. The delivery log shows the stored JSON
/// itself, checked against `WebhookEvent` when read, rather than a re-encoding of it: the same
/// fields in the same order, timestamps written the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent(Value);

impl StoredEvent {
    /// Reads a recorded event body; `None` if it is not one of the documented events.
    pub fn from_body(body: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(body).ok()?;
        Self::parse_from_json(Some(value)).ok()
    }
}

impl Example for StoredEvent {
    fn example() -> Self {
        let event = LoggedInEvent::example().to_json().unwrap_or_default();
        let mut tagged = json!({ "type": "logged_in" });
        if let (Some(tagged), Value::Object(fields)) = (tagged.as_object_mut(), event) {
            tagged.extend(fields);
        }
        Self(tagged)
    }
}

schema_as!(StoredEvent, WebhookEvent);

impl ParseFromJSON for StoredEvent {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        WebhookEvent::parse_from_json(Some(value.clone())).map_err(ParseError::propagate)?;
        Ok(Self(value))
    }
}

impl ToJSON for StoredEvent {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}
