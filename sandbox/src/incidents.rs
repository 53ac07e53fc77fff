//! What WhatsApp's server sometimes does to a client besides the routine, played on demand:
//! rotating an unpaired client's registration mid-series, rate-limiting new registrations,
//! refusing a companion's first app-state sync, announcing that the client's version expires,
//! and refusing a client version that has expired.
//!
//! Each is something a gateway must report rather than swallow, so tests and demos need to
//! cause it at a chosen moment.

use std::sync::atomic::Ordering;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::conn::{Conn, lock};
use crate::phone::{self, PhoneError, normalize_phone};
use crate::shared::Shared;
use crate::stanza::{self, SERVER};

/// The app-state collection whose refusal a refused sync carries: the one a first login cannot
/// do without (it holds the push name), so the client must decide to connect without it.
pub(crate) const REFUSED_COLLECTION: &str = "critical_block";

/// Tells the client showing `qr` that the server retired its registration material
/// (`companion_reg_refresh`): it rotates its ADV secret and shows the same ref again with the
/// new secret. Returns the ref.
pub(crate) async fn refresh_registration(shared: &Shared, qr: &str) -> Result<String, PhoneError> {
    let (conn, reference) = phone::showing_qr(shared, qr)?;
    let notice = NodeBuilder::new("notification")
        .attr("from", SERVER)
        .attr("type", "companion_reg_refresh")
        .attr("id", conn.next_id())
        .attr("t", stanza::now_secs().to_string())
        .children([NodeBuilder::new("companion_reg_refresh").build()])
        .build();
    conn.send(notice).await?;
    Ok(reference)
}

/// While `on`, every new registration is refused with a 429 stream error, as WhatsApp answers
/// a number or address that asked to link too often.
pub(crate) fn set_rate_limited(shared: &Shared, on: bool) {
    shared.rate_limited.store(on, Ordering::Relaxed);
}

/// Ends a registering connection with a 429 stream error if registrations are rate-limited now;
/// whether it did.
pub(crate) async fn refuse_if_rate_limited(shared: &Shared, conn: &Conn) -> bool {
    if !shared.rate_limited.load(Ordering::Relaxed) {
        return false;
    }
    conn.close_with(stanza::stream_error(429)).await;
    true
}

/// While `on`, every connection is refused with `<failure reason="405"/>`: WhatsApp no longer
/// accepts the client's version.
pub(crate) fn set_client_outdated(shared: &Shared, on: bool) {
    shared.client_outdated.store(on, Ordering::Relaxed);
}

/// Ends a new connection with a 405 failure if client versions are refused now; whether it did.
pub(crate) async fn refuse_if_outdated(shared: &Shared, conn: &Conn) -> bool {
    if !shared.client_outdated.load(Ordering::Relaxed) {
        return false;
    }
    conn.close_with(stanza::failure(405)).await;
    true
}

/// The next app-state sync a companion of `phone` asks for is refused for
/// [`REFUSED_COLLECTION`] (a 400, which the client takes as final for that connection).
pub(crate) fn refuse_next_app_state_sync(shared: &Shared, phone: &str) -> Result<(), PhoneError> {
    let phone = normalize_phone(phone)?;
    lock(&shared.registry).phone(&phone).refuse_app_state_sync = true;
    Ok(())
}

/// Whether this app-state sync request of `conn`'s companion is to be refused; a refusal is
/// used up by the request it answers.
pub(crate) fn take_app_state_refusal(shared: &Shared, conn: &Conn) -> bool {
    let Some(jid) = conn.jid.as_deref() else {
        return false;
    };
    let mut registry = lock(&shared.registry);
    let Some(number) = registry.companions.get(jid).map(|c| c.phone.clone()) else {
        return false;
    };
    registry
        .phones
        .get_mut(&number)
        .is_some_and(|p| std::mem::take(&mut p.refuse_app_state_sync))
}

/// Tells the online companion `jid` the date (seconds since the Unix epoch) after which the
/// server stops accepting its client version: `<ib><client_expiration t=…/></ib>`.
pub(crate) async fn announce_client_expiration(
    shared: &Shared,
    jid: &str,
    at: u64,
) -> Result<(), PhoneError> {
    let conn = {
        let registry = lock(&shared.registry);
        let companion = registry
            .companions
            .get(jid)
            .ok_or_else(|| PhoneError::NotLinked(jid.to_string()))?;
        companion
            .connection
            .and_then(|id| registry.connections.get(&id).cloned())
            .ok_or_else(|| PhoneError::Offline(jid.to_string()))?
    };
    conn.send(client_expiration(at)).await?;
    Ok(())
}

fn client_expiration(at: u64) -> Node {
    NodeBuilder::new("ib")
        .attr("from", SERVER)
        .children([NodeBuilder::new("client_expiration")
            .attr("t", at.to_string())
            .build()])
        .build()
}
