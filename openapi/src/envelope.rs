//! The envelope every JSON answer wears: `{"code", "message", "results"}`, as the Go gateway's
//! clients expect it.

use poem_openapi::Object;

/// Declares a named envelope around one results type, so generated SDKs get a named class per
/// answer instead of an anonymous generic.
macro_rules! envelope {
    ($(#[$doc:meta])* $name:ident, $results:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, poem_openapi::Object)]
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
    };
}
pub(crate) use envelope;

/// The envelope of an error: `code` says what went wrong, `message` what to do about it.
#[derive(Debug, Clone, Object)]
pub struct ErrorEnvelope {
    /// A stable, machine-readable code such as `DEVICE_NOT_FOUND`.
    pub code: String,
    /// What failed and what to do.
    pub message: String,
}
