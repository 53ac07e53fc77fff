//! `Timestamp`: a moment written the one way wagate writes moments everywhere — in answers,
//! in events and in the delivery log — RFC 3339 in UTC with a `Z` (`2026-11-28T06:30:00.123Z`),
//! as the events' JSON (chrono's serde form) has it. poem-openapi's own `DateTime` writes
//! `+00:00`, so the same moment would read differently in an answer and in a webhook.

use chrono::{DateTime, Utc};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON};
use serde_json::Value;

use crate::schema_as::schema_as;

/// A moment, written as RFC 3339 UTC with `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t)
    }
}

schema_as!(Timestamp, DateTime<Utc>);

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        <DateTime<Utc> as ParseFromJSON>::parse_from_json(value)
            .map(Self)
            .map_err(poem_openapi::types::ParseError::propagate)
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        serde_json::to_value(self.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_is_written_in_utc_with_z() {
        let t = DateTime::from_timestamp_millis(1_795_847_400_123).unwrap();
        assert_eq!(
            Timestamp(t).to_json(),
            Some(Value::from("2026-11-28T06:30:00.123Z"))
        );
    }

    #[test]
    fn it_reads_what_it_writes() {
        let t = Timestamp(DateTime::from_timestamp_millis(1_795_847_400_123).unwrap());
        assert_eq!(Timestamp::parse_from_json(t.to_json()).unwrap(), t);
    }
}
