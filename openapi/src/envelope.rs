//! The envelope every JSON answer wears: `{"code", "message", "results"}`; clients tell outcomes
//! apart by `code` and show `message`.

use poem_openapi::Object;

use crate::error::ErrorCode;
use crate::readiness::RestoreField;

/// Declares a named envelope around one results type, so generated SDKs get a named class per
/// answer instead of an anonymous generic. `[T]` declares a list of `T`; the message is the
/// example's (answers pass their own to `success`).
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident, [$item:ty], $message:literal) => {
        $crate::envelope::envelope!(@declare $(#[$doc])* $name, Vec<$item>, $message,
            vec![<$item as poem_openapi::types::Example>::example()]);
    };
    ($(#[$doc:meta])* $name:ident, $results:ty, $message:literal) => {
        $crate::envelope::envelope!(@declare $(#[$doc])* $name, $results, $message,
            <$results as poem_openapi::types::Example>::example());
    };
    (@declare $(#[$doc:meta])* $name:ident, $results:ty, $message:literal, $example:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, poem_openapi::Object)]
        #[oai(example)]
        pub struct $name {
            /// `SUCCESS`.
            pub code: String,
            /// What happened, for people.
            pub message: String,
            /// The answer.
            pub results: $results,
        }

        impl $name {
            /// A `SUCCESS` envelope.
            pub fn success(message: &str, results: $results) -> poem_openapi::payload::Json<Self> {
                poem_openapi::payload::Json(Self {
                    code: "SUCCESS".to_string(),
                    message: message.to_string(),
                    results,
                })
            }
        }

        impl poem_openapi::types::Example for $name {
            fn example() -> Self {
                Self {
                    code: "SUCCESS".to_string(),
                    message: $message.to_string(),
                    results: $example,
                }
            }
        }
    };
}
pub(crate) use envelope;

/// The envelope of an error: `code` says what went wrong, `message` what to do about it.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorEnvelope {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What failed and what to do.
    pub message: String,
    /// With `PASSKEY_REQUIRED`: the WebAuthn `PublicKeyCredentialRequestOptions` to get the
    /// passkey assertion for; null with every other code.
    pub passkey_request_options: Option<Box<serde_json::Value>>,
    /// With `NOT_READY`: how far the start-up restore of linked devices has come; null with
    /// every other code.
    pub restore: Option<RestoreField>,
}

impl poem_openapi::types::Example for ErrorEnvelope {
    fn example() -> Self {
        Self {
            code: ErrorCode::DeviceNotFound,
            message: "device `my-device-id` not found: create it first with POST /devices".into(),
            passkey_request_options: None,
            restore: None,
        }
    }
}
