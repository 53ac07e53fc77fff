//! What the login engine reports: one event per step of a device's login, on a bus that
//! webhooks, plugins and live subscribers read from.
//!
//! The engine's event enum is not a wire format; each consumer maps it to the one versioned wire
//! type it shares with the others.

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::{DeviceId, DeviceState, TenantId};

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
}

impl LoginFailure {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QrExhausted => "qr_exhausted",
            Self::PairCodeRejected => "pair_code_rejected",
            Self::Timeout => "timeout",
            Self::ClientOutdated => "client_outdated",
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
        /// The image id behind `qr_link`.
        image: uuid::Uuid,
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

/// An engine event about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device_id: DeviceId,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// What happened.
    pub kind: EngineEventKind,
}

/// Events buffered per slow subscriber before it starts missing them.
const BUS_CAPACITY: usize = 1024;

/// Fan-out of engine events to every subscriber.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<EngineEvent>,
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

    /// Publishes an event; with no subscriber it is logged only.
    pub fn publish(&self, tenant: TenantId, device_id: &DeviceId, kind: EngineEventKind) {
        // The name only: QR strings carry the pairing secret and must not reach the logs.
        tracing::info!(%tenant, device = %device_id, event = kind.name(), "device event");
        let _ = self.sender.send(EngineEvent {
            tenant,
            device_id: device_id.clone(),
            occurred_at: Utc::now(),
            kind,
        });
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.sender.subscribe()
    }
}
