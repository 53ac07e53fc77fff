//! Sandbox builds only: the simulated phone, driven from the API so a person can finish a login
//! from Swagger UI or curl. Calls go to the sandbox's control API.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi, Tags};

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::devices::{MOVING, find_device};
use crate::envelope::envelope;
use crate::spec::OperationErrors;
use crate::{ApiError, ApiState, ErrorCode};

/// The sandbox build's extra group of operations.
#[derive(Tags)]
pub enum SandboxTags {
    /// The simulated phone (sandbox builds only).
    Sandbox,
}

/// What the simulated phone did.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PhoneResult {
    /// The device acted on.
    pub device_id: String,
    /// The companion JID the sandbox linked or unlinked.
    pub jid: String,
}

impl Example for PhoneResult {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            jid: "628912344551:3@s.whatsapp.net".into(),
        }
    }
}

envelope!(
    /// The simulated phone acted.
    PhoneResponse,
    PhoneResult,
    "QR code scanned"
);

/// What a sandbox phone can fail at.
const PHONE_ERRORS: [(u16, &str); 2] = [
    (
        400,
        "`VALIDATION_ERROR`: the device id or phone is malformed, or the device shows nothing \
         the phone could act on (no QR code, no pairing code, not linked).",
    ),
    (
        404,
        "`DEVICE_NOT_FOUND`: no device with this id in your tenant. `NOT_FOUND`: the sandbox \
         does not know the phone or the code.",
    ),
];

/// The error answers of the sandbox operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "sandboxScanQr",
        answers: &[&PHONE_ERRORS, &[MOVING]],
    },
    OperationErrors {
        operation: "sandboxEnterPairCode",
        answers: &[&PHONE_ERRORS, &[MOVING]],
    },
    OperationErrors {
        operation: "sandboxUnlink",
        answers: &[&PHONE_ERRORS, &[MOVING]],
    },
];

/// The simulated phone of a sandbox build.
pub struct SandboxApi {
    /// Base URL of the sandbox's control API, e.g. `http://127.0.0.1:3010`.
    pub control: String,
    /// Client for it.
    pub http: reqwest::Client,
}

impl SandboxApi {
    /// Asks the sandbox phone to act on `device` and reports the companion it linked.
    async fn link(
        &self,
        path: &str,
        body: serde_json::Value,
        device: &wagate_core::domain::DeviceId,
        message: &str,
    ) -> Result<Json<PhoneResponse>, ApiError> {
        let linked = self.phone(path, body).await?;
        Ok(PhoneResponse::success(
            message,
            PhoneResult {
                device_id: device.to_string(),
                jid: linked["jid"].as_str().unwrap_or_default().to_string(),
            },
        ))
    }

    async fn phone(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let response = self
            .http
            .post(format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .map_err(|e| ApiError::internal(format!("sandbox control API unreachable: {e}")))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]
            .as_str()
            .unwrap_or("the sandbox refused")
            .to_string();
        Err(if status.as_u16() == 404 {
            ApiError::not_found(ErrorCode::NotFound, message)
        } else {
            ApiError::validation(message)
        })
    }
}

#[OpenApi(tag = "SandboxTags::Sandbox")]
impl SandboxApi {
    /// Scan the device's QR code with a sandbox phone
    #[oai(
        path = "/sandbox/devices/:device_id/scan",
        method = "post",
        operation_id = "sandboxScanQr"
    )]
    async fn scan(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device showing a QR code.
        device_id: Path<DevicePath>,
        /// The phone that scans; a fresh one when absent.
        phone: Query<Option<String>>,
    ) -> Result<Json<PhoneResponse>, ApiError> {
        let id = device_id.0.0;
        let qr = state
            .manager
            .current_qr(auth.0.id, &id)
            .await?
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "device `{id}` shows no QR code: call GET /devices/{id}/login first"
                ))
            })?;
        let mut body = serde_json::json!({ "qr": qr });
        if let Some(phone) = phone.0 {
            body["phone"] = phone.into();
        }
        self.link("/phone/scan", body, &id, "QR code scanned").await
    }

    /// Enter the device's pairing code on its sandbox phone
    #[oai(
        path = "/sandbox/devices/:device_id/enter-code",
        method = "post",
        operation_id = "sandboxEnterPairCode"
    )]
    async fn enter_code(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device showing a pairing code.
        device_id: Path<DevicePath>,
    ) -> Result<Json<PhoneResponse>, ApiError> {
        let id = device_id.0.0;
        let (phone, code) = state
            .manager
            .current_pair_code(auth.0.id, &id)
            .await?
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "device `{id}` shows no pairing code: call POST /devices/{id}/login/code first"
                ))
            })?;
        let body = serde_json::json!({ "phone": phone.as_str(), "code": code });
        self.link("/phone/pair-code", body, &id, "Pairing code entered")
            .await
    }

    /// Unlink the device from its sandbox phone
    #[oai(
        path = "/sandbox/devices/:device_id/unlink",
        method = "post",
        operation_id = "sandboxUnlink"
    )]
    async fn unlink(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The linked device.
        device_id: Path<DevicePath>,
    ) -> Result<Json<PhoneResponse>, ApiError> {
        let id = device_id.0.0;
        let device = find_device(&state, auth.0.id, &id).await?;
        let jid = device
            .jid
            .ok_or_else(|| ApiError::validation(format!("device `{id}` is not linked")))?;
        self.phone("/phone/unlink", serde_json::json!({ "jid": jid }))
            .await?;
        Ok(PhoneResponse::success(
            "Device unlinked",
            PhoneResult {
                device_id: id.to_string(),
                jid,
            },
        ))
    }
}
