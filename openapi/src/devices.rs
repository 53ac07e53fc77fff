//! Device slots: create, list, inspect, delete, log out, reconnect, status.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use wagate_core::domain::{Device, DeviceId, DeviceState, TenantId};
use wagate_core::engine::LoginError;

use crate::auth::TenantAuth;
use crate::envelope::envelope;
use crate::{ApiError, ApiState, ApiTags};

/// A device slot's login state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DeviceStateName {
    /// No socket to WhatsApp.
    Disconnected,
    /// Opening a socket.
    Connecting,
    /// Socket up, a QR code or pairing code pending.
    Connected,
    /// Linked and usable.
    LoggedIn,
}

impl From<DeviceState> for DeviceStateName {
    fn from(s: DeviceState) -> Self {
        match s {
            DeviceState::Disconnected => Self::Disconnected,
            DeviceState::Connecting => Self::Connecting,
            DeviceState::Connected => Self::Connected,
            DeviceState::LoggedIn => Self::LoggedIn,
        }
    }
}

/// A device slot.
#[derive(Debug, Clone, Object)]
pub struct DeviceInfo {
    /// The tenant's id for the slot.
    pub id: String,
    /// A label for people.
    pub display_name: Option<String>,
    /// Its login state.
    pub state: DeviceStateName,
    /// The linked account's JID, once logged in.
    pub jid: Option<String>,
    /// When the slot was created.
    pub created_at: DateTime<Utc>,
}

impl From<Device> for DeviceInfo {
    fn from(d: Device) -> Self {
        Self {
            id: d.id.to_string(),
            display_name: d.display_name,
            state: d.state.into(),
            jid: d.jid,
            created_at: d.created_at,
        }
    }
}

/// A new device slot.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateDeviceRequest {
    /// 1–64 of letters, digits, `-`, `_`, `.`, `@`; a UUID is chosen when absent.
    pub device_id: Option<String>,
    /// A label for people.
    pub display_name: Option<String>,
}

/// Whether a device is connected and logged in.
#[derive(Debug, Clone, Object)]
pub struct DeviceStatusInfo {
    /// The device's id.
    pub device_id: String,
    /// A socket to WhatsApp is up.
    pub is_connected: bool,
    /// The device is linked and usable.
    pub is_logged_in: bool,
}

/// The id of the device an action was taken on.
#[derive(Debug, Clone, Object)]
pub struct DeviceRef {
    /// The device's id.
    pub device_id: String,
}

envelope!(
    /// One device slot.
    DeviceResponse,
    DeviceInfo
);
envelope!(
    /// The tenant's device slots.
    DeviceListResponse,
    Vec<DeviceInfo>
);
envelope!(
    /// A device's connection and login status.
    DeviceStatusResponse,
    DeviceStatusInfo
);
envelope!(
    /// An action on a device was taken.
    DeviceActionResponse,
    DeviceRef
);

/// Parses a device id from a path or body, or answers 400 saying what is allowed.
pub(crate) fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(raw).map_err(|e| ApiError::validation(e.to_string()))
}

/// Device management.
pub struct DevicesApi;

#[OpenApi(tag = "ApiTags::Devices")]
impl DevicesApi {
    /// List devices
    ///
    /// Every device slot of the caller's tenant.
    #[oai(path = "/devices", method = "get", operation_id = "listDevices")]
    async fn list(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<DeviceListResponse>, ApiError> {
        let devices = state.manager.store().list_devices(auth.0.id).await?;
        Ok(DeviceListResponse::success(
            "List devices",
            devices.into_iter().map(DeviceInfo::from).collect(),
        ))
    }

    /// Add a device
    ///
    /// Creates a device slot; link a WhatsApp account to it with the login endpoints.
    #[oai(path = "/devices", method = "post", operation_id = "createDevice")]
    async fn create(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        body: Json<CreateDeviceRequest>,
    ) -> Result<Json<DeviceResponse>, ApiError> {
        let id = match body.0.device_id.as_deref() {
            Some(raw) => device_id(raw)?,
            None => DeviceId::generate(),
        };
        let device = state
            .manager
            .store()
            .create_device(auth.0.id, &id, body.0.display_name.as_deref())
            .await?;
        Ok(DeviceResponse::success("Device added", device.into()))
    }

    /// Device info
    #[oai(
        path = "/devices/:device_id",
        method = "get",
        operation_id = "getDevice"
    )]
    async fn get(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device's id.
        device_id: Path<String>,
    ) -> Result<Json<DeviceResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        let device = find_device(&state, auth.0.id, &id).await?;
        Ok(DeviceResponse::success("Device info", device.into()))
    }

    /// Remove a device
    ///
    /// Logs the device out of WhatsApp, then removes the slot and everything stored for it.
    #[oai(
        path = "/devices/:device_id",
        method = "delete",
        operation_id = "deleteDevice"
    )]
    async fn delete(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device's id.
        device_id: Path<String>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        state.manager.delete(auth.0.id, &id).await?;
        Ok(acted("Device removed", &id))
    }

    /// Log a device out
    ///
    /// Unlinks the WhatsApp account and forgets its keys; the slot stays for a new login.
    #[oai(
        path = "/devices/:device_id/logout",
        method = "post",
        operation_id = "logoutDevice"
    )]
    async fn logout(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device's id.
        device_id: Path<String>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        state.manager.logout(auth.0.id, &id).await?;
        Ok(acted("Logout requested", &id))
    }

    /// Reconnect a device
    ///
    /// Drops and reopens the device's connection to WhatsApp; a linked device logs back in.
    #[oai(
        path = "/devices/:device_id/reconnect",
        method = "post",
        operation_id = "reconnectDevice"
    )]
    async fn reconnect(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device's id.
        device_id: Path<String>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        state.manager.reconnect(auth.0.id, &id).await?;
        Ok(acted("Reconnect requested", &id))
    }

    /// Device status
    #[oai(
        path = "/devices/:device_id/status",
        method = "get",
        operation_id = "getDeviceStatus"
    )]
    async fn status(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device's id.
        device_id: Path<String>,
    ) -> Result<Json<DeviceStatusResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        let status = state.manager.status(auth.0.id, &id).await?;
        Ok(DeviceStatusResponse::success(
            "Device status",
            DeviceStatusInfo {
                device_id: id.to_string(),
                is_connected: status.is_connected,
                is_logged_in: status.is_logged_in,
            },
        ))
    }
}

/// The answer to an action taken on device `id`.
fn acted(message: &str, id: &DeviceId) -> Json<DeviceActionResponse> {
    DeviceActionResponse::success(
        message,
        DeviceRef {
            device_id: id.to_string(),
        },
    )
}

/// The tenant's device `id`, or 404 `DEVICE_NOT_FOUND`.
pub(crate) async fn find_device(
    state: &ApiState,
    tenant: TenantId,
    id: &DeviceId,
) -> Result<Device, ApiError> {
    state
        .manager
        .store()
        .find_device(tenant, id)
        .await?
        .ok_or_else(|| LoginError::DeviceNotFound(id.clone()).into())
}
