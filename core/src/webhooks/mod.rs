//! Webhooks: tenant endpoints, signed deliveries from the durable outbox, retries and the
//! delivery log.
//!
//! Events reach the outbox in the transaction of the state change that causes them
//! ([`crate::store::TenantStore::record_events`]); the [`Dispatcher`] delivers them from there, so a
//! restart loses nothing. [`Webhooks`] is what the API calls: it checks input before anything is
//! stored.

mod address;
mod attempt;
mod client;
mod dispatcher;
mod schedule;
pub mod signature;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use uuid::Uuid;

use crate::domain::{DeviceId, TenantId};
use crate::events::WireEvent;
use crate::events::wire::EVENT_TYPES;
use crate::store::{
    DeliveryPage, DeliveryRecord, DeliveryStatus, DeviceFilterChange, Endpoint, EndpointPatch,
    NewEndpoint, RetryRefusal, Store, StoreError,
};

pub use address::{PublicResolver, check_literal, check_url, is_public};
pub use client::trusted_roots_from_pem;
pub use dispatcher::{Dispatcher, DispatcherProbe};
pub use schedule::RetrySchedule;

/// The longest endpoint URL accepted.
const MAX_URL_LEN: usize = 2048;
/// The longest description accepted.
const MAX_DESCRIPTION_LEN: usize = 500;
/// The most devices one endpoint's filter may name.
const MAX_DEVICE_FILTER: usize = 1000;
/// The largest page of the delivery log.
pub const MAX_PAGE: u32 = 100;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 50;

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Accept endpoints on loopback, private and link-local addresses.
    pub allow_private: bool,
    /// When failed deliveries are retried.
    pub retry_schedule: RetrySchedule,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Attempts in flight at most, over all endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at most, per endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// How often the outbox is polled when no notification arrives.
    pub poll_interval: Duration,
    /// How long a claim lasts before another dispatcher may take the delivery over.
    pub lease: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_grace: Duration,
    /// How long events stay in the delivery log once none of their deliveries is pending.
    pub retention: Duration,
    /// Certificate authorities trusted for HTTPS endpoints besides the public ones (receivers
    /// on a private PKI); see [`trusted_roots_from_pem`].
    pub trusted_roots: Vec<reqwest::Certificate>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_schedule: RetrySchedule::default(),
            timeout: Duration::from_secs(10),
            max_in_flight: 256,
            max_in_flight_per_endpoint: 32,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            rotation_grace: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(14 * 24 * 3600),
            trusted_roots: Vec::new(),
        }
    }
}

/// A webhook request that was refused.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// The URL is not a usable http(s) URL.
    #[error("webhook url `{url}` is not usable: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL points into a private network.
    #[error(
        "webhook url `{url}` resolves to {address}, a loopback, private or link-local address: use a public URL, or start wagate with WAGATE_WEBHOOK_ALLOW_PRIVATE=true"
    )]
    PrivateAddress {
        /// The URL given.
        url: String,
        /// The address it resolves to.
        address: IpAddr,
    },
    /// Another field is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The tenant has no such endpoint.
    #[error("webhook {0} not found")]
    EndpointNotFound(Uuid),
    /// The endpoint has no such delivery.
    #[error("delivery {delivery} of webhook {endpoint} not found")]
    DeliveryNotFound {
        /// The endpoint.
        endpoint: Uuid,
        /// The delivery asked for.
        delivery: Uuid,
    },
    /// The delivery's event has expired.
    #[error("delivery {0} carries a QR code that has expired: it is not sent again")]
    DeliveryExpired(Uuid),
    /// The operator's certificate authorities for webhook receivers are not usable.
    #[error("the webhook CA bundle is not usable: {0}; give PEM certificates")]
    CaBundle(String),
    /// The HTTP client that delivers webhooks could not be built.
    #[error("the webhook delivery client could not be built: {0}")]
    Client(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a new endpoint asks for, unchecked.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    /// Where deliveries go.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// The devices whose events it receives; `None`: every device.
    pub device_ids: Option<Vec<String>>,
    /// A label for people.
    pub description: Option<String>,
}

/// Changes to an endpoint, unchecked; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    /// A new URL.
    pub url: Option<String>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// What happens to the device filter.
    pub device_ids: DeviceFilterChange,
    /// A new label.
    pub description: Option<String>,
    /// Enables or disables deliveries.
    pub enabled: Option<bool>,
}

/// The webhook operations of the API, each scoped to a tenant.
#[derive(Debug, Clone)]
pub struct Webhooks {
    store: Store,
    config: Arc<WebhookConfig>,
}

impl Webhooks {
    /// Webhook operations on `store`.
    pub fn new(store: Store, config: WebhookConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
        }
    }

    /// How webhooks are delivered.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Creates an endpoint; returns it and its secret, which is never shown again.
    pub async fn create(
        &self,
        tenant: TenantId,
        input: EndpointInput,
    ) -> Result<(Endpoint, String), WebhookError> {
        let new = NewEndpoint {
            events: check_events(input.events)?,
            device_ids: check_devices(input.device_ids)?,
            description: check_description(input.description.unwrap_or_default())?,
            url: self.check_url(&input.url).await?,
        };
        let secret = signature::generate_secret();
        let endpoint = self
            .store
            .tenant(tenant)
            .create_endpoint(&new, &secret)
            .await?;
        Ok((endpoint, secret))
    }

    /// The tenant's endpoints.
    pub async fn list(&self, tenant: TenantId) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(self.store.tenant(tenant).list_endpoints().await?)
    }

    /// The tenant's endpoint `id`.
    pub async fn get(&self, tenant: TenantId, id: Uuid) -> Result<Endpoint, WebhookError> {
        self.store
            .tenant(tenant)
            .find_endpoint(id)
            .await?
            .ok_or(WebhookError::EndpointNotFound(id))
    }

    /// Changes the tenant's endpoint `id`.
    pub async fn update(
        &self,
        tenant: TenantId,
        id: Uuid,
        changes: EndpointChanges,
    ) -> Result<Endpoint, WebhookError> {
        let patch = EndpointPatch {
            events: changes.events.map(check_events).transpose()?,
            device_ids: match changes.device_ids {
                DeviceFilterChange::Only(ids) => DeviceFilterChange::Only(check_device_list(ids)?),
                other => other,
            },
            description: changes.description.map(check_description).transpose()?,
            enabled: changes.enabled,
            url: match changes.url {
                Some(url) => Some(self.check_url(&url).await?),
                None => None,
            },
        };
        self.store
            .tenant(tenant)
            .update_endpoint(id, &patch)
            .await?
            .ok_or(WebhookError::EndpointNotFound(id))
    }

    /// Deletes the tenant's endpoint `id` with its delivery log.
    pub async fn delete(&self, tenant: TenantId, id: Uuid) -> Result<(), WebhookError> {
        if self.store.tenant(tenant).delete_endpoint(id).await? {
            Ok(())
        } else {
            Err(WebhookError::EndpointNotFound(id))
        }
    }

    /// Gives the endpoint a new secret, returned once; the old one keeps signing for the
    /// rotation grace period.
    pub async fn rotate_secret(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(Endpoint, String), WebhookError> {
        let secret = signature::generate_secret();
        let endpoint = self
            .store
            .tenant(tenant)
            .rotate_endpoint_secret(id, &secret, self.config.rotation_grace)
            .await?
            .ok_or(WebhookError::EndpointNotFound(id))?;
        Ok((endpoint, secret))
    }

    /// Queues a `ping` event for the endpoint; returns it and its delivery's id.
    pub async fn test(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(WireEvent, Uuid), WebhookError> {
        self.store
            .tenant(tenant)
            .ping_endpoint(id)
            .await?
            .ok_or(WebhookError::EndpointNotFound(id))
    }

    /// A page of the endpoint's delivery log, newest first.
    pub async fn deliveries(
        &self,
        tenant: TenantId,
        id: Uuid,
        status: Option<&str>,
        limit: Option<u32>,
        before: Option<Uuid>,
    ) -> Result<DeliveryPage, WebhookError> {
        let status = status
            .map(|s| {
                DeliveryStatus::parse(s).ok_or_else(|| {
                    WebhookError::Invalid(format!(
                        "status `{s}` is not a delivery status: use pending, delivered, dead or expired"
                    ))
                })
            })
            .transpose()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(WebhookError::Invalid(format!(
                "limit {limit} is out of range: use 1 to {MAX_PAGE}"
            )));
        }
        match self
            .store
            .tenant(tenant)
            .list_deliveries(id, status, limit as usize, before)
            .await
        {
            Err(StoreError::EndpointNotFound { .. }) => Err(WebhookError::EndpointNotFound(id)),
            other => Ok(other?),
        }
    }

    /// Sends the delivery again now (same `webhook-id`).
    pub async fn retry(
        &self,
        tenant: TenantId,
        id: Uuid,
        delivery: Uuid,
    ) -> Result<DeliveryRecord, WebhookError> {
        let store = self.store.tenant(tenant);
        if store.find_endpoint(id).await?.is_none() {
            return Err(WebhookError::EndpointNotFound(id));
        }
        match store.retry_delivery(id, delivery).await? {
            Ok(record) => Ok(record),
            Err(RetryRefusal::NotFound) => Err(WebhookError::DeliveryNotFound {
                endpoint: id,
                delivery,
            }),
            Err(RetryRefusal::Expired) => Err(WebhookError::DeliveryExpired(delivery)),
        }
    }

    async fn check_url(&self, url: &str) -> Result<String, WebhookError> {
        if url.len() > MAX_URL_LEN {
            return Err(WebhookError::InvalidUrl {
                url: format!("{}…", &url[..url.floor_char_boundary(64)]),
                reason: format!("it is longer than {MAX_URL_LEN} characters"),
            });
        }
        check_url(url, self.config.allow_private).await
    }
}

fn check_events(events: Vec<String>) -> Result<Vec<String>, WebhookError> {
    let known = || EVENT_TYPES.join(", ");
    if events.is_empty() {
        return Err(WebhookError::Invalid(format!(
            "events must name at least one event type: {}",
            known()
        )));
    }
    let mut checked: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(WebhookError::Invalid(format!(
                "event type `{event}` does not exist: use {}",
                known()
            )));
        }
        if !checked.contains(&event) {
            checked.push(event);
        }
    }
    Ok(checked)
}

fn check_devices(devices: Option<Vec<String>>) -> Result<Option<Vec<String>>, WebhookError> {
    devices.map(check_device_list).transpose()
}

fn check_device_list(devices: Vec<String>) -> Result<Vec<String>, WebhookError> {
    if devices.is_empty() {
        return Err(WebhookError::Invalid(
            "device_ids is empty: name at least one device, or leave it out for every device"
                .to_string(),
        ));
    }
    if devices.len() > MAX_DEVICE_FILTER {
        return Err(WebhookError::Invalid(format!(
            "device_ids names {} devices: at most {MAX_DEVICE_FILTER} are allowed",
            devices.len()
        )));
    }
    let mut checked: Vec<String> = Vec::with_capacity(devices.len());
    for raw in devices {
        let id = DeviceId::parse(&raw).map_err(|e| WebhookError::Invalid(e.to_string()))?;
        if !checked.iter().any(|c| c == id.as_str()) {
            checked.push(id.to_string());
        }
    }
    Ok(checked)
}

fn check_description(description: String) -> Result<String, WebhookError> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(WebhookError::Invalid(format!(
            "description is longer than {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    Ok(description)
}
