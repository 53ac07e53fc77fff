//! Linking with a phone number: the server's side of `companion_hello` and the phone's side of
//! entering the code (`primary_hello`, opening the key bundle of `companion_finish`).
//!
//! The server never learns the code. The companion wraps its ephemeral key with a key derived
//! from the code; the phone unwraps it with the code its user typed and wraps its own. Only the
//! phone can tell a wrong code, when the companion's key bundle fails to open: it then refuses
//! the `companion_finish`, which the companion reports as a pairing-code error.

use std::sync::Arc;
use std::time::Duration;

use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};

use crate::accounts::LinkCodeRequest;
use crate::conn::{Conn, RequestError, lock};
use crate::phone::{Linked, PhoneError, complete_pairing, normalize_phone};
use crate::shared::Shared;
use crate::stanza::{self, SERVER};

/// How long the phone waits for the companion's `companion_finish` after `primary_hello`.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
const WRAPPED_EPHEMERAL_LEN: usize = 80;
const KEY_BUNDLE_INFO: &[u8] = b"link_code_pairing_key_bundle_encryption_key";
const ADV_SECRET_INFO: &[u8] = b"adv_secret";

/// Answers a companion's `companion_hello`: records the request under the phone number it names
/// and hands back a pairing ref.
pub(crate) fn companion_hello(shared: &Shared, conn: &Conn, request: &Node, reg: &Node) -> Node {
    if conn.registration.is_none() {
        return stanza::iq_error(request, 400, "bad-request");
    }
    let phone = stanza::attr(reg, "jid")
        .and_then(|jid| jid.split('@').next().map(str::to_string))
        .and_then(|user| normalize_phone(&user).ok());
    let wrapped = stanza::child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
        .filter(|w| w.len() == WRAPPED_EPHEMERAL_LEN);
    let auth_key = stanza::child_bytes(reg, "companion_server_auth_key_pub");
    let (Some(phone), Some(wrapped)) = (phone, wrapped) else {
        return stanza::iq_error(request, 400, "bad-request");
    };
    if auth_key.as_deref() != Some(&conn.client_static[..]) {
        return stanza::iq_error(request, 400, "bad-request");
    }
    let random: [u8; 16] = rand::random();
    let pairing_ref = format!("{}@{}", conn.id, hex(&random)).into_bytes();
    lock(&shared.registry)
        .link_codes
        .entry(phone)
        .or_default()
        .push(LinkCodeRequest {
            connection: conn.id,
            pairing_ref: pairing_ref.clone(),
            wrapped_companion_ephemeral: wrapped,
        });
    stanza::iq_result(
        request,
        vec![
            NodeBuilder::new("link_code_companion_reg")
                .attr("stage", "companion_hello")
                .children([NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref)
                    .build()])
                .build(),
        ],
    )
}

/// Normalises a code as a user would type it: case-insensitive, with or without the dash.
fn normalize_code(code: &str) -> Result<String, PhoneError> {
    let cleaned: String = code
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    if cleaned.len() != 8 || !cleaned.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PhoneError::MalformedCode(code.to_string()));
    }
    Ok(cleaned)
}

/// The phone `phone` enters `code` for the newest pairing-code request made for it.
pub(crate) async fn enter_pair_code(
    shared: &Arc<Shared>,
    phone: &str,
    code: &str,
) -> Result<Linked, PhoneError> {
    let phone = normalize_phone(phone)?;
    let code = normalize_code(code)?;
    let (conn, pairing_ref, wrapped, identity) = {
        let mut registry = lock(&shared.registry);
        let request = registry
            .link_codes
            .get(&phone)
            .and_then(|r| r.last())
            .map(|r| {
                (
                    r.connection,
                    r.pairing_ref.clone(),
                    r.wrapped_companion_ephemeral.clone(),
                )
            });
        let (conn_id, pairing_ref, wrapped) =
            request.ok_or_else(|| PhoneError::NoPendingCode(phone.clone()))?;
        let conn = registry
            .connections
            .get(&conn_id)
            .cloned()
            .ok_or_else(|| PhoneError::NoPendingCode(phone.clone()))?;
        let identity = registry.phone(&phone).identity.clone();
        (conn, pairing_ref, wrapped, identity)
    };

    // Two PBKDF2 derivations of 131072 rounds each: kept off the async workers.
    let (companion_ephemeral, primary_ephemeral, wrapped_primary) = {
        let typed = code.clone();
        tokio::task::spawn_blocking(move || {
            let companion = PairCodeUtils::decrypt_primary_ephemeral_pub(&wrapped, &typed).ok()?;
            let primary = KeyPair::generate(&mut rand::rng());
            let public: [u8; 32] = primary.public_key.public_key_bytes().try_into().ok()?;
            let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&public, &typed);
            Some((companion, primary, wrapped))
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| PhoneError::MalformedCode(code.clone()))?
    };

    let finish = conn.expect_companion_finish(&pairing_ref);
    let primary_hello = NodeBuilder::new("notification")
        .attr("from", SERVER)
        .attr("type", "link_code_companion_reg")
        .attr("id", conn.next_id())
        .attr("t", stanza::now_secs().to_string())
        .children([NodeBuilder::new("link_code_companion_reg")
            .attr("stage", "primary_hello")
            .children([
                NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                    .bytes(wrapped_primary.to_vec())
                    .build(),
                NodeBuilder::new("primary_identity_pub")
                    .bytes(identity.public_key.public_key_bytes().to_vec())
                    .build(),
                NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref.clone())
                    .build(),
            ])
            .build()])
        .build();
    conn.send(primary_hello).await?;
    let finish = match tokio::time::timeout(FINISH_TIMEOUT, finish).await {
        Ok(Ok(node)) => node,
        Ok(Err(_)) => return Err(RequestError::Gone.into()),
        Err(_) => return Err(RequestError::Timeout(FINISH_TIMEOUT).into()),
    };

    let opened = open_key_bundle(&finish, &companion_ephemeral, &primary_ephemeral, &identity);
    let expected_identity = conn.registration.as_ref().map(|r| r.identity);
    let (companion_identity, adv_secret) = match opened {
        Some((id, adv)) if Some(id) == expected_identity => (id, adv),
        _ => {
            // What the phone's user sees as "couldn't link device"; the companion learns it
            // from the refused companion_finish.
            conn.send(stanza::iq_error(&finish, 400, "bad-request"))
                .await?;
            forget_request(shared, &phone, &pairing_ref);
            return Err(PhoneError::WrongCode(phone));
        }
    };
    conn.send(stanza::iq_result(&finish, Vec::new())).await?;
    forget_request(shared, &phone, &pairing_ref);
    complete_pairing(shared, &conn, &phone, companion_identity, adv_secret).await
}

fn forget_request(shared: &Shared, phone: &str, pairing_ref: &[u8]) {
    let mut registry = lock(&shared.registry);
    if let Some(requests) = registry.link_codes.get_mut(phone) {
        requests.retain(|r| r.pairing_ref != pairing_ref);
        if requests.is_empty() {
            registry.link_codes.remove(phone);
        }
    }
}

/// Opens the companion's key bundle and derives the ADV secret both sides now share.
/// `None` when the bundle does not open: the codes differed.
fn open_key_bundle(
    finish: &Node,
    companion_ephemeral: &[u8; 32],
    primary_ephemeral: &KeyPair,
    identity: &KeyPair,
) -> Option<([u8; 32], [u8; 32])> {
    let reg = stanza::child(finish, "link_code_companion_reg")?;
    let bundle = stanza::child_bytes(reg, "link_code_pairing_wrapped_key_bundle")?;
    if bundle.len() < 32 + 12 + 16 {
        return None;
    }
    let companion_ephemeral = PublicKey::from_djb_public_key_bytes(companion_ephemeral).ok()?;
    let shared_ephemeral = primary_ephemeral
        .private_key
        .calculate_agreement(&companion_ephemeral)
        .ok()?;
    let (salt, rest) = bundle.split_at(32);
    let (nonce, sealed) = rest.split_at(12);
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&shared_ephemeral, Some(salt), KEY_BUNDLE_INFO, &mut key)
        .ok()?;
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let mut plain = Vec::new();
    wacore_libsignal::crypto::aes_256_gcm_decrypt(&key, &nonce, b"", sealed, &mut plain).ok()?;
    if plain.len() != 96 || plain[32..64] != *identity.public_key.public_key_bytes() {
        return None;
    }
    let companion_identity: [u8; 32] = plain[..32].try_into().ok()?;
    let random = &plain[64..96];
    let shared_identity = identity
        .private_key
        .calculate_agreement(&PublicKey::from_djb_public_key_bytes(&companion_identity).ok()?)
        .ok()?;
    let ikm = [&shared_ephemeral[..], &shared_identity[..], random].concat();
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&ikm, None, ADV_SECRET_INFO, &mut adv_secret).ok()?;
    Some((companion_identity, adv_secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
