//! The state every connection and the control API share: settings, the server's Noise identity,
//! the registry and the outage switch.
//!
//! It is its own module so that the phone, pairing codes and the socket code can all reach it
//! without depending on the listener (`server`) that creates it.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use tokio::sync::watch;

use crate::accounts::Registry;
use crate::config::SandboxConfig;
use crate::noise::ServerIdentity;

/// State shared by every connection and the control API.
pub(crate) struct Shared {
    /// The settings the sandbox was started with.
    pub config: SandboxConfig,
    /// The server's static key and certificate chain; fixed for the sandbox's lifetime, so a
    /// returning client's cached key stays valid until a restart.
    pub identity: ServerIdentity,
    /// Everything the sandbox remembers, behind one lock held only for map operations.
    pub registry: Mutex<Registry>,
    /// `true` while the sandbox plays an outage: sockets are dropped and upgrades refused.
    pub outage: watch::Sender<bool>,
    /// `true` while new registrations are refused with a 429 stream error.
    pub rate_limited: AtomicBool,
    /// `true` while every connection is refused as an outdated client (405).
    pub client_outdated: AtomicBool,
}

impl Shared {
    /// A fresh sandbox's state: a new server identity, an empty registry, no outage.
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            config,
            identity: ServerIdentity::generate(),
            registry: Mutex::new(Registry::default()),
            outage: watch::channel(false).0,
            rate_limited: AtomicBool::new(false),
            client_outdated: AtomicBool::new(false),
        }
    }
}
