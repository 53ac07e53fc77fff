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
use wagate_core::domain::{DeviceId, TenantId};
use wagate_core::engine::LoginError;
use wagate_core::events::stream::{StreamItem, device_stream, tenant_stream};
use wagate_core::events::wire::EVENT_TYPES;
use wagate_core::store::EventFilter;

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::devices::{DeviceStateName, MOVING, NO_DEVICE};
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
    fn of(item: StreamItem) -> Self {
        let event = match item {
            StreamItem::State { device_id, state } => {
                let data = serde_json::json!({
                    "device_id": device_id,
                    "state": state.as_str(),
                });
                Event::message(data.to_string()).event_type("state")
            }
            StreamItem::Event(event) => Event::message(&*event.body)
                .event_type(&event.event_type)
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
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "streamDeviceEvents",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the device id is malformed, or `Last-Event-ID` is not an \
                 event id.",
            ),
            NO_DEVICE,
            MOVING,
        ]],
    },
    OperationErrors {
        operation: "streamTenantEvents",
        answers: &[&[(
            400,
            "`VALIDATION_ERROR`: `types` names no event type, a device id in `device_ids` is \
             malformed, or `Last-Event-ID` is not an event id.",
        )]],
    },
];

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
        let after = last_event_id_header.0.or(last_event_id.0);
        let items = device_items(&state, auth.0.id, &device_id.0.0, after).await?;
        Ok(sse(items))
    }

    /// Stream the tenant's events
    ///
    /// Every event of the tenant's devices as Server-Sent Events, for a dashboard: first a
    /// `state` message per device (those `device_ids` names, or all), then each event as it is
    /// recorded, in the form of the device stream. `types` and `device_ids` narrow it (repeat
    /// the parameter or separate values with commas). With `Last-Event-ID` it first replays
    /// the retained events since that one: those of its device exactly after it, and those of
    /// other devices recorded up to 10 s before it or later, since another device's event
    /// stamped earlier can commit later; de-duplicate by `id`. A reader that falls far behind
    /// gets a `behind` message and the stream ends.
    #[oai(path = "/events", method = "get", operation_id = "streamTenantEvents")]
    async fn tenant_events(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// Only events of these types, e.g. `logged_in,login_failed`.
        types: Query<Option<Vec<String>>>,
        /// Only these devices' states and events.
        device_ids: Query<Option<Vec<String>>>,
        /// The id of the last event received: the events since it are sent first.
        #[oai(name = "Last-Event-ID")]
        last_event_id_header: Header<Option<Uuid>>,
        /// The same as the `Last-Event-ID` header, for clients that cannot set headers; the
        /// header wins when both are given.
        last_event_id: Query<Option<Uuid>>,
    ) -> Result<EventStream<BoxStream<'static, StreamMessage>>, ApiError> {
        let filter = event_filter(types.0, device_ids.0)?;
        let after = last_event_id_header.0.or(last_event_id.0);
        let manager = &state.manager;
        let stream = tenant_stream(manager.store(), manager.events(), auth.0.id, filter, after)
            .await
            .map_err(LoginError::from)?;
        Ok(sse(stream.boxed()))
    }
}

/// A device's stream: its events after `after`, then live. The device stream operation and
/// the link page's token-scoped stream both answer with it.
pub(crate) async fn device_items(
    state: &ApiState,
    tenant: TenantId,
    device: &DeviceId,
    after: Option<Uuid>,
) -> Result<BoxStream<'static, StreamItem>, ApiError> {
    let manager = &state.manager;
    let stream = device_stream(manager.store(), manager.events(), tenant, device, after)
        .await
        .map_err(LoginError::from)?
        .ok_or_else(|| LoginError::DeviceNotFound(device.clone()))?;
    Ok(stream.boxed())
}

/// Stream items as the SSE answer, with its keep-alive.
pub(crate) fn sse(
    items: BoxStream<'static, StreamItem>,
) -> EventStream<BoxStream<'static, StreamMessage>> {
    EventStream::new(items.map(StreamMessage::of).boxed())
        .keep_alive(KEEP_ALIVE)
        .to_event(|message| message.0)
}

/// The filter of a tenant stream from its query parameters: each may be repeated or hold a
/// comma-separated list; every type must be one a consumer can receive and every device id
/// well formed.
fn event_filter(
    types: Option<Vec<String>>,
    device_ids: Option<Vec<String>>,
) -> Result<EventFilter, ApiError> {
    fn split(values: Option<Vec<String>>) -> Option<Vec<String>> {
        values.map(|values| {
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        })
    }
    let types = split(types);
    if let Some(unknown) = types
        .iter()
        .flatten()
        .find(|t| !EVENT_TYPES.contains(&t.as_str()))
    {
        return Err(ApiError::validation(format!(
            "parameter `types`: `{unknown}` is not an event type; use any of {}",
            EVENT_TYPES.join(", ")
        )));
    }
    let devices = split(device_ids)
        .map(|ids| {
            ids.iter()
                .map(|id| {
                    DeviceId::parse(id).map_err(|e| {
                        ApiError::validation(format!("parameter `device_ids`: `{id}`: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(EventFilter { types, devices })
}
