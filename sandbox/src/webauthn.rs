//! The test passkey of a passkey account: a WebAuthn credential (ES256, ECDSA P-256 with
//! SHA-256) registered for WhatsApp Web's relying party.
//!
//! It plays both ends of a WebAuthn `get`: the authenticator, which signs an assertion for
//! request options the way a phone's password manager would, and the relying party, which
//! checks an assertion the way WhatsApp's server does before it lets a passkey link go on.
//! Both ends follow the WebAuthn specification, so an assertion this module signs is one a real
//! server would accept for a credential with this public key, and one it refuses is refused for
//! a reason a real server would give.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The relying party WhatsApp's passkeys are registered for.
pub(crate) const RP_ID: &str = "web.whatsapp.com";
/// The origin WhatsApp Web runs its WebAuthn ceremonies from.
pub(crate) const ORIGIN: &str = "https://web.whatsapp.com";
/// `clientDataJSON.type` of an assertion (as opposed to `webauthn.create` of a registration).
const GET: &str = "webauthn.get";
/// Authenticator-data flag: a user was present (touched, unlocked).
const USER_PRESENT: u8 = 0x01;
/// Authenticator-data flag: the user was verified (biometric, PIN).
const USER_VERIFIED: u8 = 0x04;
/// rpIdHash (32) + flags (1) + signCount (4): the fixed part of authenticator data.
const AUTHENTICATOR_DATA_LEN: usize = 37;

/// A passkey as the phone's password manager holds it: private key included.
pub(crate) struct Credential {
    /// The credential id the relying party knows it by.
    id: Vec<u8>,
    /// The user handle it was registered with; authenticators return it in every assertion.
    user_handle: Vec<u8>,
    /// The signing key; it never leaves this struct.
    key: EcdsaKeyPair,
}

/// What the relying party stored when the passkey was registered: enough to check assertions.
#[derive(Clone)]
pub(crate) struct RegisteredPasskey {
    /// The credential id.
    pub id: Vec<u8>,
    /// The user handle registered with it.
    user_handle: Vec<u8>,
    /// The uncompressed P-256 public key (SEC1, 65 bytes).
    public_key: Vec<u8>,
}

/// Request options the authenticator cannot answer.
#[derive(Debug, Error)]
#[error("{0}")]
pub(crate) struct OptionsError(String);

/// Why the relying party refused an assertion: one variant per WebAuthn check.
#[derive(Debug, Error)]
pub(crate) enum Rejection {
    /// The assertion is not the JSON WhatsApp Web sends, or a field is not base64url.
    #[error("the assertion is not WebAuthn's JSON: {0}")]
    Malformed(String),
    /// The credential named is not the account's passkey.
    #[error("the assertion is for credential `{0}`, not the account's passkey")]
    UnknownCredential(String),
    /// clientDataJSON says another ceremony than an assertion.
    #[error("clientDataJSON has type `{0}`, not `webauthn.get`")]
    WrongType(String),
    /// clientDataJSON answers another challenge than the one the server sent.
    #[error("clientDataJSON answers challenge `{0}`, not the one the server sent")]
    WrongChallenge(String),
    /// clientDataJSON comes from another origin than WhatsApp Web.
    #[error("clientDataJSON has origin `{0}`, not `https://web.whatsapp.com`")]
    WrongOrigin(String),
    /// authenticatorData was made for another relying party.
    #[error("authenticatorData's rpIdHash is not SHA-256 of `web.whatsapp.com`")]
    WrongRelyingParty,
    /// The authenticator did not see a user.
    #[error("authenticatorData lacks the user-present flag")]
    UserNotPresent,
    /// The authenticator did not verify the user, which the options required.
    #[error("authenticatorData lacks the user-verified flag the options required")]
    UserNotVerified,
    /// The user handle is not the one the passkey was registered with.
    #[error("the assertion's userHandle is not the passkey's user")]
    WrongUser,
    /// The signature does not check against the passkey's public key.
    #[error("the signature does not verify with the passkey's public key")]
    BadSignature,
}

impl Credential {
    /// A fresh passkey with a random 32-byte credential id and user handle.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        // Both fail only when the operating system's random source does; nothing can go on then.
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("the system random source makes a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a key ring just generated is valid PKCS#8");
        Self {
            id: rand::random::<[u8; 32]>().to_vec(),
            user_handle: rand::random::<[u8; 32]>().to_vec(),
            key,
        }
    }

    /// The relying party's record of this passkey.
    pub fn registered(&self) -> RegisteredPasskey {
        RegisteredPasskey {
            id: self.id.clone(),
            user_handle: self.user_handle.clone(),
            public_key: self.key.public_key().as_ref().to_vec(),
        }
    }

    /// Signs an assertion for the WebAuthn `PublicKeyCredentialRequestOptions` JSON `options`,
    /// as an authenticator that just verified its user would, and returns it in WhatsApp Web's
    /// JSON shape. Options for another relying party, or that allow only other credentials,
    /// find no passkey here, as on a real authenticator.
    pub fn assert(&self, options: &str) -> Result<String, OptionsError> {
        let challenge = requested_challenge(options, &self.id)?;
        let client_data = json!({
            "type": GET,
            "challenge": URL_SAFE_NO_PAD.encode(&challenge),
            "origin": ORIGIN,
        })
        .to_string();
        // Synced passkeys report a signature counter of 0: they cannot keep one across devices.
        let mut authenticator_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
        authenticator_data.push(USER_PRESENT | USER_VERIFIED);
        authenticator_data.extend_from_slice(&0u32.to_be_bytes());
        let signed = [
            &authenticator_data[..],
            &Sha256::digest(client_data.as_bytes())[..],
        ]
        .concat();
        let signature = self
            .key
            .sign(&SystemRandom::new(), &signed)
            .map_err(|_| OptionsError("the authenticator could not sign".into()))?;
        let id = URL_SAFE_NO_PAD.encode(&self.id);
        Ok(json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data.as_bytes()),
                "authenticatorData": URL_SAFE_NO_PAD.encode(&authenticator_data),
                "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
                "userHandle": URL_SAFE_NO_PAD.encode(&self.user_handle),
            },
        })
        .to_string())
    }
}

impl RegisteredPasskey {
    /// `PublicKeyCredentialRequestOptions` JSON asking for this passkey to sign `challenge`,
    /// with a verified user, within `timeout`.
    pub fn request_options(&self, challenge: &[u8], timeout: Duration) -> String {
        json!({
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "rpId": RP_ID,
            "allowCredentials": [
                { "type": "public-key", "id": URL_SAFE_NO_PAD.encode(&self.id) },
            ],
            "userVerification": "required",
            "timeout": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
        .to_string()
    }

    /// Checks an assertion the companion relayed for `challenge`: the credential it names
    /// (`credential_id`, and the JSON's own `rawId`), the client data, the authenticator data and
    /// the ES256 signature over `authenticatorData ‖ SHA-256(clientDataJSON)`.
    pub fn verify(
        &self,
        challenge: &[u8],
        credential_id: &[u8],
        assertion: &[u8],
    ) -> Result<(), Rejection> {
        if credential_id != self.id.as_slice() {
            return Err(Rejection::UnknownCredential(
                URL_SAFE_NO_PAD.encode(credential_id),
            ));
        }
        let assertion: Value = serde_json::from_slice(assertion)
            .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
        if assertion["type"] != "public-key" {
            return Err(Rejection::Malformed(format!(
                "type is {}, not \"public-key\"",
                assertion["type"]
            )));
        }
        let raw_id = b64_field(&assertion, "rawId")?;
        if raw_id != self.id {
            return Err(Rejection::UnknownCredential(
                URL_SAFE_NO_PAD.encode(&raw_id),
            ));
        }
        let response = &assertion["response"];
        let client_data_json = b64_field(response, "clientDataJSON")?;
        let authenticator_data = b64_field(response, "authenticatorData")?;
        let signature = b64_field(response, "signature")?;

        let client_data: Value = serde_json::from_slice(&client_data_json)
            .map_err(|e| Rejection::Malformed(format!("clientDataJSON is not JSON: {e}")))?;
        let kind = client_data["type"].as_str().unwrap_or_default();
        if kind != GET {
            return Err(Rejection::WrongType(kind.to_string()));
        }
        let answered = client_data["challenge"].as_str().unwrap_or_default();
        if b64(answered).as_deref() != Some(challenge) {
            return Err(Rejection::WrongChallenge(answered.to_string()));
        }
        let origin = client_data["origin"].as_str().unwrap_or_default();
        if origin != ORIGIN {
            return Err(Rejection::WrongOrigin(origin.to_string()));
        }

        if authenticator_data.len() < AUTHENTICATOR_DATA_LEN {
            return Err(Rejection::Malformed(format!(
                "authenticatorData has {} bytes, fewer than {AUTHENTICATOR_DATA_LEN}",
                authenticator_data.len()
            )));
        }
        if authenticator_data[..32] != Sha256::digest(RP_ID.as_bytes())[..] {
            return Err(Rejection::WrongRelyingParty);
        }
        let flags = authenticator_data[32];
        if flags & USER_PRESENT == 0 {
            return Err(Rejection::UserNotPresent);
        }
        if flags & USER_VERIFIED == 0 {
            return Err(Rejection::UserNotVerified);
        }
        // userHandle is optional in an assertion; when given it must be the passkey's user.
        if !response["userHandle"].is_null()
            && b64_field(response, "userHandle")? != self.user_handle
        {
            return Err(Rejection::WrongUser);
        }

        let signed = [
            &authenticator_data[..],
            &Sha256::digest(&client_data_json)[..],
        ]
        .concat();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.public_key)
            .verify(&signed, &signature)
            .map_err(|_| Rejection::BadSignature)
    }
}

/// The challenge `options` asks to sign, once the options are checked to be answerable by the
/// passkey `credential_id`.
fn requested_challenge(options: &str, credential_id: &[u8]) -> Result<Vec<u8>, OptionsError> {
    let bad = |why: String| OptionsError(why);
    let options: Value =
        serde_json::from_str(options).map_err(|e| bad(format!("are not JSON: {e}")))?;
    if !options.is_object() {
        return Err(bad("are not a JSON object".into()));
    }
    let challenge = options["challenge"]
        .as_str()
        .ok_or_else(|| bad("have no `challenge` string".into()))?;
    let challenge = b64(challenge)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad(format!("have challenge `{challenge}`, not base64url bytes")))?;
    match &options["rpId"] {
        Value::Null => {}
        Value::String(rp) if rp == RP_ID => {}
        other => {
            return Err(bad(format!(
                "are for relying party {other}, which this phone holds no passkey for"
            )));
        }
    }
    match &options["allowCredentials"] {
        Value::Null => {}
        Value::Array(allowed) => {
            let ids: Vec<Vec<u8>> = allowed
                .iter()
                .map(|c| c["id"].as_str().and_then(b64))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("have an `allowCredentials` id that is not base64url".into()))?;
            if !ids.is_empty() && !ids.iter().any(|id| id == credential_id) {
                return Err(bad("allow none of the passkeys this phone holds".into()));
            }
        }
        _ => return Err(bad("have an `allowCredentials` that is not an array".into())),
    }
    match &options["userVerification"] {
        Value::Null => {}
        Value::String(uv) if ["required", "preferred", "discouraged"].contains(&uv.as_str()) => {}
        other => return Err(bad(format!("have userVerification {other}"))),
    }
    Ok(challenge)
}

/// Base64url as WebAuthn writes it (no padding), tolerating padding a client added.
fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// The base64url field `name` of `object`, decoded.
fn b64_field(object: &Value, name: &str) -> Result<Vec<u8>, Rejection> {
    object[name]
        .as_str()
        .and_then(b64)
        .ok_or_else(|| Rejection::Malformed(format!("`{name}` is not a base64url string")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(passkey: &RegisteredPasskey, challenge: &[u8]) -> String {
        passkey.request_options(challenge, Duration::from_secs(60))
    }

    #[test]
    fn an_assertion_the_authenticator_signs_verifies() {
        let credential = Credential::generate();
        let passkey = credential.registered();
        let assertion = credential.assert(&options(&passkey, b"challenge")).unwrap();
        passkey
            .verify(b"challenge", &passkey.id, assertion.as_bytes())
            .unwrap();
    }

    #[test]
    fn an_assertion_for_another_challenge_is_refused() {
        let credential = Credential::generate();
        let passkey = credential.registered();
        let assertion = credential.assert(&options(&passkey, b"other")).unwrap();
        let err = passkey
            .verify(b"challenge", &passkey.id, assertion.as_bytes())
            .unwrap_err();
        assert!(matches!(err, Rejection::WrongChallenge(_)), "{err}");
    }

    #[test]
    fn another_passkeys_signature_is_refused() {
        let credential = Credential::generate();
        let passkey = credential.registered();
        let impostor = Credential::generate();
        // A discoverable request (no allowCredentials), which the impostor answers too.
        let discoverable = json!({ "challenge": URL_SAFE_NO_PAD.encode(b"c") }).to_string();
        let mut forged: Value =
            serde_json::from_str(&impostor.assert(&discoverable).unwrap()).unwrap();
        let id = URL_SAFE_NO_PAD.encode(&passkey.id);
        forged["rawId"] = json!(id);
        forged["response"]["userHandle"] = Value::Null;
        let err = passkey
            .verify(b"c", &passkey.id, forged.to_string().as_bytes())
            .unwrap_err();
        assert!(matches!(err, Rejection::BadSignature), "{err}");
    }

    #[test]
    fn options_for_another_relying_party_find_no_passkey() {
        let credential = Credential::generate();
        let err = credential
            .assert(r#"{"challenge":"YWJj","rpId":"example.com"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("example.com"), "{err}");
    }
}
