//! Answers to a client's `encrypt` requests, from the key bundles the server holds: prekey
//! uploads and signed-prekey rotations, the prekey count, the bundle digest, and the bundles a
//! client fetches to start a session with another device of its account.

use std::sync::Arc;

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::bootstrap;
use crate::conn::{Conn, lock};
use crate::keys::{FetchedBundle, KeyBundle, SignedPrekey};
use crate::shared::Shared;
use crate::stanza;

/// Answers one `<iq xmlns="encrypt">`; an upload may set the phone's key share going.
pub(crate) async fn answer(shared: &Arc<Shared>, conn: &Conn, request: &Node) {
    let first = request
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    let uploaded = first == "registration" || first == "list";
    let answer = match (conn.jid.as_deref(), first.as_str()) {
        (None, _) => stanza::iq_error(request, 401, "not-authorized"),
        (Some(jid), _) if uploaded => upload(shared, jid, request),
        (Some(jid), "rotate") => rotate(shared, jid, request),
        (Some(jid), "count") => {
            let count = with_bundle(shared, jid, |b| b.prekeys.len()).unwrap_or(0);
            let node = NodeBuilder::new("count")
                .attr("value", count.to_string())
                .build();
            stanza::iq_result(request, vec![node])
        }
        (Some(jid), "digest") => match with_bundle(shared, jid, KeyBundle::digest) {
            Some(digest) => stanza::iq_result(request, vec![digest]),
            // What WhatsApp answers a device that never uploaded: the client uploads at once.
            None => stanza::iq_error(request, 404, "item-not-found"),
        },
        (Some(_), "key") => fetch(shared, request),
        _ => stanza::iq_error(request, 400, "bad-request"),
    };
    let accepted = stanza::attr(&answer, "type").as_deref() == Some("result");
    let _ = conn.send(answer).await;
    if uploaded && accepted {
        bootstrap::advance(shared, conn).await;
    }
}

fn with_bundle<T>(shared: &Shared, jid: &str, f: impl FnOnce(&KeyBundle) -> T) -> Option<T> {
    let registry = lock(&shared.registry);
    registry.companions.get(jid)?.keys.as_ref().map(f)
}

fn upload(shared: &Shared, jid: &str, request: &Node) -> Node {
    let bundle = match KeyBundle::parse_upload(request) {
        Ok(bundle) => bundle,
        Err(e) => return stanza::iq_error(request, 400, &e.to_string()),
    };
    let mut registry = lock(&shared.registry);
    let Some(companion) = registry.companions.get_mut(jid) else {
        return stanza::iq_error(request, 401, "not-authorized");
    };
    match &mut companion.keys {
        Some(held) => held.merge(bundle),
        None => companion.keys = Some(bundle),
    }
    stanza::iq_result(request, Vec::new())
}

/// A new signed prekey replaces the one held; one-time prekeys stay.
fn rotate(shared: &Shared, jid: &str, request: &Node) -> Node {
    let skey = stanza::child(request, "rotate").and_then(|r| stanza::child(r, "skey"));
    let Some(Ok(key)) = skey.map(SignedPrekey::parse) else {
        return stanza::iq_error(request, 400, "bad-request");
    };
    let mut registry = lock(&shared.registry);
    match registry
        .companions
        .get_mut(jid)
        .and_then(|c| c.keys.as_mut())
    {
        Some(held) => {
            held.signed_prekey = key;
            stanza::iq_result(request, Vec::new())
        }
        None => stanza::iq_error(request, 404, "item-not-found"),
    }
}

/// Bundles for each `<user jid>` asked for: a companion's from its upload (using up one of its
/// one-time prekeys), a phone's own from its signed prekey; a device the server has no keys for
/// gets a 404 in its entry, as WhatsApp answers.
fn fetch(shared: &Shared, request: &Node) -> Node {
    let mut registry = lock(&shared.registry);
    let mut users = Vec::new();
    for user in stanza::child(request, "key")
        .and_then(|k| k.children())
        .unwrap_or_default()
    {
        let Some(jid) = stanza::attr(user, "jid") else {
            continue;
        };
        let (name, device) = split_jid(&jid);
        let entry = if device == 0 {
            let number = registry
                .phones
                .iter()
                .find(|(number, p)| *number == name || p.lid_user == name)
                .map(|(number, _)| number.clone());
            number.map(|n| {
                let phone = registry.phone(&n);
                let bundle = FetchedBundle {
                    registration_id: phone.registration_id,
                    identity: public_bytes(&phone.identity),
                    signed_prekey: phone.signed_prekey.clone(),
                    prekey: None,
                };
                bundle.user_node(&jid, None)
            })
        } else {
            registry
                .companions
                .values_mut()
                .find(|c| c.jid == jid || c.lid == jid)
                .and_then(|c| {
                    let identity = c.device_identity.clone();
                    c.keys
                        .as_mut()
                        .map(|k| k.fetch().user_node(&jid, Some(&identity)))
                })
        };
        users.push(entry.unwrap_or_else(|| {
            NodeBuilder::new("user")
                .attr("jid", jid.as_str())
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")
                    .build()])
                .build()
        }));
    }
    let list = NodeBuilder::new("list").children(users).build();
    stanza::iq_result(request, vec![list])
}

/// `user[:device]@server` → (`user`, device); the server part is ignored.
fn split_jid(jid: &str) -> (&str, u32) {
    let address = jid.split('@').next().unwrap_or_default();
    match address.split_once(':') {
        Some((user, device)) => (user, device.parse().unwrap_or(0)),
        None => (address, 0),
    }
}

fn public_bytes(pair: &wacore_libsignal::protocol::KeyPair) -> [u8; 32] {
    pair.public_key
        .public_key_bytes()
        .try_into()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::split_jid;

    #[test]
    fn a_jid_splits_into_user_and_device() {
        assert_eq!(split_jid("628123:3@s.whatsapp.net"), ("628123", 3));
        assert_eq!(split_jid("628123@s.whatsapp.net"), ("628123", 0));
        assert_eq!(split_jid("1234:2@lid"), ("1234", 2));
    }
}
