//! `GET /devices/{device_id}/login/events`: a device's events as Server-Sent Events, resumable
//! without loss, for a page that shows a login live.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::web::Data;
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::types::{Example, ToJSON};
use poem_openapi::{Object, OpenApi, Union};
use serde_json::Value;
use uuid::Uuid;
use wagate_core::engine::LoginError;
use wagate_core::events::stream::{StreamItem, device_stream};

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::devices::{DeviceStateName, NO_DEVICE};
use crate::events::WebhookEvent;
use crate::schema_as::schema_as;
use crate::spec::OperationErrors;
use crate::{ApiError, ApiState, ApiTags};

/// How often an idle stream sends a comment line, so proxies do not close it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `data` of the `state` message that opens every stream: where the device is now.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct StreamState {
    /// The device.
    pub device_id: String,
    /// Its state.
    pub state: DeviceStateName,
}

impl Example for StreamState {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            state: DeviceStateName::Connected,
        }
    }
}

/// `data` of the `behind` message that ends a stream whose reader fell behind: reconnect with
/// `Last-Event-ID` set to `last_event_id` (EventSource does it by itself) and nothing is lost.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct StreamBehind {
    /// The last event this stream sent; null if it sent none.
    pub last_event_id: Option<Uuid>,
}

impl Example for StreamBehind {
    fn example() -> Self {
        Self {
            last_event_id: Some(Uuid::from_u128(0x0b6f6f2e_5c1e_4c1a_9d8e_2f1b5a7c9d31)),
        }
    }
}

/// The `data` of one stream message. Its SSE `event:` field names which: `state` (first), an
/// event type (`qr_refreshed`, `logged_in`, …: the envelope webhooks deliver, with `id:` its
/// id), or `behind` (last).
#[derive(Debug, Clone, Union)]
#[oai(one_of)]
pub enum StreamData {
    /// `state`: the device's state when the stream opened.
    State(StreamState),
    /// A recorded event.
    Event(WebhookEvent),
    /// `behind`: the reader fell behind and the stream ends.
    Behind(StreamBehind),
}

/// One message of a stream, already in its SSE form; documented as [`StreamData`].
pub struct StreamMessage(Event);

schema_as!(StreamMessage, StreamData);

impl ToJSON for StreamMessage {
    fn to_json(&self) -> Option<Value> {
        // The payload is written by `into_event`; nothing reads it as JSON.
        None
    }
}

impl StreamMessage {
    fn of(device: &str, item: StreamItem) -> Self {
        let event = match item {
            StreamItem::State(state) => {
                let data = serde_json::json!({
                    "device_id": device,
                    "state": state.as_str(),
                });
                Event::message(data.to_string()).event_type("state")
            }
            StreamItem::Event(event) => Event::message(event.body)
                .event_type(event.event_type)
                .id(event.id.to_string()),
            StreamItem::Behind { last_id } => {
                let data = serde_json::json!({ "last_event_id": last_id });
                Event::message(data.to_string()).event_type("behind")
            }
        };
        Self(event)
    }
}

/// The error answers of the stream operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[OperationErrors {
    operation: "streamDeviceEvents",
    answers: &[&[
        (
            400,
            "`VALIDATION_ERROR`: the device id is malformed, or `Last-Event-ID` is not an event \
             id.",
        ),
        NO_DEVICE,
    ]],
}];

/// Live event streams.
pub struct StreamsApi;

#[OpenApi(tag = "ApiTags::Login")]
impl StreamsApi {
    /// Stream a device's events
    ///
    /// The device's events as Server-Sent Events (`text/event-stream`), for a page that shows a
    /// login as it happens. The stream opens with a `state` message (the device's state now),
    /// then sends each event as it is recorded: `event:` its type, `id:` its id, `data:` the
    /// envelope webhooks deliver. With `Last-Event-ID` (the header EventSource sends when it
    /// reconnects, or the query parameter) it first replays every retained event after that
    /// one, with no gap and no duplicate before the live ones. A comment line every 15 s keeps
    /// proxies from closing an idle stream. A reader that falls far behind gets a `behind`
    /// message and the stream ends: reconnect with `Last-Event-ID` to go on without loss.
    #[oai(
        path = "/devices/:device_id/login/events",
        method = "get",
        operation_id = "streamDeviceEvents"
    )]
    async fn device_events(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device to follow.
        device_id: Path<DevicePath>,
        /// The id of the last event received: the events after it are sent first.
        #[oai(name = "Last-Event-ID")]
        last_event_id_header: Header<Option<Uuid>>,
        /// The same as the `Last-Event-ID` header, for clients that cannot set headers; the
        /// header wins when both are given.
        last_event_id: Query<Option<Uuid>>,
    ) -> Result<EventStream<BoxStream<'static, StreamMessage>>, ApiError> {
        let id = device_id.0.0;
        let after = last_event_id_header.0.or(last_event_id.0);
        let manager = &state.manager;
        let stream = device_stream(manager.store(), manager.events(), auth.0.id, &id, after)
            .await
            .map_err(LoginError::from)?
            .ok_or_else(|| LoginError::DeviceNotFound(id.clone()))?;
        let device = id.to_string();
        let messages = stream
            .map(move |item| StreamMessage::of(&device, item))
            .boxed();
        Ok(EventStream::new(messages)
            .keep_alive(KEEP_ALIVE)
            .to_event(|message| message.0))
    }
}
