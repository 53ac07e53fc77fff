//! What the phone sends a companion it has linked, as soon as the companion's keys are on the
//! server: the account's app-state sync key, encrypted over a Signal session built from the
//! bundle the companion uploaded, and — once the companion has gone active and is waiting for
//! its history — a history-sync notification carrying the initial bootstrap inline, with the
//! account's push name. A real phone does this within moments of the link; a client that gets
//! no share waits for one before its first app-state sync, and one that gets no history waits
//! for that.

use std::io::Write as _;
use std::sync::Arc;

use buffa::Message as _;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::KeyPair;
use waproto::whatsapp as wa;

use crate::accounts::{AppStateKey, Delivery, Owed};
use crate::conn::{Conn, lock};
use crate::keys::FetchedBundle;
use crate::shared::Shared;
use crate::signal::{EncryptError, PhoneSession, Sealed};
use crate::stanza::{self, SERVER};

/// What the phone needs from the registry to write to one companion.
struct Outgoing {
    phone: String,
    push_name: String,
    device: u16,
    raw_id: u32,
    identity: KeyPair,
    registration_id: u32,
    channel: Channel,
    /// The key to share, when the share is due.
    key: Option<AppStateKey>,
    /// Whether the history-sync notification is due.
    history: bool,
}

/// The way to the companion: the session the phone has with it, or the bundle to start one.
enum Channel {
    Open(Box<PhoneSession>),
    New(FetchedBundle),
}

/// Sends the companion logged in on `conn` whatever of its bootstrap is due and not yet sent:
/// the key share once its keys are on the server, the history-sync notification once it is
/// also active. Called after every upload, login and activation; each part goes out once per
/// connection, and again on a later one if the connection it went out on closed before the
/// companion's receipt came.
pub(crate) async fn advance(shared: &Arc<Shared>, conn: &Conn) {
    let Some(jid) = conn.jid.as_deref() else {
        return;
    };
    let Some(outgoing) = take_outgoing(shared, jid, conn.id, conn.is_active()) else {
        return;
    };
    let mut messages = Vec::new();
    if let Some(key) = &outgoing.key {
        messages.push((
            Part::KeyShare,
            key_share(key, outgoing.raw_id, outgoing.device),
        ));
    }
    if outgoing.history {
        messages.push((Part::History, history_notification(&outgoing)));
    }
    let (phone, push_name) = (outgoing.phone.clone(), outgoing.push_name.clone());
    let (session, sealed) = seal(outgoing, messages).await;
    let mut delivered = Vec::new();
    for (part, sealed) in sealed {
        let id = stanza::message_id();
        let sent = match sealed {
            Ok(sealed) => conn
                .send(peer_message(&id, &phone, &push_name, sealed))
                .await
                .is_ok(),
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        };
        delivered.push((part, sent.then_some(id)));
    }
    let mut registry = lock(&shared.registry);
    let Some(companion) = registry.companions.get_mut(jid) else {
        return;
    };
    companion.session = session;
    for (part, id) in delivered {
        let owed = part.of(companion);
        owed.state = if id.is_some() {
            Delivery::Sent
        } else {
            Delivery::Waiting
        };
        owed.sent_on = id.is_some().then_some(conn.id);
        owed.receipts.clear();
        owed.message = id;
    }
}

/// One part of a companion's bootstrap.
#[derive(Clone, Copy)]
enum Part {
    KeyShare,
    History,
}

impl Part {
    /// The receipts that say the companion has handled this part: a peer message is answered
    /// with `peer_msg`, a history notification also with `hist_sync` (in either order).
    fn receipts(self) -> &'static [&'static str] {
        match self {
            Part::KeyShare => &["peer_msg"],
            Part::History => &["peer_msg", "hist_sync"],
        }
    }

    /// Where the companion's record keeps this part.
    fn of(self, companion: &mut crate::accounts::Companion) -> &mut Owed {
        match self {
            Part::KeyShare => &mut companion.key_share,
            Part::History => &mut companion.history,
        }
    }
}

/// Records a receipt of `kind` for message `receipt_id` from the connection logged in as `jid`;
/// a part of the bootstrap is delivered once every receipt it takes has come.
pub(crate) fn on_receipt(shared: &Shared, jid: &str, receipt_id: &str, kind: &str) {
    let mut registry = lock(&shared.registry);
    let Some(companion) = registry.companions.get_mut(jid) else {
        return;
    };
    for part in [Part::KeyShare, Part::History] {
        let owed = part.of(companion);
        if owed.message.as_deref() != Some(receipt_id) {
            continue;
        }
        owed.receipts.push(kind.to_string());
        if part
            .receipts()
            .iter()
            .all(|k| owed.receipts.iter().any(|r| r == k))
        {
            owed.state = Delivery::Delivered;
        }
    }
}

/// Claims what is due for `jid` under the lock (so two triggers send each part once) and takes
/// out what encrypting it needs; `None` when nothing is due or the keys are not there yet.
fn take_outgoing(shared: &Shared, jid: &str, connection: u64, active: bool) -> Option<Outgoing> {
    let mut registry = lock(&shared.registry);
    let companion = registry.companions.get_mut(jid)?;
    let share = companion.key_share.due_on(connection);
    let history = active && companion.history.due_on(connection);
    if !share && !history {
        return None;
    }
    let channel = match companion.session.take() {
        Some(session) => Channel::Open(Box::new(session)),
        None => Channel::New(companion.keys.as_mut()?.fetch()),
    };
    // Claimed for this connection: another trigger on it finds nothing due.
    for (due, owed) in [
        (share, &mut companion.key_share),
        (history, &mut companion.history),
    ] {
        if due {
            owed.state = Delivery::Sent;
            owed.sent_on = Some(connection);
        }
    }
    let (phone, device) = (companion.phone.clone(), companion.device);
    let account = registry.phone(&phone);
    Some(Outgoing {
        device,
        raw_id: account.raw_id,
        identity: account.identity.clone(),
        registration_id: account.registration_id,
        push_name: account.push_name.clone(),
        key: share.then(|| account.app_state_key.clone()),
        history,
        phone,
        channel,
    })
}

/// Encrypts `messages` in order, starting the session from the fetched bundle when there is
/// none yet. Hands back the session (to be kept for the next message) with each outcome.
async fn seal(
    outgoing: Outgoing,
    messages: Vec<(Part, wa::Message)>,
) -> (
    Option<PhoneSession>,
    Vec<(Part, Result<Sealed, EncryptError>)>,
) {
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
            Err(e) => {
                tracing::warn!("{e}");
                let failed = messages.into_iter().map(|(part, _)| (part, Err(e.clone())));
                return (None, failed.collect());
            }
        },
    };
    let mut sealed = Vec::new();
    for (part, message) in messages {
        sealed.push((part, session.encrypt(&padded(&message)).await));
    }
    (Some(session), sealed)
}

/// The initial bootstrap a phone sends a new companion: no chats (the sandbox has none), the
/// account's push name, inline and zlib-compressed as WhatsApp sends a small first chunk.
fn history_notification(outgoing: &Outgoing) -> wa::Message {
    let history = wa::HistorySync {
        sync_type: wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP,
        chunk_order: Some(1),
        progress: Some(100),
        pushnames: vec![wa::Pushname {
            id: Some(format!("{}@{SERVER}", outgoing.phone)),
            pushname: Some(outgoing.push_name.clone()),
        }],
        ..Default::default()
    };
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = zlib
        .write_all(&history.encode_to_vec())
        .and_then(|()| zlib.finish())
        .unwrap_or_default();
    let notification = wa::message::HistorySyncNotification {
        sync_type: Some(wa::message::HistorySyncType::INITIAL_BOOTSTRAP),
        chunk_order: Some(1),
        progress: Some(100),
        initial_hist_bootstrap_inline_payload: Some(compressed),
        ..Default::default()
    };
    wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::HISTORY_SYNC_NOTIFICATION),
            history_sync_notification: buffa::MessageField::some(notification),
            ..Default::default()
        }),
        ..Default::default()
    }
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

/// A message from the phone (device 0 of `phone`) to one of its own companions; `notify` carries
/// the sender's push name, as on every message WhatsApp relays.
fn peer_message(id: &str, phone: &str, push_name: &str, sealed: Sealed) -> wacore_binary::Node {
    NodeBuilder::new("message")
        .attr("from", format!("{phone}@{SERVER}"))
        .attr("id", id)
        .attr("notify", push_name)
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
