//! The sandbox's end-to-end tests: the real whatsapp-rust client, a real loopback websocket.

mod bootstrap;
mod control;
mod linking;
mod session;
mod support;
