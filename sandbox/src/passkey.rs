//! Linking to a passkey account (WhatsApp's SHORTCAKE_PASSKEY): the server's and the primary
//! phone's side of the handshake that precedes `pair-success`.
//!
//! A passkey account links a new device only once the companion proves the account's passkey.
//! The server asks for a WebAuthn assertion (`passkey_prologue_request`); the companion answers
//! with it and a commitment to an ephemeral key and a nonce (`passkey_prologue`); the phone
//! replies with its own ephemeral key and nonce (`crsc_continuation`); the companion reveals its
//! nonce (`companion_nonce`), from which both sides derive the verification code its user
//! compares with the phone's; last the companion sends a fresh ADV secret encrypted under the
//! key both derived (`encrypted_pairing_request`). `pair-success` is then signed with that
//! secret instead of the one in the QR code or the pairing code.
//!
//! The handshake runs inside the phone's linking call, on the companion's connection, and
//! answers the companion's requests itself (the socket code diverts them here with
//! [`divert`]); it leaves nothing running once it returns.

use std::time::Duration;

use buffa::Message as _;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wacore::shortcake::ShortcakeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};
use waproto::whatsapp as wa;

use crate::clock::ScaledRuntime;
use crate::conn::Conn;
use crate::stanza::{self, SERVER};
use crate::webauthn::RegisteredPasskey;

/// How long the companion's user has for each step (the assertion, comparing the code), as the
/// request options tell the authenticator. The sandbox waits that long on its scaled clock.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the phone takes to answer a step the server relayed to it. whatsapp-rust records a
/// step's state only once the answer to its request reaches it, and handles every stanza in a
/// task of its own, so a phone answering in the same breath as the server could overtake that
/// record (then the continuation finds no session, or `pair-success` checks the old ADV secret).
/// A real phone is a network round trip away; this plays that round trip.
const PHONE_ROUND_TRIP: Duration = Duration::from_millis(200);

/// The first child of every request the companion makes in this handshake.
const HANDSHAKE_REQUESTS: [&str; 5] = [
    "ref",
    "passkey_request_options",
    "passkey_prologue",
    "companion_nonce",
    "encrypted_pairing_request",
];

/// What a completed handshake gives the phone.
pub(crate) struct PasskeyLink {
    /// The ADV secret the companion sent; `pair-success` is signed with it.
    pub adv_secret: [u8; 32],
    /// The verification code the phone derived, as `XXXX-XXXX`: the same one the companion
    /// shows its user.
    pub code: String,
}

/// Why a passkey handshake ended without a link.
#[derive(Debug, Error)]
pub(crate) enum HandshakeError {
    /// The phone refused something the companion sent; the companion got an error answer.
    #[error("{0}")]
    Rejected(String),
    /// The companion did not take its next step in time.
    #[error("the companion sent no {waiting_for} within {after:?}")]
    Timeout {
        /// The request the phone was waiting for.
        waiting_for: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The companion's connection closed.
    #[error("the companion disconnected during the passkey handshake")]
    Gone,
}

/// Takes the client's passkey-handshake requests off the ordinary `md` handling: they go to the
/// handshake the phone runs on this connection, or are refused when none runs. Any other
/// request is given back.
pub(crate) async fn divert(conn: &Conn, request: Node) -> Option<Node> {
    if !HANDSHAKE_REQUESTS.contains(&first_child(&request)) {
        return Some(request);
    }
    if let Some(request) = conn.divert_passkey_request(request) {
        let _ = conn
            .send(stanza::iq_error(&request, 404, "item-not-found"))
            .await;
    }
    None
}

/// Runs the handshake for the account whose passkey is `passkey` with the registering companion
/// on `conn`, whose Signal identity is `companion_identity`. Each wait for the companion lasts
/// at most [`STEP_TIMEOUT`] divided by `time_scale`.
pub(crate) async fn run(
    conn: &Conn,
    passkey: &RegisteredPasskey,
    companion_identity: &[u8; 32],
    time_scale: u32,
) -> Result<PasskeyLink, HandshakeError> {
    let challenge: [u8; 32] = rand::random();
    let mut handshake = Handshake {
        conn,
        requests: conn.divert_passkey_requests(),
        wait: ScaledRuntime::new(time_scale).scaled(STEP_TIMEOUT),
        options: passkey.request_options(&challenge, STEP_TIMEOUT),
        refs: Vec::new(),
    };
    let request = NodeBuilder::new("passkey_request_options")
        .string_content(handshake.options.clone())
        .build();
    handshake
        .notify("passkey_prologue_request", request)
        .await?;

    let prologue = handshake.next("passkey_prologue").await?;
    let accepted = match accept_prologue(&prologue, passkey, &challenge, &handshake.refs) {
        Ok(accepted) => accepted,
        Err(refusal) => return Err(handshake.refuse(&prologue, refusal).await),
    };
    handshake
        .answer(stanza::iq_result(&prologue, Vec::new()))
        .await?;

    tokio::time::sleep(PHONE_ROUND_TRIP).await;
    let primary_nonce: [u8; 32] = rand::random();
    let identity = wa::PrimaryEphemeralIdentity {
        public_key: Some(accepted.primary_public.to_vec()),
        nonce: Some(primary_nonce.to_vec()),
    }
    .encode_to_vec();
    let continuation = NodeBuilder::new("primary_ephemeral_identity")
        .bytes(identity)
        .build();
    handshake.notify("crsc_continuation", continuation).await?;

    let reveal = handshake.next("companion_nonce").await?;
    let nonce = stanza::child_bytes(&reveal, "companion_nonce")
        .and_then(|n| <[u8; 32]>::try_from(n.as_slice()).ok());
    let Some(nonce) = nonce else {
        let refusal = Refusal::malformed("companion_nonce is not 32 bytes");
        return Err(handshake.refuse(&reveal, refusal).await);
    };
    if ShortcakeUtils::commitment_hash(&accepted.companion_identity, &nonce) != accepted.commitment
    {
        let refusal = Refusal::unauthorized(
            "the companion's nonce does not match the commitment in its prologue",
        );
        return Err(handshake.refuse(&reveal, refusal).await);
    }
    handshake
        .answer(stanza::iq_result(&reveal, Vec::new()))
        .await?;
    let code =
        ShortcakeUtils::derive_verification_code(&nonce, &accepted.primary_public, &primary_nonce);

    let sealed = handshake.next("encrypted_pairing_request").await?;
    let adv_secret = match open_pairing_request(
        &sealed,
        &accepted.key,
        &conn.client_static,
        companion_identity,
    ) {
        Ok(secret) => secret,
        Err(refusal) => return Err(handshake.refuse(&sealed, refusal).await),
    };
    handshake
        .answer(stanza::iq_result(&sealed, Vec::new()))
        .await?;
    // The companion stores the new secret after this answer reaches it; pair-success, which it
    // checks with that secret, must not overtake it.
    tokio::time::sleep(PHONE_ROUND_TRIP).await;

    let (left, right) = code.split_at(code.len() / 2);
    Ok(PasskeyLink {
        adv_secret,
        code: format!("{left}-{right}"),
    })
}

/// One handshake in progress: the companion's diverted requests and what the phone told it.
struct Handshake<'a> {
    conn: &'a Conn,
    requests: mpsc::Receiver<Node>,
    /// How long each wait for the companion lasts.
    wait: Duration,
    /// The request options JSON, as sent and as re-fetched.
    options: String,
    /// The refs handed to the companion; its prologue must name one.
    refs: Vec<String>,
}

impl Handshake<'_> {
    /// Waits for the companion's request whose first child is `want`, meanwhile answering the
    /// fetches it may make (a ref, the request options) and refusing anything else.
    async fn next(&mut self, want: &'static str) -> Result<Node, HandshakeError> {
        let deadline = Instant::now() + self.wait;
        loop {
            let request = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.requests.recv()) => match r {
                    Ok(Some(request)) => request,
                    // The sender lives in the connection, which outlives this borrow of it.
                    Ok(None) => return Err(HandshakeError::Gone),
                    Err(_) => {
                        return Err(HandshakeError::Timeout {
                            waiting_for: want,
                            after: self.wait,
                        });
                    }
                },
                () = self.conn.closed() => return Err(HandshakeError::Gone),
            };
            let answer = match first_child(&request) {
                tag if tag == want => return Ok(request),
                "ref" => {
                    let random: [u8; 16] = rand::random();
                    let reference = format!("{}@{}", self.conn.id, hex(&random));
                    self.refs.push(reference.clone());
                    let node = NodeBuilder::new("ref")
                        .bytes(reference.into_bytes())
                        .build();
                    stanza::iq_result(&request, vec![node])
                }
                "passkey_request_options" => {
                    let node = NodeBuilder::new("passkey_request_options")
                        .string_content(self.options.clone())
                        .build();
                    stanza::iq_result(&request, vec![node])
                }
                // A step out of turn: the handshake goes on waiting for the one it expects.
                _ => stanza::iq_error(&request, 400, "bad-request"),
            };
            self.answer(answer).await?;
        }
    }

    /// Sends the companion a server notification of `kind` carrying `content`.
    async fn notify(&self, kind: &'static str, content: Node) -> Result<(), HandshakeError> {
        let notification = NodeBuilder::new("notification")
            .attr("from", SERVER)
            .attr("type", kind)
            .attr("id", self.conn.next_id())
            .attr("t", stanza::now_secs().to_string())
            .children([content])
            .build();
        self.answer(notification).await
    }

    async fn answer(&self, node: Node) -> Result<(), HandshakeError> {
        self.conn.send(node).await.map_err(|_| HandshakeError::Gone)
    }

    /// Answers `request` with the refusal's error and ends the handshake with its reason.
    async fn refuse(&self, request: &Node, refusal: Refusal) -> HandshakeError {
        let answer = stanza::iq_error(request, refusal.code, refusal.text);
        match self.answer(answer).await {
            Ok(()) => HandshakeError::Rejected(refusal.why),
            Err(gone) => gone,
        }
    }
}

/// A step the phone refuses: the error the companion gets, and the reason the phone reports.
struct Refusal {
    code: u16,
    text: &'static str,
    why: String,
}

impl Refusal {
    /// The step is not shaped as WhatsApp's protocol has it.
    fn malformed(why: impl Into<String>) -> Self {
        Self {
            code: 400,
            text: "bad-request",
            why: why.into(),
        }
    }

    /// The step is well formed but proves nothing the phone can accept.
    fn unauthorized(why: impl Into<String>) -> Self {
        Self {
            code: 401,
            text: "not-authorized",
            why: why.into(),
        }
    }
}

/// What the phone keeps from an accepted prologue.
struct AcceptedPrologue {
    /// The companion's ephemeral identity as it encoded it: the commitment covers these bytes.
    companion_identity: Vec<u8>,
    /// The commitment to that identity and the companion's nonce.
    commitment: [u8; 32],
    /// The phone's ephemeral public key for this handshake.
    primary_public: [u8; 32],
    /// The key the companion encrypts its pairing request with.
    key: [u8; 32],
}

/// Checks the companion's `passkey_prologue`: the WebAuthn assertion against the account's
/// passkey and the challenge sent, then the prologue payload (its ephemeral identity must name a
/// ref this handshake handed out). Makes the phone's ephemeral key and derives the encryption key
/// both sides will use.
///
/// A `pairing_handoff_proof` is accepted unchecked: it only lets a companion that was linked
/// before skip showing the code, and the phone reports the code either way.
fn accept_prologue(
    request: &Node,
    passkey: &RegisteredPasskey,
    challenge: &[u8],
    refs: &[String],
) -> Result<AcceptedPrologue, Refusal> {
    let prologue = stanza::child(request, "passkey_prologue")
        .ok_or_else(|| Refusal::malformed("no passkey_prologue"))?;
    let part = |tag: &str| {
        stanza::child_bytes(prologue, tag)
            .ok_or_else(|| Refusal::malformed(format!("passkey_prologue has no {tag}")))
    };
    let credential_id = part("credential_id")?;
    let assertion = part("webauthn_assertion")?;
    let payload = part("prologue_payload")?;
    passkey
        .verify(challenge, &credential_id, &assertion)
        .map_err(|rejection| Refusal::unauthorized(rejection.to_string()))?;

    let payload = wa::ProloguePayload::decode_from_slice(&payload)
        .map_err(|_| Refusal::malformed("prologue_payload is not a ProloguePayload"))?;
    let commitment = payload
        .commitment
        .as_option()
        .and_then(|c| c.hash.as_deref())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| Refusal::malformed("the prologue's commitment is not a 32-byte hash"))?;
    let companion_identity = payload
        .companion_ephemeral_identity
        .ok_or_else(|| Refusal::malformed("the prologue has no companion ephemeral identity"))?;
    let identity = wa::CompanionEphemeralIdentity::decode_from_slice(&companion_identity)
        .map_err(|_| Refusal::malformed("the companion ephemeral identity does not decode"))?;
    let reference = identity.r#ref.unwrap_or_default();
    if !refs.contains(&reference) {
        return Err(Refusal::malformed(format!(
            "the prologue names ref `{reference}`, which the server did not hand out"
        )));
    }
    let companion_ephemeral = identity
        .public_key
        .as_deref()
        .and_then(|k| PublicKey::from_djb_public_key_bytes(k).ok())
        .ok_or_else(|| Refusal::malformed("the companion ephemeral key is not a curve25519 key"))?;
    // The companion salts the key with the platform it named; absent, it named none.
    let device_type = identity
        .device_type
        .unwrap_or(wa::device_props::PlatformType::UNKNOWN);

    let primary = KeyPair::generate(&mut rand::rng());
    let primary_public = <[u8; 32]>::try_from(primary.public_key.public_key_bytes())
        .map_err(|_| Refusal::malformed("the phone's ephemeral key is not 32 bytes"))?;
    let shared = primary
        .private_key
        .calculate_agreement(&companion_ephemeral)
        .map_err(|_| Refusal::malformed("no key agreement with the companion ephemeral key"))?;
    let shared = <[u8; 32]>::try_from(&shared[..])
        .map_err(|_| Refusal::malformed("the key agreement is not 32 bytes"))?;
    let key =
        ShortcakeUtils::derive_encryption_key_from_shared_secret(&shared, device_type, &reference)
            .map_err(|e| Refusal::malformed(e.to_string()))?;
    Ok(AcceptedPrologue {
        companion_identity,
        commitment,
        primary_public,
        key,
    })
}

/// Opens the companion's `encrypted_pairing_request` with the handshake's key and returns the
/// ADV secret in it, once its keys prove to be those the companion registered with.
fn open_pairing_request(
    request: &Node,
    key: &[u8; 32],
    noise: &[u8; 32],
    identity: &[u8; 32],
) -> Result<[u8; 32], Refusal> {
    let sealed = stanza::child_bytes(request, "encrypted_pairing_request")
        .ok_or_else(|| Refusal::malformed("no encrypted_pairing_request"))?;
    let sealed = wa::EncryptedPairingRequest::decode_from_slice(&sealed)
        .map_err(|_| Refusal::malformed("encrypted_pairing_request does not decode"))?;
    let iv = sealed
        .iv
        .as_deref()
        .and_then(|iv| <[u8; 12]>::try_from(iv).ok())
        .ok_or_else(|| Refusal::malformed("the pairing request's IV is not 12 bytes"))?;
    let mut plain = Vec::new();
    wacore_libsignal::crypto::aes_256_gcm_decrypt(
        key,
        &iv,
        b"",
        sealed.encrypted_payload.as_deref().unwrap_or_default(),
        &mut plain,
    )
    .map_err(|_| {
        Refusal::unauthorized("the pairing request does not open with the handshake's key")
    })?;
    let request = wa::PairingRequest::decode_from_slice(&plain)
        .map_err(|_| Refusal::malformed("the pairing request does not decode"))?;
    if request.companion_public_key.as_deref() != Some(&noise[..]) {
        return Err(Refusal::unauthorized(
            "the pairing request's noise key is not the one the companion connected with",
        ));
    }
    if request.companion_identity_key.as_deref() != Some(&identity[..]) {
        return Err(Refusal::unauthorized(
            "the pairing request's identity key is not the one the companion registered",
        ));
    }
    request
        .adv_secret
        .as_deref()
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| Refusal::malformed("the pairing request's ADV secret is not 32 bytes"))
}

/// The tag of a request's first child, which names what it asks for.
fn first_child(request: &Node) -> &str {
    request
        .children()
        .and_then(|c| c.first())
        .map_or("", |c| c.tag.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
