//! `DevicePath`: a device id taken from a path, checked by poem-openapi before a handler runs
//! and documented with `DeviceId`'s own rule.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};
use wagate_core::domain::DeviceId;

/// The `{device_id}` of a path, valid by construction.
#[derive(Debug, Clone)]
pub struct DevicePath(pub DeviceId);

impl Type for DevicePath {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;

    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(DeviceId::MAX_LEN),
            pattern: Some(DeviceId::PATTERN.to_string()),
            ..MetaSchema::new("string")
        }))
    }

    fn register(_registry: &mut Registry) {}

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromParameter for DevicePath {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let id = DeviceId::parse(value).map_err(|e| ParseError::custom(e.to_string()))?;
        crate::request_span::record_device(&id);
        Ok(Self(id))
    }
}
