//! The server side of WhatsApp's Noise handshake.
//!
//! A new client opens with Noise XX; a registered client that cached our certificate chain opens
//! with Noise IK and, should our static key have changed (a restarted sandbox), is answered with
//! XXfallback. The symmetric state machine is wacore-noise's; the responder's message order is
//! ours.

use buffa::Message as _;
use thiserror::Error;
use wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use wacore_libsignal::protocol::{KeyPair, PublicKey};
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::whatsapp::{self as wa, cert_chain::noise_certificate};

/// A handshake that could not be completed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// A handshake message did not decode as the protobuf it must be.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// A cryptographic step failed: wrong keys, a bad tag, a key of the wrong length.
    #[error("noise handshake failed: {0}")]
    Crypto(String),
}

impl From<wacore_noise::HandshakeError> for HandshakeError {
    fn from(e: wacore_noise::HandshakeError) -> Self {
        Self::Crypto(e.to_string())
    }
}

/// The sandbox's long-lived server key and the certificate chain that vouches for it.
///
/// The chain has WhatsApp's structure (intermediate issued by serial 0, leaf issued by the
/// intermediate, leaf key = our static key) and real signatures by keys of our own. A client
/// accepts it only with `danger-skip-cert-chain-verify`, which skips exactly the check against
/// WhatsApp's root key.
pub struct ServerIdentity {
    static_kp: KeyPair,
    cert_chain: Vec<u8>,
}

const INTERMEDIATE_SERIAL: u32 = 7;
const LEAF_SERIAL: u32 = 70;
/// Validity of the chain around "now": long enough that a registered client keeps using IK for
/// the sandbox's whole lifetime.
const CHAIN_VALIDITY_SECS: u64 = 365 * 24 * 3600;

impl ServerIdentity {
    /// A fresh identity: new static key, new intermediate key, chain valid from a day ago.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let static_kp = KeyPair::generate(&mut rng);
        let root_kp = KeyPair::generate(&mut rng);
        let intermediate_kp = KeyPair::generate(&mut rng);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let not_before = now.saturating_sub(24 * 3600);
        let not_after = now + CHAIN_VALIDITY_SECS;

        let intermediate_details = noise_certificate::Details {
            serial: Some(INTERMEDIATE_SERIAL),
            issuer_serial: Some(0),
            key: Some(intermediate_kp.public_key.public_key_bytes().to_vec()),
            not_before: Some(not_before),
            not_after: Some(not_after),
        }
        .encode_to_vec();
        let leaf_details = noise_certificate::Details {
            serial: Some(LEAF_SERIAL),
            issuer_serial: Some(INTERMEDIATE_SERIAL),
            key: Some(static_kp.public_key.public_key_bytes().to_vec()),
            not_before: Some(not_before),
            not_after: Some(not_after),
        }
        .encode_to_vec();
        let sign = |kp: &KeyPair, msg: &[u8]| {
            kp.private_key
                .calculate_signature(msg, &mut rand::rng())
                .map(|s| s.to_vec())
                .unwrap_or_else(|_| vec![0; 64])
        };
        let cert_chain = wa::CertChain {
            intermediate: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
                signature: Some(sign(&root_kp, &intermediate_details)),
                details: Some(intermediate_details),
            }),
            leaf: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
                signature: Some(sign(&intermediate_kp, &leaf_details)),
                details: Some(leaf_details),
            }),
        }
        .encode_to_vec();
        Self {
            static_kp,
            cert_chain,
        }
    }

    /// Answers a client's first handshake message.
    pub fn respond(&self, client_hello: &[u8]) -> Result<Response, HandshakeError> {
        let msg = waproto::codec::handshake_message_decode(client_hello)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let hello = msg
            .client_hello
            .into_option()
            .ok_or_else(|| HandshakeError::Malformed("no client hello".into()))?;
        let ephemeral = key32(hello.ephemeral.as_deref(), "client ephemeral")?;
        match (hello.r#static, hello.payload) {
            (Some(enc_static), Some(enc_payload)) => {
                match self.respond_ik(&ephemeral, &enc_static, &enc_payload) {
                    Ok(done) => Ok(done),
                    // The client cached a static key that is not ours: answer XXfallback, which
                    // keeps its ephemeral and continues as XX.
                    Err(_) => self.respond_xx(NOISE_PATTERN_XXFALLBACK, &ephemeral),
                }
            }
            _ => self.respond_xx(NOISE_PATTERN_XX, &ephemeral),
        }
    }

    fn respond_xx(
        &self,
        pattern: &str,
        client_ephemeral: &[u8; 32],
    ) -> Result<Response, HandshakeError> {
        let mut noise = NoiseHandshake::new(pattern, &WA_CONN_HEADER)?;
        noise.authenticate(client_ephemeral);
        let eph = KeyPair::generate(&mut rand::rng());
        let eph_pub = eph.public_key.public_key_bytes().to_vec();
        noise.authenticate(&eph_pub);
        noise.mix_shared_secret(eph.private_key.serialize(), client_ephemeral)?;
        let enc_static = noise.encrypt(self.static_kp.public_key.public_key_bytes())?;
        noise.mix_shared_secret(self.static_kp.private_key.serialize(), client_ephemeral)?;
        let enc_cert = noise.encrypt(&self.cert_chain)?;
        let server_hello = server_hello(eph_pub, Some(enc_static), enc_cert);
        Ok(Response::AwaitFinish {
            server_hello,
            pending: PendingXx { noise, eph },
        })
    }

    fn respond_ik(
        &self,
        client_ephemeral: &[u8; 32],
        enc_static: &[u8],
        enc_payload: &[u8],
    ) -> Result<Response, HandshakeError> {
        let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
        let server_static = self.static_kp.private_key.serialize();
        noise.authenticate(self.static_kp.public_key.public_key_bytes());
        noise.authenticate(client_ephemeral);
        noise.mix_shared_secret(server_static, client_ephemeral)?;
        let client_static = key32(Some(&noise.decrypt(enc_static)?), "client static")?;
        noise.mix_shared_secret(server_static, &client_static)?;
        let payload = noise.decrypt(enc_payload)?;

        let eph = KeyPair::generate(&mut rand::rng());
        let eph_pub = eph.public_key.public_key_bytes().to_vec();
        noise.authenticate(&eph_pub);
        noise.mix_shared_secret(eph.private_key.serialize(), client_ephemeral)?;
        noise.mix_shared_secret(eph.private_key.serialize(), &client_static)?;
        let enc_cert = noise.encrypt(&self.cert_chain)?;
        let server_hello = server_hello(eph_pub, None, enc_cert);
        Ok(Response::Done {
            server_hello,
            session: Established::from_noise(noise, client_static, payload)?,
        })
    }
}

/// What to do after the client's first message.
pub enum Response {
    /// XX: send `server_hello`, then finish with the client's next frame.
    AwaitFinish {
        /// The encoded `HandshakeMessage` to frame and send.
        server_hello: Vec<u8>,
        /// The state that reads the client's finish.
        pending: PendingXx,
    },
    /// IK: send `server_hello`; the session is already established.
    Done {
        /// The encoded `HandshakeMessage` to frame and send.
        server_hello: Vec<u8>,
        /// The transport keys and what the client told us.
        session: Established,
    },
}

/// An XX handshake waiting for the client's finish message.
pub struct PendingXx {
    noise: NoiseHandshake,
    eph: KeyPair,
}

impl PendingXx {
    /// Reads the client's finish (its static key and its `ClientPayload`).
    pub fn finish(mut self, client_finish: &[u8]) -> Result<Established, HandshakeError> {
        let msg = waproto::codec::handshake_message_decode(client_finish)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let finish = msg
            .client_finish
            .into_option()
            .ok_or_else(|| HandshakeError::Malformed("no client finish".into()))?;
        let enc_static = finish
            .r#static
            .ok_or_else(|| HandshakeError::Malformed("client finish without static".into()))?;
        let enc_payload = finish
            .payload
            .ok_or_else(|| HandshakeError::Malformed("client finish without payload".into()))?;
        let client_static = key32(Some(&self.noise.decrypt(&enc_static)?), "client static")?;
        self.noise
            .mix_shared_secret(self.eph.private_key.serialize(), &client_static)?;
        let payload = self.noise.decrypt(&enc_payload)?;
        Established::from_noise(self.noise, client_static, payload)
    }
}

/// A completed handshake: transport ciphers and the client's identity and payload.
pub struct Established {
    /// Encrypts what the server sends.
    pub write: NoiseCipher,
    /// Decrypts what the client sends.
    pub read: NoiseCipher,
    /// The client's static Noise key (its identity on this socket).
    pub client_static: [u8; 32],
    /// The decoded `ClientPayload` the client sent inside the handshake.
    pub payload: wa::ClientPayload,
}

impl Established {
    fn from_noise(
        noise: NoiseHandshake,
        client_static: [u8; 32],
        payload: Vec<u8>,
    ) -> Result<Self, HandshakeError> {
        // `finish` splits as the initiator sees it: its write key is our read key.
        let (initiator_write, initiator_read) = noise.finish()?;
        let payload = wa::ClientPayload::decode_from_slice(&payload)
            .map_err(|e| HandshakeError::Malformed(format!("client payload: {e}")))?;
        Ok(Self {
            write: initiator_read,
            read: initiator_write,
            client_static,
            payload,
        })
    }
}

fn server_hello(ephemeral: Vec<u8>, enc_static: Option<Vec<u8>>, enc_cert: Vec<u8>) -> Vec<u8> {
    waproto::codec::handshake_message_to_vec(&wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral),
            r#static: enc_static,
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn key32(bytes: Option<&[u8]>, what: &str) -> Result<[u8; 32], HandshakeError> {
    let bytes = bytes.ok_or_else(|| HandshakeError::Malformed(format!("missing {what}")))?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| {
        HandshakeError::Crypto(format!("{what} is {} bytes, expected 32", bytes.len()))
    })?;
    // Reject points libsignal cannot use before they reach a DH.
    PublicKey::from_djb_public_key_bytes(&key)
        .map_err(|e| HandshakeError::Crypto(format!("{what}: {e}")))?;
    Ok(key)
}
