//! Webhook endpoints, their secrets, test events and the delivery log.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{Enum, Object, OpenApi};
use uuid::Uuid;
use wagate_core::store::{DeliveryRecord, DeliveryStatus, DeviceFilterChange, Endpoint};
use wagate_core::webhooks::{EndpointChanges, EndpointInput, WebhookError};

use crate::auth::TenantAuth;
use crate::devices::example_time;
use crate::envelope::envelope;
use crate::events::{EventType, StoredEvent};
use crate::spec::OperationErrors;
use crate::text::Text;
use crate::timestamp::Timestamp;
use crate::{ApiError, ApiState, ApiTags, ErrorCode};

/// An event type an endpoint can subscribe to (every type but `ping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum WebhookEventType {
    /// A new QR code is showing.
    QrRefreshed,
    /// A pairing code was issued.
    PairCodeIssued,
    /// The device is linked and usable.
    LoggedIn,
    /// The device was logged out.
    LoggedOut,
    /// A login attempt failed.
    LoginFailed,
    /// The device moved between states.
    StateChanged,
    /// WhatsApp asks the account's passkey to confirm the link.
    PasskeyRequested,
    /// The passkey was accepted; the code to compare with the phone's.
    PasskeyConfirmation,
    /// An app-state sync left collections unsynced.
    AppStateSyncFailed,
    /// WhatsApp named the date this client version stops being accepted.
    ClientExpiring,
}

impl WebhookEventType {
    const ALL: [(Self, &'static str); 10] = [
        (Self::QrRefreshed, "qr_refreshed"),
        (Self::PairCodeIssued, "pair_code_issued"),
        (Self::LoggedIn, "logged_in"),
        (Self::LoggedOut, "logged_out"),
        (Self::LoginFailed, "login_failed"),
        (Self::StateChanged, "state_changed"),
        (Self::PasskeyRequested, "passkey_requested"),
        (Self::PasskeyConfirmation, "passkey_confirmation"),
        (Self::AppStateSyncFailed, "app_state_sync_failed"),
        (Self::ClientExpiring, "client_expiring"),
    ];

    fn name(self) -> String {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| n.to_string())
            .unwrap_or_default()
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
    }
}

/// A webhook endpoint (its secret is shown only when created or rotated).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookInfo {
    /// The endpoint's id.
    pub id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// A label for people.
    pub description: String,
    /// The event types it receives.
    pub events: Vec<WebhookEventType>,
    /// The devices whose events it receives; null for every device.
    pub device_ids: Option<Vec<String>>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why wagate disabled it (e.g. the endpoint answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Example for WebhookInfo {
    fn example() -> Self {
        Self {
            id: EXAMPLE_WEBHOOK,
            url: "https://example.com/wagate/events".into(),
            description: "CRM".into(),
            events: vec![WebhookEventType::LoggedIn, WebhookEventType::LoggedOut],
            device_ids: None,
            enabled: true,
            disabled_reason: None,
            created_at: example_time().into(),
            updated_at: example_time().into(),
        }
    }
}

/// The endpoint id of the examples.
const EXAMPLE_WEBHOOK: Uuid = Uuid::from_u128(0x0b6f6f2e_5c1e_4c1a_9d8e_2f1b5a7c9d30);
/// The delivery id of the examples.
const EXAMPLE_DELIVERY: Uuid = Uuid::from_u128(0x7c9e6679_7425_40de_944b_e07fc1f90ae7);

impl From<Endpoint> for WebhookInfo {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            events: e
                .events
                .iter()
                .filter_map(|n| WebhookEventType::parse(n))
                .collect(),
            device_ids: e.device_ids,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: e.created_at.into(),
            updated_at: e.updated_at.into(),
        }
    }
}

/// A webhook endpoint with its signing secret, shown this once.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookWithSecret {
    /// The endpoint.
    #[oai(flatten)]
    pub endpoint: WebhookInfo,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks), or
    /// `X-Hub-Signature-256` (HMAC-SHA256 of the body keyed by this string as shown).
    pub secret: String,
}

impl Example for WebhookWithSecret {
    fn example() -> Self {
        Self {
            endpoint: WebhookInfo::example(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        }
    }
}

/// A new webhook endpoint.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateWebhookRequest {
    /// An http(s) URL on a public address (private ones need WAGATE_WEBHOOK_ALLOW_PRIVATE), at
    /// most 2,048 characters.
    #[oai(validator(max_length = 2048, custom = "crate::text::Storable"))]
    pub url: Text,
    /// The event types to receive; at least one.
    #[oai(validator(min_items = 1))]
    pub events: Vec<WebhookEventType>,
    /// Only these devices' events (at least one); leave out (or null) for every device.
    #[oai(validator(min_items = 1))]
    pub device_ids: Option<Vec<Text>>,
    /// A label for people, at most 256 characters.
    #[oai(validator(max_length = 256, custom = "crate::text::Storable"))]
    pub description: Option<Text>,
}

impl Example for CreateWebhookRequest {
    fn example() -> Self {
        Self {
            url: "https://example.com/wagate/events".into(),
            events: vec![WebhookEventType::LoggedIn, WebhookEventType::LoggedOut],
            device_ids: Some(vec!["my-device-id".into()]),
            description: Some("CRM".into()),
        }
    }
}

/// Changes to a webhook endpoint; fields left out stay as they are.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct UpdateWebhookRequest {
    /// A new URL, at most 2,048 characters.
    #[oai(validator(max_length = 2048, custom = "crate::text::Storable"))]
    pub url: Option<Text>,
    /// New event types; at least one.
    #[oai(validator(min_items = 1))]
    pub events: Option<Vec<WebhookEventType>>,
    /// A new device filter (at least one device); null for every device.
    #[oai(validator(min_items = 1))]
    pub device_ids: MaybeUndefined<Vec<Text>>,
    /// A new label, at most 256 characters.
    #[oai(validator(max_length = 256, custom = "crate::text::Storable"))]
    pub description: Option<Text>,
    /// Enable or disable deliveries; enabling clears `disabled_reason`.
    pub enabled: Option<bool>,
}

impl Example for UpdateWebhookRequest {
    fn example() -> Self {
        Self {
            url: None,
            events: None,
            device_ids: MaybeUndefined::Undefined,
            description: None,
            enabled: Some(true),
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DeliveryStatusName {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed, or the endpoint answered 410 Gone.
    Dead,
    /// A QR code event whose code expired before it could be delivered.
    Expired,
}

impl From<DeliveryStatus> for DeliveryStatusName {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Dead => Self::Dead,
            DeliveryStatus::Expired => Self::Expired,
        }
    }
}

impl DeliveryStatusName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => DeliveryStatus::Pending.as_str(),
            Self::Delivered => DeliveryStatus::Delivered.as_str(),
            Self::Dead => DeliveryStatus::Dead.as_str(),
            Self::Expired => DeliveryStatus::Expired.as_str(),
        }
    }
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookDelivery {
    /// The delivery's id.
    pub id: Uuid,
    /// The event's id: the `webhook-id` header of every attempt.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// Where it stands.
    pub status: DeliveryStatusName,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<Timestamp>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
    /// The last attempt's status code, if the endpoint answered.
    pub last_status_code: Option<i32>,
    /// What went wrong in the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<Timestamp>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// The event, exactly as the endpoint receives it (the same JSON, byte for byte).
    pub event: StoredEvent,
}

impl Example for WebhookDelivery {
    fn example() -> Self {
        Self {
            id: EXAMPLE_DELIVERY,
            event_id: Uuid::from_u128(0x0b6f6f2e_5c1e_4c1a_9d8e_2f1b5a7c9d31),
            event_type: EventType::LoggedIn,
            status: DeliveryStatusName::Delivered,
            attempts: 1,
            next_attempt_at: None,
            last_attempt_at: Some(example_time().into()),
            last_status_code: Some(200),
            last_error: None,
            delivered_at: Some(example_time().into()),
            created_at: example_time().into(),
            event: StoredEvent::example(),
        }
    }
}

impl TryFrom<DeliveryRecord> for WebhookDelivery {
    type Error = ApiError;

    fn try_from(d: DeliveryRecord) -> Result<Self, ApiError> {
        let event = StoredEvent::from_body(&d.body).ok_or_else(|| {
            ApiError::internal(format!(
                "event {} of delivery {} does not match the documented schema",
                d.event_id, d.id
            ))
        })?;
        let event_type = EventType::parse(&d.event_type).ok_or_else(|| {
            ApiError::internal(format!(
                "delivery {} has the unknown event type {}",
                d.id, d.event_type
            ))
        })?;
        Ok(Self {
            id: d.id,
            event_id: d.event_id,
            event_type,
            status: d.status.into(),
            attempts: d.attempts,
            next_attempt_at: d
                .next_attempt_at
                .filter(|_| d.status == DeliveryStatus::Pending)
                .map(Timestamp),
            last_attempt_at: d.last_attempt_at.map(Timestamp),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(Timestamp),
            created_at: d.created_at.into(),
            event,
        })
    }
}

/// A page of the delivery log, newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct DeliveryPageInfo {
    /// The deliveries.
    pub deliveries: Vec<WebhookDelivery>,
    /// Pass as `before` to get the next page; null on the last page.
    pub next_before: Option<Uuid>,
}

impl Example for DeliveryPageInfo {
    fn example() -> Self {
        Self {
            deliveries: vec![WebhookDelivery::example()],
            next_before: None,
        }
    }
}

/// A queued test event.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookTestInfo {
    /// The delivery to follow in the delivery log.
    pub delivery_id: Uuid,
    /// The event's id (`webhook-id`).
    pub event_id: Uuid,
}

impl Example for WebhookTestInfo {
    fn example() -> Self {
        Self {
            delivery_id: EXAMPLE_DELIVERY,
            event_id: Uuid::from_u128(0x0b6f6f2e_5c1e_4c1a_9d8e_2f1b5a7c9d31),
        }
    }
}

/// The id of a removed endpoint.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct WebhookRef {
    /// The endpoint's id.
    pub id: Uuid,
}

impl Example for WebhookRef {
    fn example() -> Self {
        Self {
            id: EXAMPLE_WEBHOOK,
        }
    }
}

envelope!(
    /// A new webhook endpoint, with its secret shown once.
    WebhookCreatedResponse,
    WebhookWithSecret,
    "Webhook added"
);
envelope!(
    /// One webhook endpoint.
    WebhookResponse,
    WebhookInfo,
    "Webhook info"
);
envelope!(
    /// The tenant's webhook endpoints.
    WebhookListResponse,
    [WebhookInfo],
    "List webhooks"
);
envelope!(
    /// A removed webhook endpoint.
    WebhookDeletedResponse,
    WebhookRef,
    "Webhook removed"
);
envelope!(
    /// A queued test event.
    WebhookTestResponse,
    WebhookTestInfo,
    "Test event queued"
);
envelope!(
    /// A page of an endpoint's delivery log.
    DeliveryListResponse,
    DeliveryPageInfo,
    "List deliveries"
);
envelope!(
    /// A delivery queued again.
    DeliveryResponse,
    WebhookDelivery,
    "Delivery queued again"
);

/// A malformed endpoint id in the path.
const BAD_WEBHOOK_ID: (u16, &str) = (400, "`VALIDATION_ERROR`: the webhook id is not a UUID.");
/// No such endpoint.
const NO_WEBHOOK: (u16, &str) = (
    404,
    "`WEBHOOK_NOT_FOUND`: no webhook endpoint with this id in your tenant.",
);
/// A body that is not a valid endpoint.
const BAD_ENDPOINT: (u16, &str) = (
    400,
    "`VALIDATION_ERROR`: the webhook id is not a UUID, or the body is not a valid endpoint: a \
     URL that is not http(s), does not resolve, or points at a private address; no events; a \
     field of the wrong type or an unknown field.",
);

/// The error answers of the webhook operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "createWebhook",
        answers: &[&[(
            400,
            "`VALIDATION_ERROR`: the body is not a valid endpoint: a URL that is not http(s), \
             does not resolve, or points at a private address; no events; a field of the wrong \
             type or an unknown field.",
        )]],
    },
    OperationErrors {
        operation: "listWebhooks",
        answers: &[],
    },
    OperationErrors {
        operation: "getWebhook",
        answers: &[&[BAD_WEBHOOK_ID, NO_WEBHOOK]],
    },
    OperationErrors {
        operation: "updateWebhook",
        answers: &[&[BAD_ENDPOINT, NO_WEBHOOK]],
    },
    OperationErrors {
        operation: "deleteWebhook",
        answers: &[&[BAD_WEBHOOK_ID, NO_WEBHOOK]],
    },
    OperationErrors {
        operation: "rotateWebhookSecret",
        answers: &[&[BAD_WEBHOOK_ID, NO_WEBHOOK]],
    },
    OperationErrors {
        operation: "testWebhook",
        answers: &[&[BAD_WEBHOOK_ID, NO_WEBHOOK]],
    },
    OperationErrors {
        operation: "listWebhookDeliveries",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the webhook id or `before` is not a UUID, `status` is not a \
                 delivery status, or `limit` is not 1–100.",
            ),
            NO_WEBHOOK,
        ]],
    },
    OperationErrors {
        operation: "retryWebhookDelivery",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the webhook id or the delivery id is not a UUID.",
            ),
            (
                404,
                "`WEBHOOK_NOT_FOUND`: no webhook endpoint with this id in your tenant. \
                 `DELIVERY_NOT_FOUND`: the endpoint has no delivery with this id.",
            ),
            (
                409,
                "`DELIVERY_EXPIRED`: a QR code event whose code expired is not sent again.",
            ),
        ]],
    },
];

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let message = e.to_string();
        match e {
            WebhookError::InvalidUrl { .. }
            | WebhookError::PrivateAddress { .. }
            | WebhookError::Invalid(_) => Self::validation(message),
            // What to do next names this API's routes, so it is said here rather than in core.
            WebhookError::EndpointNotFound(_) => Self::not_found(
                ErrorCode::WebhookNotFound,
                format!("{message}: list your webhooks with GET /webhooks"),
            ),
            WebhookError::DeliveryNotFound { endpoint, .. } => Self::not_found(
                ErrorCode::DeliveryNotFound,
                format!("{message}: list them with GET /webhooks/{endpoint}/deliveries"),
            ),
            WebhookError::DeliveryExpired(_) => Self::conflict(
                ErrorCode::DeliveryExpired,
                format!("{message}; request a new code with GET /devices/{{device_id}}/login"),
            ),
            WebhookError::Client(_) | WebhookError::CaBundle(_) => Self::internal(message),
            WebhookError::Store(store) => store.into(),
        }
    }
}

fn names(events: Vec<WebhookEventType>) -> Vec<String> {
    events.into_iter().map(WebhookEventType::name).collect()
}

fn strings(texts: Vec<Text>) -> Vec<String> {
    texts.into_iter().map(Text::into_string).collect()
}

/// Webhook endpoints and their deliveries.
pub struct WebhooksApi;

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Add a webhook
    ///
    /// Registers an endpoint for the tenant's events. Deliveries are signed per Standard
    /// Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and with
    /// `X-Hub-Signature-256`; the secret is in this answer only.
    #[oai(path = "/webhooks", method = "post", operation_id = "createWebhook")]
    async fn create(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        body: Json<CreateWebhookRequest>,
    ) -> Result<Json<WebhookCreatedResponse>, ApiError> {
        let body = body.0;
        let input = EndpointInput {
            url: body.url.into_string(),
            events: names(body.events),
            device_ids: body.device_ids.map(strings),
            description: body.description.map(Text::into_string),
        };
        let (endpoint, secret) = state.webhooks.create(auth.0.id, input).await?;
        Ok(WebhookCreatedResponse::success(
            "Webhook added",
            WebhookWithSecret {
                endpoint: endpoint.into(),
                secret,
            },
        ))
    }

    /// List webhooks
    #[oai(path = "/webhooks", method = "get", operation_id = "listWebhooks")]
    async fn list(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<WebhookListResponse>, ApiError> {
        let endpoints = state.webhooks.list(auth.0.id).await?;
        Ok(WebhookListResponse::success(
            "List webhooks",
            endpoints.into_iter().map(WebhookInfo::from).collect(),
        ))
    }

    /// Get a webhook
    #[oai(path = "/webhooks/:id", method = "get", operation_id = "getWebhook")]
    async fn get(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
    ) -> Result<Json<WebhookResponse>, ApiError> {
        let endpoint = state.webhooks.get(auth.0.id, id.0).await?;
        Ok(WebhookResponse::success("Webhook info", endpoint.into()))
    }

    /// Change a webhook
    ///
    /// Changes the fields given. Re-enable an endpoint wagate disabled with `enabled: true`.
    #[oai(
        path = "/webhooks/:id",
        method = "patch",
        operation_id = "updateWebhook"
    )]
    async fn update(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
        body: Json<UpdateWebhookRequest>,
    ) -> Result<Json<WebhookResponse>, ApiError> {
        let body = body.0;
        let changes = EndpointChanges {
            url: body.url.map(Text::into_string),
            events: body.events.map(names),
            // Absent leaves the filter alone; `null` removes it.
            device_ids: match body.device_ids {
                MaybeUndefined::Undefined => DeviceFilterChange::Keep,
                MaybeUndefined::Null => DeviceFilterChange::AllDevices,
                MaybeUndefined::Value(ids) => DeviceFilterChange::Only(strings(ids)),
            },
            description: body.description.map(Text::into_string),
            enabled: body.enabled,
        };
        let endpoint = state.webhooks.update(auth.0.id, id.0, changes).await?;
        Ok(WebhookResponse::success("Webhook updated", endpoint.into()))
    }

    /// Remove a webhook
    ///
    /// Removes the endpoint and its delivery log; pending deliveries are dropped.
    #[oai(
        path = "/webhooks/:id",
        method = "delete",
        operation_id = "deleteWebhook"
    )]
    async fn delete(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
    ) -> Result<Json<WebhookDeletedResponse>, ApiError> {
        state.webhooks.delete(auth.0.id, id.0).await?;
        Ok(WebhookDeletedResponse::success(
            "Webhook removed",
            WebhookRef { id: id.0 },
        ))
    }

    /// Rotate a webhook's secret
    ///
    /// Issues a new secret, shown in this answer only. The previous one keeps signing too
    /// (a second `v1,…` in `webhook-signature`, a second `X-Hub-Signature-256`) for 24 hours,
    /// so receivers can switch without losing events.
    #[oai(
        path = "/webhooks/:id/rotate-secret",
        method = "post",
        operation_id = "rotateWebhookSecret"
    )]
    async fn rotate_secret(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
    ) -> Result<Json<WebhookCreatedResponse>, ApiError> {
        let (endpoint, secret) = state.webhooks.rotate_secret(auth.0.id, id.0).await?;
        Ok(WebhookCreatedResponse::success(
            "Webhook secret rotated",
            WebhookWithSecret {
                endpoint: endpoint.into(),
                secret,
            },
        ))
    }

    /// Send a test event
    ///
    /// Queues a `ping` event for this endpoint alone, whatever its filters; follow it in the
    /// delivery log.
    #[oai(
        path = "/webhooks/:id/test",
        method = "post",
        operation_id = "testWebhook"
    )]
    async fn test(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
    ) -> Result<Json<WebhookTestResponse>, ApiError> {
        let (event, delivery_id) = state.webhooks.test(auth.0.id, id.0).await?;
        Ok(WebhookTestResponse::success(
            "Test event queued",
            WebhookTestInfo {
                delivery_id,
                event_id: event.id,
            },
        ))
    }

    /// List a webhook's deliveries
    ///
    /// The delivery log, newest first: each event with its status, attempts, last answer and
    /// next attempt.
    #[oai(
        path = "/webhooks/:id/deliveries",
        method = "get",
        operation_id = "listWebhookDeliveries"
    )]
    async fn deliveries(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
        /// Only deliveries with this status.
        status: Query<Option<DeliveryStatusName>>,
        /// Deliveries per page, 1 to 100 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// The `next_before` of the previous page.
        before: Query<Option<Uuid>>,
    ) -> Result<Json<DeliveryListResponse>, ApiError> {
        let page = state
            .webhooks
            .deliveries(
                auth.0.id,
                id.0,
                status.0.map(DeliveryStatusName::as_str),
                limit.0,
                before.0,
            )
            .await?;
        Ok(DeliveryListResponse::success(
            "List deliveries",
            DeliveryPageInfo {
                deliveries: page
                    .deliveries
                    .into_iter()
                    .map(WebhookDelivery::try_from)
                    .collect::<Result<_, _>>()?,
                next_before: page.next_before,
            },
        ))
    }

    /// Retry a delivery
    ///
    /// Sends the delivery again now, with the same `webhook-id`: a dead delivery gets one more
    /// attempt, a delivered one is replayed. QR code events whose code expired are refused.
    #[oai(
        path = "/webhooks/:id/deliveries/:delivery_id/retry",
        method = "post",
        operation_id = "retryWebhookDelivery"
    )]
    async fn retry(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The endpoint's id.
        id: Path<Uuid>,
        /// The delivery's id.
        delivery_id: Path<Uuid>,
    ) -> Result<Json<DeliveryResponse>, ApiError> {
        let delivery = state.webhooks.retry(auth.0.id, id.0, delivery_id.0).await?;
        Ok(DeliveryResponse::success(
            "Delivery queued again",
            delivery.try_into()?,
        ))
    }
}
