//! The sandbox's end-to-end tests: the real whatsapp-rust client (and Baileys, as referee), a real
//! loopback websocket.

mod baileys;
mod bootstrap;
mod control;
mod incidents;
mod linking;
mod passkey;
mod session;
mod standalone;
mod support;
// The gateway's tests and these share one rule for the tools `.ci/run` installs.
#[path = "../../../tests/it/support/tools.rs"]
mod tools;
