//! How a sandbox runs: the one settings type, shared by the library, the binary and the tests.
//!
//! It sits apart from `lib.rs` so that the modules reading it depend on this file alone, not on
//! the crate root that declares them.

use std::net::{Ipv4Addr, SocketAddr};

/// How a sandbox runs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// QR refs handed to each new client (WhatsApp hands out 6).
    pub qr_refs: usize,
    /// How much faster than real time clients should run their timers (see [`crate::clock`]);
    /// the sandbox itself only reports it.
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
