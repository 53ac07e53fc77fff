//! What the phone sends a companion it has linked, as soon as the companion's keys are on the
//! server: the account's app-state sync key, encrypted over a Signal session built from the
//! bundle the companion uploaded. A real phone does this within moments of the link; a client
//! that gets no share waits for one before its first app-state sync.

use std::sync::Arc;

use buffa::Message as _;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::KeyPair;
use waproto::whatsapp as wa;

use crate::accounts::{AppStateKey, KeyShare};
use crate::conn::{Conn, lock};
use crate::keys::FetchedBundle;
use crate::shared::Shared;
use crate::signal::{EncryptError, PhoneSession, Sealed};
use crate::stanza::{self, SERVER};

/// What the phone needs from the registry to write to one companion.
struct Outgoing {
    phone: String,
    device: u16,
    raw_id: u32,
    key: AppStateKey,
    channel: Channel,
    identity: KeyPair,
    registration_id: u32,
}

/// The way to the companion: the session the phone has with it, or the bundle to start one.
enum Channel {
    Open(Box<PhoneSession>),
    New(FetchedBundle),
}

/// Shares the app-state key with the companion logged in on `conn`, unless it already has it or
/// has not uploaded its keys yet. Called after every upload and every login.
pub(crate) async fn share_app_state_keys(shared: &Arc<Shared>, conn: &Conn) {
    let Some(jid) = conn.jid.as_deref() else {
        return;
    };
    let Some(outgoing) = take_outgoing(shared, jid) else {
        return;
    };
    let message_id = stanza::message_id();
    let phone = outgoing.phone.clone();
    let (session, sealed) = seal(outgoing).await;
    let sent = match sealed {
        Ok(sealed) => conn
            .send(peer_message(&message_id, &phone, sealed))
            .await
            .is_ok(),
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let mut registry = lock(&shared.registry);
    if let Some(companion) = registry.companions.get_mut(jid) {
        companion.session = session;
        if sent {
            companion.key_share = KeyShare::Sent;
            companion.key_share_message = Some(message_id);
        } else {
            companion.key_share = KeyShare::Waiting;
        }
    }
}

/// Marks the key share delivered when `receipt` (from the connection logged in as `jid`) is the
/// companion's receipt for it.
pub(crate) fn on_receipt(shared: &Shared, jid: &str, receipt_id: &str) {
    let mut registry = lock(&shared.registry);
    if let Some(companion) = registry.companions.get_mut(jid)
        && companion.key_share_message.as_deref() == Some(receipt_id)
    {
        companion.key_share = KeyShare::Delivered;
    }
}

/// Claims the share for `jid` under the lock (so two triggers send it once) and takes out what
/// encrypting it needs; `None` when there is nothing to send.
fn take_outgoing(shared: &Shared, jid: &str) -> Option<Outgoing> {
    let mut registry = lock(&shared.registry);
    let companion = registry.companions.get_mut(jid)?;
    if companion.key_share != KeyShare::Waiting {
        return None;
    }
    let channel = match companion.session.take() {
        Some(session) => Channel::Open(Box::new(session)),
        None => Channel::New(companion.keys.as_mut()?.fetch()),
    };
    companion.key_share = KeyShare::Sent;
    let (phone, device) = (companion.phone.clone(), companion.device);
    let account = registry.phone(&phone);
    Some(Outgoing {
        device,
        raw_id: account.raw_id,
        key: account.app_state_key.clone(),
        identity: account.identity.clone(),
        registration_id: account.registration_id,
        phone,
        channel,
    })
}

/// Encrypts the share, starting the session from the fetched bundle when there is none yet.
/// Hands back the session (to be kept for the next message) with the outcome.
async fn seal(outgoing: Outgoing) -> (Option<PhoneSession>, Result<Sealed, EncryptError>) {
    let mut session = match outgoing.channel {
        Channel::Open(session) => *session,
        Channel::New(bundle) => match PhoneSession::start(
            &outgoing.identity,
            outgoing.registration_id,
            &outgoing.phone,
            u32::from(outgoing.device),
            &bundle,
        )
        .await
        {
            Ok(session) => session,
            Err(e) => return (None, Err(e)),
        },
    };
    let plaintext = padded(&key_share(&outgoing.key, outgoing.raw_id, outgoing.device));
    let sealed = session.encrypt(&plaintext).await;
    (Some(session), sealed)
}

/// The `Message` carrying the account's app-state key.
fn key_share(key: &AppStateKey, raw_id: u32, device: u16) -> wa::Message {
    let fingerprint = wa::message::AppStateSyncKeyFingerprint {
        raw_id: Some(raw_id),
        current_index: Some(u32::from(device)),
        device_indexes: vec![0, u32::from(device)],
    };
    let shared_key = wa::message::AppStateSyncKey {
        key_id: buffa::MessageField::some(wa::message::AppStateSyncKeyId {
            key_id: Some(key.id.clone()),
        }),
        key_data: buffa::MessageField::some(wa::message::AppStateSyncKeyData {
            key_data: Some(key.data.to_vec()),
            fingerprint: buffa::MessageField::some(fingerprint),
            timestamp: Some(key.timestamp_ms),
        }),
    };
    wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: buffa::MessageField::some(
                wa::message::AppStateSyncKeyShare {
                    keys: vec![shared_key],
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serializes a message with WhatsApp's padding: 1 to 16 bytes, each holding the pad length.
fn padded(message: &wa::Message) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let pad = rand::random_range(1u8..=16);
    bytes.resize(bytes.len() + usize::from(pad), pad);
    bytes
}

/// A message from the phone (device 0 of `phone`) to one of its own companions.
fn peer_message(id: &str, phone: &str, sealed: Sealed) -> wacore_binary::Node {
    NodeBuilder::new("message")
        .attr("from", format!("{phone}@{SERVER}"))
        .attr("id", id)
        .attr("type", "text")
        .attr("category", "peer")
        .attr("t", stanza::now_secs().to_string())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", sealed.kind)
            .bytes(sealed.ciphertext)
            .build()])
        .build()
}
