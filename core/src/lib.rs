//! wagate's core: the domain, the login engine that drives one whatsapp-rust client per live
//! device, and the PostgreSQL store. It knows nothing of HTTP.

pub mod domain;
pub mod engine;
pub mod events;
pub mod store;
