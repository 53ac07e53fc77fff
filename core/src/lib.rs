//! wagate's core: the domain, the login engine that drives one whatsapp-rust client per live
//! device, the PostgreSQL store, webhook delivery and the plugin host. It serves no HTTP.

#![deny(unsafe_code)]

pub mod cluster;
pub mod domain;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod plugins;
pub mod store;
pub mod webhooks;
