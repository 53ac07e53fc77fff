//! What the login engine reports: one event per step of a device's login, on a bus that
//! webhooks, plugins and live subscribers read from.
//!
//! The engine's event enum is not a wire format: the store records each event in its one wire
//! form ([`wire::WireEvent`]), and the bus carries that recorded form to every consumer.

pub mod wire;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::DeviceState;
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
        }
    }
}

/// Events buffered per slow subscriber before it starts missing them.
const BUS_CAPACITY: usize = 1024;

/// Fan-out of recorded events to in-process subscribers (plugins, live streams). Webhooks do not
/// read it: they are fed from the outbox the events were recorded in.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<WireEvent>,
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
    pub fn publish(&self, event: WireEvent) {
        // The type only: QR strings carry the pairing secret and must not reach the logs.
        tracing::info!(
            tenant = %event.tenant,
            device = event.device_id.as_deref().unwrap_or("-"),
            seq = event.seq,
            event = %event.event_type,
            "device event"
        );
        let _ = self.sender.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WireEvent> {
        self.sender.subscribe()
    }
}
