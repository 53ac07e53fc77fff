//! Phone numbers as the pairing-code login takes them.

use std::fmt;

use thiserror::Error;

/// A phone number WhatsApp would not accept for pairing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidPhone {
    /// Nothing was given.
    #[error("phone is required: give it in international format, e.g. 628912344551")]
    Missing,
    /// Something other than digits (after an optional leading `+`).
    #[error("phone `{0}` must contain only digits (a leading + is allowed), e.g. 628912344551")]
    NotDigits(String),
    /// A national number.
    #[error("phone `{0}` must be in international format without a leading 0, e.g. 628912344551")]
    LeadingZero(String),
    /// Too short or too long.
    #[error("phone `{0}` must have 7 to 15 digits, e.g. 628912344551")]
    Length(String),
}

/// A phone number: 7 to 15 digits with the country code, not starting with 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Validates `raw`; a leading `+` is dropped.
    pub fn parse(raw: &str) -> Result<Self, InvalidPhone> {
        let shown = || raw.chars().take(32).collect::<String>();
        if raw.is_empty() {
            return Err(InvalidPhone::Missing);
        }
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPhone::NotDigits(shown()));
        }
        if digits.starts_with('0') {
            return Err(InvalidPhone::LeadingZero(shown()));
        }
        if !(7..=15).contains(&digits.len()) {
            return Err(InvalidPhone::Length(shown()));
        }
        Ok(Self(digits.to_string()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_international_numbers() {
        assert_eq!(
            PhoneNumber::parse("628912344551").unwrap().as_str(),
            "628912344551"
        );
        assert_eq!(
            PhoneNumber::parse("+628912344551").unwrap().as_str(),
            "628912344551"
        );
    }

    #[test]
    fn rejects_what_whatsapp_rejects() {
        assert_eq!(PhoneNumber::parse(""), Err(InvalidPhone::Missing));
        assert!(matches!(
            PhoneNumber::parse("abc"),
            Err(InvalidPhone::NotDigits(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("0812345678"),
            Err(InvalidPhone::LeadingZero(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("123"),
            Err(InvalidPhone::Length(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("12345678901234567890"),
            Err(InvalidPhone::Length(_))
        ));
        assert!(matches!(
            PhoneNumber::parse("+"),
            Err(InvalidPhone::NotDigits(_))
        ));
    }
}
