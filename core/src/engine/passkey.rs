//! The WebAuthn assertion a caller posts for a device whose account confirms links with a
//! passkey, checked for shape before it reaches WhatsApp.
//!
//! Whether the assertion is genuine is WhatsApp's to decide; the gateway only refuses what
//! cannot be one, so a malformed body changes nothing and costs the device no attempt.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use thiserror::Error;

/// A posted assertion that cannot be a WebAuthn assertion.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error(
    "the passkey assertion is malformed: {0}; post the PublicKeyCredential that \
     navigator.credentials.get returned for the request options, as JSON"
)]
pub struct InvalidPasskeyAssertion(String);

/// An assertion of the right shape: the JSON to hand on as it came, and the credential it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyAssertion {
    /// The assertion JSON, as posted.
    pub json: Vec<u8>,
    /// The raw id of the credential that signed it.
    pub credential_id: Vec<u8>,
}

impl PasskeyAssertion {
    /// Checks `value` is a `PublicKeyCredential` assertion (`rawId`, `type: public-key` and a
    /// `response` with `clientDataJSON`, `authenticatorData` and `signature`, all base64url).
    pub fn parse(value: &Value) -> Result<Self, InvalidPasskeyAssertion> {
        let invalid = |why: &str| InvalidPasskeyAssertion(why.to_string());
        let object = value
            .as_object()
            .ok_or_else(|| invalid("it is not a JSON object"))?;
        let raw_id = object
            .get("rawId")
            .or_else(|| object.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("`rawId` is missing"))?;
        let credential_id = decode(raw_id).ok_or_else(|| invalid("`rawId` is not base64url"))?;
        if credential_id.is_empty() {
            return Err(invalid("`rawId` is empty"));
        }
        if let Some(kind) = object.get("type")
            && kind.as_str() != Some("public-key")
        {
            return Err(invalid("`type` must be `public-key`"));
        }
        let response = object
            .get("response")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("`response` is missing"))?;
        for field in ["clientDataJSON", "authenticatorData", "signature"] {
            let encoded = response
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("`response.{field}` is missing")))?;
            if decode(encoded).is_none_or(|bytes| bytes.is_empty()) {
                return Err(invalid(&format!("`response.{field}` is not base64url")));
            }
        }
        Ok(Self {
            json: value.to_string().into_bytes(),
            credential_id,
        })
    }
}

/// Base64url, with or without padding (browsers' `toJSON` omits it; some libraries keep it).
fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assertion() -> Value {
        json!({
            "id": "Y3JlZA",
            "rawId": "Y3JlZA",
            "type": "public-key",
            "response": {
                "clientDataJSON": "e30",
                "authenticatorData": "AAAA",
                "signature": "MEUCIQ",
                "userHandle": null,
            }
        })
    }

    #[test]
    fn a_browser_assertion_is_taken_as_posted() {
        let parsed = PasskeyAssertion::parse(&assertion()).unwrap();
        assert_eq!(parsed.credential_id, b"cred");
        assert_eq!(parsed.json, assertion().to_string().into_bytes());
    }

    #[test]
    fn an_assertion_without_a_signature_is_refused() {
        let mut value = assertion();
        value["response"]
            .as_object_mut()
            .unwrap()
            .remove("signature");
        let error = PasskeyAssertion::parse(&value).unwrap_err();
        assert!(error.to_string().contains("response.signature"), "{error}");
    }

    #[test]
    fn a_non_object_or_foreign_type_is_refused() {
        assert!(PasskeyAssertion::parse(&json!("text")).is_err());
        let mut value = assertion();
        value["type"] = json!("password");
        assert!(PasskeyAssertion::parse(&value).is_err());
        value = assertion();
        value["rawId"] = json!("not base64 !");
        assert!(PasskeyAssertion::parse(&value).is_err());
    }
}
