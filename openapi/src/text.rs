//! `Text`: a request field that must be a JSON string.
//!
//! poem-openapi's `String` also takes numbers and booleans (`{"device_id": 0}` becomes `"0"`),
//! which the spec does not say and which hides a client's bug; request bodies use `Text`
//! instead, so a number where the spec says string is a 400 naming the field.

use std::fmt;

use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON};
use poem_openapi::validation::Validator;
use serde_json::Value;

use crate::schema_as::schema_as;

/// The pattern of a text that must hold more than whitespace (validators take it as a
/// literal: `pattern = r"\S"`); a failure reads "must contain more than whitespace".
pub const NOT_BLANK: &str = r"\S";

/// Refuses text with a NUL character (U+0000): PostgreSQL cannot store one in a text column,
/// so it would otherwise fail the request with a 500 after the input was accepted.
pub struct Storable;

impl<T: AsRef<str>> Validator<T> for Storable {
    fn check(&self, value: &T) -> bool {
        !value.as_ref().contains('\0')
    }
}

impl fmt::Display for Storable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("free of NUL characters (U+0000)")
    }
}

/// A string taken only from a JSON string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Text {
    /// The string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

schema_as!(Text, String);

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_string_is_text() {
        let text = Text::parse_from_json(Some(Value::from("my-device-id"))).unwrap();
        assert_eq!(text.as_ref(), "my-device-id");
    }

    #[test]
    fn text_with_a_nul_character_is_not_storable() {
        assert!(!Storable.check(&Text::from("a\0b")));
        assert!(Storable.check(&Text::from("ab")));
    }

    #[test]
    fn numbers_booleans_and_null_are_not_text() {
        for value in [Value::from(0), Value::from(true), Value::Null] {
            assert!(
                Text::parse_from_json(Some(value.clone())).is_err(),
                "{value}"
            );
        }
    }
}
