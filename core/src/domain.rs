//! The nouns of wagate: tenants, device slots and their states.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;
use uuid::Uuid;

/// A tenant: one customer of the gateway. Every device and credential belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TenantId(pub Uuid);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its identifier.
    pub id: TenantId,
    /// A name for operators; unique.
    pub name: String,
}

/// A device id was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "device_id `{0}` must be 1 to 64 characters of letters, digits, `-`, `_`, `.` or `@`, and not `.` or `..`, e.g. my-device-1"
)]
pub struct InvalidDeviceId(pub String);

/// A tenant's name for a device slot: 1–64 of letters, digits, `-`, `_`, `.`, `@`, and not `.` or
/// `..` (HTTP clients normalise those path segments away, so such a device could not be named in
/// a URL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// `parse`'s rule as a regular expression, for the spec (without look-ahead, which not every
    /// engine has): a first character that is not a dot, or one dot and then one, or two dots
    /// and at least one more character.
    pub const PATTERN: &str = r"^(?:[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}|\.[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,62}|\.\.[A-Za-z0-9_.@-]{1,62})$";

    /// Validates `raw` as a device id.
    pub fn parse(raw: &str) -> Result<Self, InvalidDeviceId> {
        let ok = !raw.is_empty()
            && raw != "."
            && raw != ".."
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidDeviceId(raw.chars().take(80).collect()))
        }
    }

    /// Reads an id as stored, which older versions may have accepted under a looser rule (`.`
    /// and `..`): a stored device stays readable and removable.
    pub fn parse_stored(raw: &str) -> Result<Self, InvalidDeviceId> {
        match raw {
            "." | ".." => Ok(Self(raw.to_string())),
            _ => Self::parse(raw),
        }
    }

    /// A fresh random id, used when the caller names none.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a device slot is in its login life.
///
/// `disconnected` → `connecting` → `connected` (socket up, a QR or code pending) → `logged_in`;
/// an account that confirms links with a passkey passes through `passkey_required` before
/// `logged_in`; back to `disconnected` on logout, unlink from the phone, or a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// No socket to WhatsApp.
    Disconnected,
    /// Opening a socket.
    Connecting,
    /// Socket up, waiting for a QR scan or a pairing code.
    Connected,
    /// WhatsApp asks the account's passkey to confirm the link: waiting for the assertion.
    PasskeyRequired,
    /// Linked to an account and usable.
    LoggedIn,
}

impl DeviceState {
    /// Every state, in the order a login moves through them (the metrics show each, 0 when no
    /// device is in it). The test below keeps it complete.
    pub const ALL: [DeviceState; 5] = [
        Self::Disconnected,
        Self::Connecting,
        Self::Connected,
        Self::PasskeyRequired,
        Self::LoggedIn,
    ];

    /// The state's wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::PasskeyRequired => "passkey_required",
            Self::LoggedIn => "logged_in",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disconnected" => Self::Disconnected,
            "connecting" => Self::Connecting,
            "connected" => Self::Connected,
            "passkey_required" => Self::PasskeyRequired,
            "logged_in" => Self::LoggedIn,
            _ => return None,
        })
    }

    /// A socket to WhatsApp is up.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            Self::Connected | Self::PasskeyRequired | Self::LoggedIn
        )
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device slot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// The tenant that owns it.
    pub tenant: TenantId,
    /// The tenant's name for it.
    pub id: DeviceId,
    /// A label for people.
    pub display_name: Option<String>,
    /// Its login state.
    pub state: DeviceState,
    /// The WhatsApp account's JID once linked, e.g. `628912344551:3@s.whatsapp.net`.
    pub jid: Option<String>,
    /// When the slot was created.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_in_all() {
        // A new variant stops this match compiling: add it to `ALL` as well as here.
        let position = |state: DeviceState| match state {
            DeviceState::Disconnected => 0,
            DeviceState::Connecting => 1,
            DeviceState::Connected => 2,
            DeviceState::PasskeyRequired => 3,
            DeviceState::LoggedIn => 4,
        };
        for (i, state) in DeviceState::ALL.into_iter().enumerate() {
            assert_eq!(position(state), i, "{state:?}");
        }
    }

    #[test]
    fn device_ids_accept_the_documented_alphabet() {
        for ok in ["a", "my-device_1.x@y", &"x".repeat(64)] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "slash/",
            &"x".repeat(65),
            "ümlaut",
            ".",
            "..",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pattern_says_what_parse_accepts() {
        let pattern = regex::Regex::new(DeviceId::PATTERN).expect("a regular expression");
        let samples = [
            "",
            ".",
            "..",
            "...",
            ".a",
            "..a",
            "a.",
            "a..b",
            "a",
            "@",
            "-",
            "_x",
            "has space",
            "slash/",
            "ümlaut",
            "my-device_1.x@y",
        ];
        let lengths = [63, 64, 65].map(|n| "x".repeat(n));
        let dotted = [62, 63, 64].map(|n| format!("..{}", "x".repeat(n)));
        for sample in samples
            .iter()
            .copied()
            .chain(lengths.iter().map(String::as_str))
            .chain(dotted.iter().map(String::as_str))
        {
            assert_eq!(
                pattern.is_match(sample),
                DeviceId::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            DeviceState::Disconnected,
            DeviceState::Connecting,
            DeviceState::Connected,
            DeviceState::LoggedIn,
        ] {
            assert_eq!(DeviceState::parse(s.as_str()), Some(s));
        }
    }
}
