//! What the sandbox remembers: the phones it simulates, the companion devices linked to them,
//! and the clients connected right now.
//!
//! Everything lives in memory for the sandbox's lifetime, so a registered client that reconnects
//! (even to a restarted gateway) logs back in without a new scan.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wacore_libsignal::protocol::KeyPair;

use crate::conn::Conn;
use crate::history::History;
use crate::keys::{KeyBundle, SignedPrekey};
use crate::signal::PhoneSession;
use crate::webauthn::Credential;

/// A simulated primary phone: one WhatsApp account.
pub(crate) struct Phone {
    /// The account's identity key; it signs every companion's device identity (ADV).
    pub identity: KeyPair,
    /// The user part of the account's LID.
    pub lid_user: String,
    /// The next companion device number on this account (the phone itself is device 0).
    pub next_device: u16,
    /// Identifies the account in signed device identities.
    pub raw_id: u32,
    /// The phone's Signal registration id.
    pub registration_id: u32,
    /// The phone's signed prekey, handed to companions that start a session with it.
    pub signed_prekey: SignedPrekey,
    /// The account's push name, which the phone tells its companions.
    pub push_name: String,
    /// What kind of account it is; it decides what `pair-success` carries.
    pub account: AccountKind,
    /// The account's app-state sync key, which the phone shares with every companion it links.
    pub app_state_key: AppStateKey,
    /// The passkey registered for the account, made when it first became a passkey account;
    /// shared so the phone can sign with it after letting go of the registry.
    pub passkey: Option<Arc<Credential>>,
    /// The next app-state sync a companion of this account asks for is refused.
    pub refuse_app_state_sync: bool,
}

/// What kind of WhatsApp account a simulated phone holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A personal account.
    #[default]
    Personal,
    /// A WhatsApp Business account: `pair-success` names the business.
    Business,
    /// A hosted business account (Cloud API, coexistence): `pair-success` says HOSTED on the
    /// outside and signs as E2EE inside, as such phones do. whatsapp-rust 0.7.0 checks the
    /// signature with the outer type's prefix and refuses it (fixed upstream, not released).
    Hosted,
    /// A personal account protected by a passkey (WhatsApp's SHORTCAKE_PASSKEY linking): before
    /// `pair-success` the companion must present a WebAuthn assertion signed with the account's
    /// passkey, then agree a key with the phone and send its ADV secret under it. The phone's
    /// test passkey signs assertions through `Sandbox::passkey_assertion`.
    Passkey,
}

impl AccountKind {
    /// The business name `pair-success` carries for `number`'s account, if it is a business.
    pub fn business_name(self, number: &str) -> Option<String> {
        let last4 = last_four(number);
        match self {
            Self::Personal | Self::Passkey => None,
            Self::Business | Self::Hosted => Some(format!("Sandbox Business {last4}")),
        }
    }
}

/// The last four digits of a phone number: what the sandbox names an account's push name and
/// business after, so each is told apart at a glance.
fn last_four(number: &str) -> &str {
    &number[number.len().saturating_sub(4)..]
}

/// An app-state sync key: it encrypts the account's settings, contacts and chat state, and only
/// the account's own devices hold it.
#[derive(Clone)]
pub(crate) struct AppStateKey {
    /// The key's id, as the phone names it in every share and every patch.
    pub id: Vec<u8>,
    /// The 32-byte key.
    pub data: [u8; 32],
    /// When the phone made it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// How far one message the phone owes a new companion (its app-state key share, its initial
/// history) has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Not sent yet: the companion has not uploaded the keys a session needs, or (for the
    /// history) has not gone active.
    #[default]
    Waiting,
    /// Sent, with no receipt yet.
    Sent,
    /// The companion sent a receipt for it: it decrypted and handled it.
    Delivered,
}

/// One message the phone owes a companion, the id it went out under once sent, and the kinds
/// of receipt the companion has sent for it.
#[derive(Default)]
pub(crate) struct Owed {
    /// How far it got.
    pub state: Delivery,
    /// The message id, once sent.
    pub message: Option<String>,
    /// The `type`s of the receipts received for it (`peer_msg`, `hist_sync`).
    pub receipts: Vec<String>,
    /// The connection it went out on. A socket that closes before the receipt comes takes the
    /// message with it; WhatsApp holds what a device missed and delivers it at its next login,
    /// and so does the sandbox.
    pub sent_on: Option<u64>,
}

impl Owed {
    /// Whether it is to go out on connection `connection`: never sent, or sent on another
    /// connection and not received.
    pub fn due_on(&self, connection: u64) -> bool {
        match self.state {
            Delivery::Waiting => true,
            Delivery::Sent => self.sent_on != Some(connection),
            Delivery::Delivered => false,
        }
    }
}

/// A companion device linked to a phone.
pub(crate) struct Companion {
    /// `628…:N@s.whatsapp.net`.
    pub jid: String,
    /// `…:N@lid`.
    pub lid: String,
    /// The phone number it is linked to.
    pub phone: String,
    /// Its device number on the account.
    pub device: u16,
    /// The Noise static key it registered with; a login must present the same key.
    pub noise_static: [u8; 32],
    /// The live connection logged in as this device, if any.
    pub connection: Option<u64>,
    /// Its signed device identity, as it countersigned it at pairing.
    pub device_identity: Vec<u8>,
    /// The keys it uploaded, once it has.
    pub keys: Option<KeyBundle>,
    /// The phone's Signal session with it; taken out while a message is being encrypted.
    pub session: Option<PhoneSession>,
    /// The phone's app-state key share for it.
    pub key_share: Owed,
    /// The history-sync notification of its initial bootstrap.
    pub history: Owed,
}

/// A linked companion as the sandbox reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountInfo {
    /// The companion's phone-number JID, e.g. `628123456789:1@s.whatsapp.net`.
    pub jid: String,
    /// The companion's LID.
    pub lid: String,
    /// The phone number it is linked to.
    pub phone: String,
    /// Whether a client is logged in as this device right now.
    pub connected: bool,
    /// One-time prekeys the server holds for it (0 until it uploads).
    pub prekeys: usize,
    /// How far the phone got in sharing its app-state keys with it.
    pub key_share: Delivery,
    /// How far the phone got in sending it its initial history.
    pub history: Delivery,
}

/// What a connected client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// A new device: it holds QR refs or is pairing by code.
    Registering,
    /// Linked and logged in.
    LoggedIn,
}

/// A connected client as the sandbox reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// The sandbox's number for this connection.
    pub connection: u64,
    /// What it is doing.
    pub state: ClientState,
    /// Its device JID once logged in.
    pub jid: Option<String>,
}

/// A pairing-code flow a companion started, waiting for its phone to enter the code.
pub(crate) struct LinkCodeRequest {
    /// The connection that asked.
    pub connection: u64,
    /// The opaque reference the server handed out.
    pub pairing_ref: Vec<u8>,
    /// The companion's ephemeral key, wrapped with the code.
    pub wrapped_companion_ephemeral: Vec<u8>,
}

/// The sandbox's whole mutable state, behind one lock held only for map operations.
#[derive(Default)]
pub(crate) struct Registry {
    next_connection: u64,
    /// Live connections by number.
    pub connections: HashMap<u64, Arc<Conn>>,
    /// QR ref → the registering connection it was issued to.
    pub refs: HashMap<String, u64>,
    /// Phone number → pairing-code requests for it, newest last.
    pub link_codes: HashMap<String, Vec<LinkCodeRequest>>,
    /// Phone number → the simulated phone.
    pub phones: HashMap<String, Phone>,
    /// Device JID → linked companion.
    pub companions: HashMap<String, Companion>,
    /// The record of every connection numbered, kept under this lock so that a connection's
    /// record changes together with the maps above.
    pub history: History,
    next_phone: u64,
}

impl Registry {
    /// Numbers a new connection whose socket opened at `opened_at_ms`, and starts its record.
    pub fn allocate_connection(&mut self, opened_at_ms: u64) -> u64 {
        self.next_connection += 1;
        self.history.opened(self.next_connection, opened_at_ms);
        self.next_connection
    }

    /// How many connections were ever numbered: the live ones and those gone.
    pub fn connections_made(&self) -> u64 {
        self.next_connection
    }

    /// A phone number no simulated phone uses yet (Indonesian-style, as in the API's examples).
    pub fn fresh_phone_number(&mut self) -> String {
        loop {
            self.next_phone += 1;
            let number = format!("62812{:08}", self.next_phone);
            if !self.phones.contains_key(&number) {
                return number;
            }
        }
    }

    /// The simulated phone for `number`, created on first use.
    pub fn phone(&mut self, number: &str) -> &mut Phone {
        let seq = self.phones.len() as u64 + 1;
        self.phones.entry(number.to_string()).or_insert_with(|| {
            let identity = KeyPair::generate(&mut rand::rng());
            let signed_prekey = SignedPrekey::generate(&identity, 1);
            Phone {
                push_name: format!("Sandbox {}", last_four(number)),
                account: AccountKind::Personal,
                identity,
                signed_prekey,
                lid_user: format!("1{:014}", 20_000_000_000_000u64 + seq * 7919),
                next_device: 1,
                raw_id: rand::random(),
                // Signal registration ids are 14 bits, never 0.
                registration_id: rand::random_range(1..16_381),
                app_state_key: AppStateKey {
                    id: [&[0u8, 0][..], &rand::random::<[u8; 4]>()].concat(),
                    data: rand::random(),
                    timestamp_ms: crate::stanza::now_millis(),
                },
                passkey: None,
                refuse_app_state_sync: false,
            }
        })
    }

    /// Drops everything that refers to a closed connection.
    pub fn forget_connection(&mut self, connection: u64) {
        self.history.closed(connection);
        self.connections.remove(&connection);
        self.refs.retain(|_, c| *c != connection);
        for requests in self.link_codes.values_mut() {
            requests.retain(|r| r.connection != connection);
        }
        self.link_codes.retain(|_, r| !r.is_empty());
        for companion in self.companions.values_mut() {
            if companion.connection == Some(connection) {
                companion.connection = None;
            }
        }
    }

    /// Linked companions, sorted by JID.
    pub fn account_infos(&self) -> Vec<AccountInfo> {
        let mut out: Vec<AccountInfo> = self
            .companions
            .values()
            .map(|c| AccountInfo {
                jid: c.jid.clone(),
                lid: c.lid.clone(),
                phone: c.phone.clone(),
                connected: c.connection.is_some(),
                prekeys: c.keys.as_ref().map_or(0, |k| k.prekeys.len()),
                key_share: c.key_share.state,
                history: c.history.state,
            })
            .collect();
        out.sort_by(|a, b| a.jid.cmp(&b.jid));
        out
    }
}
