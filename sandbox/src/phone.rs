//! The simulated phone: it scans a companion's QR code or enters its pairing code, signs the new
//! device into the account (ADV), and can unlink it again.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use buffa::Message as _;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use thiserror::Error;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};
use waproto::whatsapp as wa;

use crate::accounts::{AccountKind, Companion, Owed};
use crate::conn::{Conn, RequestError, device_jid, lock};
use crate::passkey::{self, HandshakeError};
use crate::shared::Shared;
use crate::stanza;
use crate::webauthn::Credential;

/// Why a phone operation failed.
#[derive(Debug, Error)]
pub enum PhoneError {
    /// The text is not a WhatsApp linking QR code.
    #[error(
        "qr `{0}` is not a WhatsApp linking code: expected `ref,noise-key,identity-key,adv-secret,platform`"
    )]
    MalformedQr(String),
    /// No connected client holds this QR ref (it disconnected, or the code is from elsewhere).
    #[error(
        "no connected client is showing QR ref `{0}`: it may have disconnected or already paired"
    )]
    UnknownQrRef(String),
    /// The QR code's keys are not those of the client that holds the ref.
    #[error("qr code keys do not belong to the client holding ref `{0}`")]
    ForeignQr(String),
    /// A phone number that WhatsApp would not accept.
    #[error("phone `{0}` must be 7 to 15 digits in international format without a leading 0")]
    InvalidPhone(String),
    /// A pairing code of the wrong shape.
    #[error("pairing code `{0}` must be 8 letters or digits, optionally as XXXX-XXXX")]
    MalformedCode(String),
    /// No client asked for a pairing code for this phone.
    #[error("no client is waiting for a pairing code for phone {0}: request a code first")]
    NoPendingCode(String),
    /// The code entered is not the one the companion shows; the companion is told the link failed.
    #[error("pairing code does not match the one shown by the companion for phone {0}")]
    WrongCode(String),
    /// The companion refused the signed device identity.
    #[error("the companion refused pairing: {code} {text}")]
    Refused {
        /// WhatsApp error code the client answered with.
        code: String,
        /// Its text.
        text: String,
    },
    /// The companion did not answer the phone in time or disconnected.
    #[error("the companion stopped answering during pairing: {0}")]
    CompanionGone(#[from] RequestError),
    /// No companion with this JID is linked.
    #[error("no companion device `{0}` is linked")]
    NotLinked(String),
    /// A passkey account's phone refused the companion's passkey handshake (the assertion, its
    /// commitment or its pairing request); nothing was linked. The text names the phone and the
    /// check that failed.
    #[error("{0}")]
    PasskeyRejected(String),
    /// The companion of a passkey link did not take its next step in time; nothing was linked.
    #[error(
        "phone {phone} gave up the passkey link: the companion sent no {waiting_for} within {after:?}"
    )]
    PasskeyTimeout {
        /// The phone linking.
        phone: String,
        /// The step it waited for.
        waiting_for: &'static str,
        /// How long it waited, on the sandbox's scaled clock.
        after: Duration,
    },
    /// The phone holds no passkey: its account is not a passkey account.
    #[error("phone {0} holds no passkey: make its account `passkey` first")]
    NotPasskeyAccount(String),
    /// WebAuthn request options the phone's authenticator cannot answer.
    #[error("the passkey request options {0}")]
    InvalidPasskeyOptions(String),
    /// The companion is linked but no client of it is connected to hear what the server says.
    #[error("companion device `{0}` is linked but offline: connect its client first")]
    Offline(String),
}

/// A companion device the phone just linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    /// The companion's device JID, e.g. `628123456789:1@s.whatsapp.net`.
    pub jid: String,
    /// The companion's LID.
    pub lid: String,
    /// The phone number it was linked to.
    pub phone: String,
    /// The business name the phone's account gave in `pair-success`, for a business account.
    pub business_name: Option<String>,
    /// For a passkey account, the verification code the phone derived in the passkey handshake,
    /// as `XXXX-XXXX`: the companion shows its user the same code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passkey_code: Option<String>,
}

struct Qr {
    reference: String,
    noise: [u8; 32],
    identity: [u8; 32],
    adv_secret: [u8; 32],
}

/// The prefix a QR code carries when it is a deep link for the phone's camera.
const DEEP_LINK_PREFIX: &str = "https://wa.me/settings/linked_devices#";

fn parse_qr(qr: &str) -> Result<Qr, PhoneError> {
    let malformed = || PhoneError::MalformedQr(qr.chars().take(80).collect());
    let text = qr.trim();
    let text = text.strip_prefix(DEEP_LINK_PREFIX).unwrap_or(text);
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() < 5 || parts[0].is_empty() {
        return Err(malformed());
    }
    let key = |s: &str| -> Result<[u8; 32], PhoneError> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(malformed)
    };
    Ok(Qr {
        reference: parts[0].to_string(),
        noise: key(parts[1])?,
        identity: key(parts[2])?,
        adv_secret: key(parts[3])?,
    })
}

/// Checks a phone number the way WhatsApp's linking screen does and returns its digits.
pub(crate) fn normalize_phone(phone: &str) -> Result<String, PhoneError> {
    let digits = phone.trim().strip_prefix('+').unwrap_or(phone.trim());
    if digits.len() < 7
        || digits.len() > 15
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(PhoneError::InvalidPhone(phone.to_string()));
    }
    Ok(digits.to_string())
}

/// Scans a companion's QR code with the phone `phone` (a fresh phone when `None`).
pub(crate) async fn scan_qr(
    shared: &Arc<Shared>,
    phone: Option<&str>,
    qr: &str,
) -> Result<Linked, PhoneError> {
    let qr = parse_qr(qr)?;
    let phone = phone.map(normalize_phone).transpose()?;
    let conn = showing(shared, &qr.reference)?;
    let phone = phone.unwrap_or_else(|| lock(&shared.registry).fresh_phone_number());
    let identity_matches = conn
        .registration
        .as_ref()
        .is_some_and(|r| r.identity == qr.identity);
    if conn.client_static != qr.noise || !identity_matches {
        return Err(PhoneError::ForeignQr(qr.reference));
    }
    complete_pairing(shared, &conn, &phone, qr.identity, qr.adv_secret).await
}

/// The registering client a QR code `qr` is showing, and the code's ref.
pub(crate) fn showing_qr(shared: &Shared, qr: &str) -> Result<(Arc<Conn>, String), PhoneError> {
    let reference = parse_qr(qr)?.reference;
    Ok((showing(shared, &reference)?, reference))
}

/// The registering client that holds QR ref `reference`.
fn showing(shared: &Shared, reference: &str) -> Result<Arc<Conn>, PhoneError> {
    let registry = lock(&shared.registry);
    registry
        .refs
        .get(reference)
        .and_then(|id| registry.connections.get(id))
        .cloned()
        .ok_or_else(|| PhoneError::UnknownQrRef(reference.to_string()))
}

/// Signs the companion into `phone`'s account with `pair-success`, waits for its countersigned
/// identity, records it, and ends the stream with 515 so it reconnects and logs in.
pub(crate) async fn complete_pairing(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    phone: &str,
    companion_identity: [u8; 32],
    adv_secret: [u8; 32],
) -> Result<Linked, PhoneError> {
    // A passkey account links only once the companion proves its passkey, and then signs with
    // the ADV secret the companion sent under the handshake's key: the QR's or the code's one
    // is what a companion without the passkey would know too.
    let passkey = passkey_handshake(shared, conn, phone, &companion_identity).await?;
    let adv_secret = passkey.as_ref().map_or(adv_secret, |p| p.adv_secret);
    let (identity, raw_id, device, lid_user, account) = {
        let mut registry = lock(&shared.registry);
        let p = registry.phone(phone);
        let device = p.next_device;
        p.next_device += 1;
        (
            p.identity.clone(),
            p.raw_id,
            device,
            p.lid_user.clone(),
            p.account,
        )
    };
    let business_name = account.business_name(phone);
    let jid = device_jid(phone, u32::from(device));
    let lid = format!("{lid_user}:{device}@lid");

    let container = signed_device_identity(
        &identity,
        raw_id,
        u32::from(device),
        &companion_identity,
        &adv_secret,
        account,
    );
    let mut children = vec![
        NodeBuilder::new("device-identity").bytes(container).build(),
        NodeBuilder::new("device")
            .attr("jid", jid.as_str())
            .attr("lid", lid.as_str())
            .build(),
        NodeBuilder::new("platform").attr("name", "android").build(),
        // The account's state as the phone reports it; the sandbox's chats are LID-migrated.
        NodeBuilder::new("client-props")
            .bytes(
                wa::ClientPairingProps {
                    is_chat_db_lid_migrated: Some(true),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .build(),
    ];
    if let Some(name) = &business_name {
        children.push(NodeBuilder::new("biz").attr("name", name.as_str()).build());
    }
    let pair_success = NodeBuilder::new("pair-success").children(children).build();
    let mut iq = stanza::iq_set(&conn.next_id(), "md", pair_success);
    iq.attrs.insert("t", stanza::now_secs().to_string());
    let answer = conn.request(iq).await?;
    let device_identity = check_countersigned(&answer, &identity, &companion_identity)?;

    {
        let mut registry = lock(&shared.registry);
        registry.refs.retain(|_, c| *c != conn.id);
        registry.link_codes.values_mut().for_each(|requests| {
            requests.retain(|r| r.connection != conn.id);
        });
        registry.companions.insert(
            jid.clone(),
            Companion {
                jid: jid.clone(),
                lid: lid.clone(),
                phone: phone.to_string(),
                device,
                noise_static: conn.client_static,
                connection: None,
                device_identity,
                keys: None,
                session: None,
                key_share: Owed::default(),
                history: Owed::default(),
            },
        );
    }
    conn.close_with(stanza::stream_error(515)).await;
    Ok(Linked {
        jid,
        lid,
        phone: phone.to_string(),
        business_name,
        passkey_code: passkey.map(|p| p.code),
    })
}

/// For a passkey account, runs the passkey handshake with the companion on `conn`; `None` for
/// any other account.
async fn passkey_handshake(
    shared: &Shared,
    conn: &Conn,
    phone: &str,
    companion_identity: &[u8; 32],
) -> Result<Option<passkey::PasskeyLink>, PhoneError> {
    let registered = {
        let mut registry = lock(&shared.registry);
        let p = registry.phone(phone);
        match p.account {
            AccountKind::Passkey => Some(
                p.passkey
                    .get_or_insert_with(|| Arc::new(Credential::generate()))
                    .registered(),
            ),
            _ => None,
        }
    };
    let Some(registered) = registered else {
        return Ok(None);
    };
    let time_scale = shared.config.time_scale;
    let outcome = passkey::run(conn, &registered, companion_identity, time_scale).await;
    outcome.map(Some).map_err(|e| match e {
        HandshakeError::Rejected(why) => PhoneError::PasskeyRejected(format!(
            "phone {phone} refused the companion's passkey link: {why}"
        )),
        HandshakeError::Timeout { waiting_for, after } => PhoneError::PasskeyTimeout {
            phone: phone.to_string(),
            waiting_for,
            after,
        },
        HandshakeError::Gone => PhoneError::CompanionGone(RequestError::Gone),
    })
}

/// The phone's passkey signs an assertion for the WebAuthn request options `options_json`, as
/// its password manager would after verifying its user; the assertion is in WhatsApp Web's JSON
/// shape, ready for a companion's `passkey_prologue`.
pub(crate) fn passkey_assertion(
    shared: &Shared,
    phone: &str,
    options_json: &str,
) -> Result<String, PhoneError> {
    let phone = normalize_phone(phone)?;
    let credential = {
        let registry = lock(&shared.registry);
        registry
            .phones
            .get(&phone)
            .filter(|p| p.account == AccountKind::Passkey)
            .and_then(|p| p.passkey.clone())
    };
    let credential = credential.ok_or(PhoneError::NotPasskeyAccount(phone))?;
    credential
        .assert(options_json)
        .map_err(|e| PhoneError::InvalidPasskeyOptions(e.to_string()))
}

/// The `ADVSignedDeviceIdentityHMAC` of `pair-success`: the phone's account signature over the
/// device details and the companion's identity key, wrapped in an HMAC keyed by the ADV secret
/// the companion holds. The details and the signature are E2EE-typed for every account; a
/// hosted account says HOSTED on the HMAC container (whose HMAC then covers the hosted prefix),
/// as hosted phones do.
fn signed_device_identity(
    identity: &KeyPair,
    raw_id: u32,
    key_index: u32,
    companion_identity: &[u8; 32],
    adv_secret: &[u8; 32],
    account: AccountKind,
) -> Vec<u8> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(stanza::now_secs()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let signed_message = [&[6u8, 0][..], &details, companion_identity].concat();
    let account_signature = identity
        .private_key
        .calculate_signature(&signed_message, &mut rand::rng())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(identity.public_key.public_key_bytes().to_vec()),
        account_signature: Some(account_signature),
        device_signature: None,
    }
    .encode_to_vec();
    let hosted = account == AccountKind::Hosted;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(adv_secret)
        .expect("HMAC takes a key of any length");
    if hosted {
        mac.update(&[6, 5]);
    }
    mac.update(&signed);
    wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(if hosted {
            wa::ADVEncryptionType::HOSTED
        } else {
            wa::ADVEncryptionType::E2EE
        }),
    }
    .encode_to_vec()
}

/// Checks the companion's answer to `pair-success`: its own device signature over the identity
/// the phone signed. Returns the countersigned identity, which the server hands out with the
/// companion's keys.
fn check_countersigned(
    answer: &Node,
    account: &KeyPair,
    companion_identity: &[u8; 32],
) -> Result<Vec<u8>, PhoneError> {
    if stanza::attr(answer, "type").as_deref() == Some("error") {
        let error = stanza::child(answer, "error");
        return Err(PhoneError::Refused {
            code: error
                .and_then(|e| stanza::attr(e, "code"))
                .unwrap_or_default(),
            text: error
                .and_then(|e| stanza::attr(e, "text"))
                .unwrap_or_default(),
        });
    }
    let refused = |text: &str| PhoneError::Refused {
        code: "400".into(),
        text: text.into(),
    };
    let bytes = stanza::child(answer, "pair-device-sign")
        .and_then(|s| stanza::child_bytes(s, "device-identity"))
        .ok_or_else(|| refused("no pair-device-sign in the answer"))?;
    let signed = waproto::codec::adv_signed_device_identity_decode(&bytes)
        .map_err(|_| refused("pair-device-sign is not a signed device identity"))?;
    let details = signed.details.unwrap_or_default();
    let device_signature = signed.device_signature.unwrap_or_default();
    let message = [
        &[6u8, 1][..],
        &details,
        companion_identity,
        account.public_key.public_key_bytes(),
    ]
    .concat();
    let valid = PublicKey::from_djb_public_key_bytes(companion_identity)
        .map(|k| k.verify_signature(&message, &device_signature))
        .unwrap_or(false);
    if !valid {
        return Err(refused("device signature does not verify"));
    }
    Ok(bytes)
}

/// Makes `phone`'s account one of `kind`; companions it links from now on see it.
pub(crate) fn set_account(
    shared: &Shared,
    phone: &str,
    kind: AccountKind,
) -> Result<(), PhoneError> {
    let phone = normalize_phone(phone)?;
    let mut registry = lock(&shared.registry);
    let p = registry.phone(&phone);
    p.account = kind;
    // The account's passkey is registered once and kept, as a user's passkey outlives a
    // switch of the account to another kind and back.
    if kind == AccountKind::Passkey && p.passkey.is_none() {
        p.passkey = Some(Arc::new(Credential::generate()));
    }
    Ok(())
}

/// Unlinks a companion: it is forgotten, and if online it is told at once (`device_removed`).
pub(crate) async fn unlink(shared: &Shared, jid: &str) -> Result<(), PhoneError> {
    let conn = {
        let mut registry = lock(&shared.registry);
        let companion = registry
            .companions
            .remove(jid)
            .ok_or_else(|| PhoneError::NotLinked(jid.to_string()))?;
        companion
            .connection
            .and_then(|id| registry.connections.get(&id).cloned())
    };
    if let Some(conn) = conn {
        conn.close_with(stanza::device_removed()).await;
    }
    Ok(())
}
