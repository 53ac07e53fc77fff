//! `schema_as!`: a wrapper type that parses and writes JSON its own way but is documented as
//! another type (`Text` as `string`, `Timestamp` as `date-time`, `StoredEvent` as the
//! `WebhookEvent` union). The wrapper implements `ParseFromJSON` and `ToJSON` itself.

/// Implements poem-openapi's `Type` for `$wrapper` with the schema of `$shown`.
macro_rules! schema_as {
    ($wrapper:ty, $shown:ty) => {
        impl poem_openapi::types::Type for $wrapper {
            const IS_REQUIRED: bool = true;

            type RawValueType = Self;

            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                <$shown as poem_openapi::types::Type>::name()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                <$shown as poem_openapi::types::Type>::schema_ref()
            }

            fn register(registry: &mut poem_openapi::registry::Registry) {
                <$shown as poem_openapi::types::Type>::register(registry);
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}
pub(crate) use schema_as;
