//! A WhatsApp server simulator and a simulated phone.
//!
//! The real whatsapp-rust client links against it over a loopback websocket: WhatsApp's framing,
//! the Noise XX/IK handshake with a certificate chain, binary nodes, QR and pairing-code linking
//! with real ADV signatures, login, and the routine requests of a logged-in client. The phone
//! scans QR codes, enters pairing codes and unlinks devices.
//!
//! The client must be built with whatsapp-rust's `danger-skip-cert-chain-verify` feature: the
//! sandbox's chain is shaped like WhatsApp's but cannot be signed by WhatsApp's root key.

mod accounts;
pub mod clock;
mod connection;
mod iq;
pub mod noise;
mod pair_code;
mod phone;
mod server;
mod stanza;
pub mod wire;

use std::net::{Ipv4Addr, SocketAddr};

pub use accounts::{AccountInfo, ClientInfo, ClientState};
pub use clock::ScaledRuntime;
pub use phone::{Linked, PhoneError};
pub use server::{Sandbox, StartError};

/// How a sandbox runs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// QR refs handed to each new client (WhatsApp hands out 6).
    pub qr_refs: usize,
    /// How much faster than real time clients should run their timers (see [`clock`]); the
    /// sandbox itself only reports it.
    pub time_scale: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            qr_refs: 6,
            time_scale: 1,
        }
    }
}
