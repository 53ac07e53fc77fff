//! wagate end to end: the real HTTP API over a real socket, a PostgreSQL cluster the tests start,
//! and the WhatsApp sandbox driving the real whatsapp-rust client.

mod admin;
mod auth;
#[cfg(feature = "sandbox")]
mod binary;
#[cfg(feature = "sandbox")]
mod cluster;
mod contract;
mod devices;
mod durable;
#[cfg(feature = "sandbox")]
mod embedded;
mod forward;
mod link_page;
mod link_tokens;
mod login_code;
mod login_outcomes;
mod login_passkey;
mod login_qr;
#[cfg(feature = "sandbox")]
mod logs;
mod metrics;
mod observability;
mod plugins;
mod readiness;
#[cfg(feature = "sandbox")]
mod schemathesis;
#[cfg(feature = "sandbox")]
mod sdks;
mod spec;
mod streams;
mod support;
mod webhooks;
