//! The sandbox's end-to-end tests: the real whatsapp-rust client (and Baileys, as referee), a real
//! loopback websocket.

mod baileys;
mod bootstrap;
mod control;
mod linking;
mod session;
mod standalone;
mod support;
