//! Webhook signatures: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) and the GitHub-style `X-Hub-Signature-256`.
//!
//! A secret is `whsec_` followed by base64 of 32 random bytes. Standard Webhooks signs
//! `{id}.{timestamp}.{body}` with the decoded bytes; `X-Hub-Signature-256` signs the raw body with
//! the secret string as shown, which is what consumers of GitHub-style signatures configure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;

/// A new endpoint secret.
pub fn generate_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The `webhook-signature` header: one `v1,<base64>` per secret, space-separated.
pub fn standard_signature(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
            // Secrets are generated here, so they always decode; a hand-edited one signs with
            // its raw bytes rather than not at all.
            let key = STANDARD
                .decode(encoded)
                .unwrap_or_else(|_| encoded.as_bytes().to_vec());
            let mut mac = mac(&key);
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An `X-Hub-Signature-256` value: `sha256=<hex HMAC-SHA256(body)>` keyed by the secret string.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret.as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 2 * digest.len());
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_base64_of_32_bytes_and_differ() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        let raw = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(raw.len(), SECRET_BYTES);
    }

    #[test]
    fn standard_signature_matches_the_specs_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotated_endpoint_signs_with_every_secret() {
        let secrets = vec![generate_secret(), generate_secret()];
        let header = standard_signature(&secrets, "id", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn hub_signature_is_lowercase_hex_of_the_body_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style.
        assert_eq!(
            hub_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
