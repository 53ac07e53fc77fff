//! A WhatsApp server simulator and a simulated phone.
//!
//! The real whatsapp-rust client links against it over a loopback websocket: WhatsApp's framing,
//! the Noise XX/IK handshake with a certificate chain, binary nodes, QR and pairing-code linking
//! with real ADV signatures, login, and the routine requests of a logged-in client. The phone
//! scans QR codes, enters pairing codes and unlinks devices.
//!
//! The client must be built with whatsapp-rust's `danger-skip-cert-chain-verify` feature: the
//! sandbox's chain is shaped like WhatsApp's but cannot be signed by WhatsApp's root key.
//!
//! Modules depend only on modules before them in this order, so their dependencies form no
//! cycle: `clock`, `config`, `stanza`, `wire`, `noise`, `webauthn`, `history` → `conn`, `iq`,
//! `keys` → `signal`, `passkey` → `accounts` → `shared` → `phone` → `incidents` → `pair_code` →
//! `bootstrap` → `encrypt` → `connection` → `server`. The connection handle (`conn`) sits below
//! the registry and the phone so that both drive clients without depending on the socket code
//! (`connection`); `shared` sits below everything that takes it, and only `server` creates it.
//! The test passkey (`webauthn`) needs nothing of the sandbox, so the registry can hold it; the
//! passkey handshake (`passkey`) needs only a connection handle, so the phone runs it and the
//! socket code hands it the client's requests.

#![deny(unsafe_code)]

mod accounts;
mod bootstrap;
pub mod clock;
mod config;
mod conn;
mod connection;
mod encrypt;
mod history;
mod incidents;
mod iq;
mod keys;
pub mod noise;
mod pair_code;
mod passkey;
mod phone;
mod server;
mod shared;
mod signal;
mod stanza;
mod webauthn;
pub mod wire;

pub use accounts::{AccountInfo, AccountKind, ClientInfo, ClientState, Delivery};
pub use clock::ScaledRuntime;
pub use config::SandboxConfig;
pub use history::ConnectionRecord;
pub use phone::{Linked, PhoneError};
pub use server::{Sandbox, StartError};
