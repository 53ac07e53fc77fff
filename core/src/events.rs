//! What the login engine reports: one event per step of a device's login, on a bus that
//! webhooks, plugins and live subscribers read from.
//!
//! The engine's event enum is not a wire format: the store records each event in its one wire
//! form ([`wire::WireEvent`]), and the bus carries that recorded form to every consumer.

pub mod recorded;
pub mod relay;
pub mod stream;
pub mod wire;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::DeviceState;
pub use recorded::RecordedEvent;
pub use wire::{NewEvent, WireEvent};

/// Why a login attempt ended without a logged-in device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Every QR code of the series expired unscanned.
    QrExhausted,
    /// WhatsApp refused the pairing code, or the code entered on the phone was wrong.
    PairCodeRejected,
    /// WhatsApp did not answer in time.
    Timeout,
    /// WhatsApp considers this client too old.
    ClientOutdated,
    /// The phone's signature on the link did not verify with this client: a hosted business
    /// account (HOSTED outside, E2EE inside), which whatsapp-rust 0.7.0 checks with the wrong
    /// prefix. A client update fixes it; until then such an account cannot be linked.
    PairingSignatureMismatch,
    /// The gateway stopped (a crash, a kill) while the login was pending; reported when it
    /// starts again.
    Interrupted,
    /// WhatsApp refused the registration with a 429 stream error: too many link attempts from
    /// this gateway or for this number. Retry after the pause the API names.
    RateLimited,
    /// The passkey step failed: WhatsApp refused the assertion, or the handshake that follows
    /// it broke off.
    PasskeyFailed,
}

impl LoginFailure {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QrExhausted => "qr_exhausted",
            Self::PairCodeRejected => "pair_code_rejected",
            Self::Timeout => "timeout",
            Self::ClientOutdated => "client_outdated",
            Self::PairingSignatureMismatch => "pairing_signature_mismatch",
            Self::Interrupted => "interrupted",
            Self::RateLimited => "rate_limited",
            Self::PasskeyFailed => "passkey_failed",
        }
    }
}

/// One step of a device's login life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEventKind {
    /// A new QR code is showing.
    QrRefreshed {
        /// The QR string.
        qr_code: String,
        /// The public link to the code's PNG, as the login call answered it.
        link: String,
        /// When the code stops being scannable.
        expires_at: DateTime<Utc>,
        /// Its position in the series, from 0.
        index: u32,
        /// The same code position shown again under a new secret (WhatsApp rotated the
        /// registration mid-series): the code to show changed, the series did not move on.
        refreshed: bool,
    },
    /// A pairing code was issued.
    PairCodeIssued {
        /// `XXXX-XXXX`.
        pair_code: String,
        /// When it stops being usable.
        expires_at: DateTime<Utc>,
    },
    /// The device is linked and usable.
    LoggedIn {
        /// The account's device JID.
        jid: String,
        /// The account's LID, when known.
        lid: Option<String>,
        /// The account's display name, when known.
        push_name: Option<String>,
        /// The phone's platform (e.g. `android`), when it said.
        platform: Option<String>,
        /// The business's name, for a WhatsApp Business account.
        business_name: Option<String>,
    },
    /// WhatsApp asks the account's passkey to confirm the link.
    PasskeyRequested {
        /// The WebAuthn `PublicKeyCredentialRequestOptions` to hand to `navigator.credentials.get`.
        request_options: serde_json::Value,
    },
    /// The passkey was accepted; the link is being confirmed.
    PasskeyConfirmation {
        /// `XXXX-XXXX`, the code the phone shows too.
        code: String,
        /// Whether to show the code to the user: false when the link proved its continuity
        /// with an earlier one, so there is nothing for the user to compare.
        show_code: bool,
    },
    /// An app-state sync left collections unsynced (on a first login the device is still
    /// logged in, without what they hold: for `critical_block`, the push name).
    AppStateSyncFailed {
        /// Refused by WhatsApp: not retried on this connection.
        fatal: Vec<String>,
        /// Failed this time; the client retries them.
        retryable: Vec<String>,
        /// Whether the device is connected and usable despite it.
        connected: bool,
    },
    /// WhatsApp named the date after which it stops accepting this client version.
    ClientExpiring {
        /// That date.
        expires_at: DateTime<Utc>,
    },
    /// The device was logged out (from the API or the phone).
    LoggedOut {
        /// What ended it.
        reason: String,
    },
    /// A login attempt ended without success.
    LoginFailed {
        /// Why.
        reason: LoginFailure,
    },
    /// The device moved between states.
    StateChanged {
        /// The previous state.
        from: DeviceState,
        /// The new state.
        to: DeviceState,
    },
}

impl EngineEventKind {
    /// The event's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::QrRefreshed { .. } => "qr_refreshed",
            Self::PairCodeIssued { .. } => "pair_code_issued",
            Self::LoggedIn { .. } => "logged_in",
            Self::LoggedOut { .. } => "logged_out",
            Self::LoginFailed { .. } => "login_failed",
            Self::StateChanged { .. } => "state_changed",
            Self::PasskeyRequested { .. } => "passkey_requested",
            Self::PasskeyConfirmation { .. } => "passkey_confirmation",
            Self::AppStateSyncFailed { .. } => "app_state_sync_failed",
            Self::ClientExpiring { .. } => "client_expiring",
        }
    }
}

/// Events buffered per slow subscriber before it starts missing them.
const BUS_CAPACITY: usize = 1024;

/// Fan-out of recorded events to in-process subscribers (plugins, live streams). Webhooks do not
/// read it: they are fed from the outbox the events were recorded in.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BUS_CAPACITY).0,
        }
    }

    /// Publishes a recorded event; with no subscriber it is logged only.
    pub fn publish(&self, event: RecordedEvent) {
        // The type only: QR strings carry the pairing secret and must not reach the logs.
        tracing::info!(
            tenant = %event.tenant,
            device = event.device_id.as_deref().unwrap_or("-"),
            seq = event.seq,
            event = %event.event_type,
            "device event"
        );
        let _ = self.sender.send(Arc::new(event));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.sender.subscribe()
    }
}
