//! Device slots: create, list, inspect, delete, log out, reconnect, status.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object, OpenApi};
use wagate_core::domain::{Device, DeviceId, DeviceState, TenantId};
use wagate_core::engine::LoginError;

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::envelope::envelope;
use crate::spec::OperationErrors;
use crate::text::Text;
use crate::timestamp::Timestamp;
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
    /// WhatsApp asks the account's passkey to confirm the link: post the assertion to
    /// `POST /devices/{device_id}/login/passkey`.
    PasskeyRequired,
    /// Linked and usable.
    LoggedIn,
}

impl From<DeviceState> for DeviceStateName {
    fn from(s: DeviceState) -> Self {
        match s {
            DeviceState::Disconnected => Self::Disconnected,
            DeviceState::Connecting => Self::Connecting,
            DeviceState::Connected => Self::Connected,
            DeviceState::PasskeyRequired => Self::PasskeyRequired,
            DeviceState::LoggedIn => Self::LoggedIn,
        }
    }
}

/// A device slot.
#[derive(Debug, Clone, Object)]
#[oai(example)]
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
    pub created_at: Timestamp,
}

impl From<Device> for DeviceInfo {
    fn from(d: Device) -> Self {
        Self {
            id: d.id.to_string(),
            display_name: d.display_name,
            state: d.state.into(),
            jid: d.jid,
            created_at: d.created_at.into(),
        }
    }
}

/// A new device slot.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateDeviceRequest {
    /// 1–64 of letters, digits, `-`, `_`, `.`, `@` (not `.` or `..`); a UUID is chosen when absent.
    pub device_id: Option<Text>,
    /// A label for people, at most 256 characters.
    #[oai(validator(max_length = 256, custom = "crate::text::Storable"))]
    pub display_name: Option<Text>,
}

impl Example for CreateDeviceRequest {
    fn example() -> Self {
        Self {
            device_id: Some("my-device-id".into()),
            display_name: Some("Support desk".into()),
        }
    }
}

impl Example for DeviceInfo {
    fn example() -> Self {
        Self {
            id: "my-device-id".into(),
            display_name: Some("Support desk".into()),
            state: DeviceStateName::LoggedIn,
            jid: Some("628912344551:3@s.whatsapp.net".into()),
            created_at: example_time().into(),
        }
    }
}

impl Example for DeviceStatusInfo {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            is_connected: true,
            is_logged_in: true,
        }
    }
}

impl Example for DeviceRef {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
        }
    }
}

/// The moment the examples of the spec happen at.
pub(crate) fn example_time() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_795_847_400_123).unwrap_or_default()
}

/// Whether a device is connected and logged in.
#[derive(Debug, Clone, Object)]
#[oai(example)]
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
#[oai(example)]
pub struct DeviceRef {
    /// The device's id.
    pub device_id: String,
}

envelope!(
    /// One device slot.
    DeviceResponse,
    DeviceInfo,
    "Device info"
);
envelope!(
    /// The tenant's device slots.
    DeviceListResponse,
    [DeviceInfo],
    "List devices"
);
envelope!(
    /// A device's connection and login status.
    DeviceStatusResponse,
    DeviceStatusInfo,
    "Device status"
);
envelope!(
    /// An action on a device was taken.
    DeviceActionResponse,
    DeviceRef,
    "Logout requested"
);

/// A malformed device id in the path.
pub(crate) const BAD_DEVICE_ID: (u16, &str) = (
    400,
    "`VALIDATION_ERROR`: the device id is not 1–64 of letters, digits, `-`, `_`, `.`, `@` (not `.` or `..`).",
);
/// No such device.
pub(crate) const NO_DEVICE: (u16, &str) = (
    404,
    "`DEVICE_NOT_FOUND`: no device with this id in your tenant; create it with `POST /devices`.",
);
/// The device is moving between nodes, or its node cannot be reached (`crate::forward`).
pub(crate) const MOVING: (u16, &str) = (
    503,
    "`DEVICE_MOVING`: the device is moving between gateway nodes (one joined, stops or restarts) \
     or its node cannot be reached; retry after `Retry-After` seconds.",
);
/// A pending login lost a race with a logout, reconnect or deletion.
pub(crate) const CANCELLED: (u16, &str) = (
    409,
    "`LOGIN_CANCELLED`: the device was logged out, reconnected or deleted meanwhile.",
);

/// The error answers of the device operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "listDevices",
        answers: &[],
    },
    OperationErrors {
        operation: "createDevice",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the body is not a device (a `device_id` that is not 1–64 of \
                 letters, digits, `-`, `_`, `.`, `@`, a field that is not a string, an unknown \
                 field).",
            ),
            (
                409,
                "`DEVICE_ALREADY_EXISTS`: your tenant has a device with this id.",
            ),
        ]],
    },
    OperationErrors {
        operation: "getDevice",
        answers: &[&[BAD_DEVICE_ID, NO_DEVICE, MOVING]],
    },
    OperationErrors {
        operation: "deleteDevice",
        answers: &[&[BAD_DEVICE_ID, NO_DEVICE, MOVING]],
    },
    OperationErrors {
        operation: "logoutDevice",
        answers: &[&[BAD_DEVICE_ID, NO_DEVICE, CANCELLED, MOVING]],
    },
    OperationErrors {
        operation: "reconnectDevice",
        answers: &[&[
            BAD_DEVICE_ID,
            NO_DEVICE,
            CANCELLED,
            (
                502,
                "`WHATSAPP_REFUSED`: WhatsApp refused the device's connection.",
            ),
            MOVING,
        ]],
    },
    OperationErrors {
        operation: "getDeviceStatus",
        answers: &[&[BAD_DEVICE_ID, NO_DEVICE, MOVING]],
    },
];

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
        let devices = state
            .manager
            .store()
            .tenant(auth.0.id)
            .list_devices()
            .await?;
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
        let id = match &body.0.device_id {
            Some(raw) => device_id(raw.as_ref())?,
            None => DeviceId::generate(),
        };
        let display_name = body.0.display_name.map(Text::into_string);
        let device = state
            .manager
            .store()
            .tenant(auth.0.id)
            .create_device(&id, display_name.as_deref())
            .await?;
        Ok(DeviceResponse::success("Device added", device.into()))
    }

    /// Get a device
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
        device_id: Path<DevicePath>,
    ) -> Result<Json<DeviceResponse>, ApiError> {
        let id = device_id.0.0;
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
        device_id: Path<DevicePath>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = device_id.0.0;
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
        device_id: Path<DevicePath>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = device_id.0.0;
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
        device_id: Path<DevicePath>,
    ) -> Result<Json<DeviceActionResponse>, ApiError> {
        let id = device_id.0.0;
        state.manager.reconnect(auth.0.id, &id).await?;
        Ok(acted("Reconnect requested", &id))
    }

    /// Get a device's status
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
        device_id: Path<DevicePath>,
    ) -> Result<Json<DeviceStatusResponse>, ApiError> {
        let id = device_id.0.0;
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
        .tenant(tenant)
        .find_device(id)
        .await?
        .ok_or_else(|| LoginError::DeviceNotFound(id.clone()).into())
}
