//! The seed's two login endpoints: QR code and pairing code.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::Object;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;

use crate::auth::TenantAuth;
use crate::devices::device_id;
use crate::envelope::envelope;
use crate::{ApiError, ApiState, ApiTags};

/// A QR code to scan with WhatsApp's "Link a device".
#[derive(Debug, Clone, Object)]
pub struct QrLoginResult {
    /// Seconds the code in the image stays valid (at most 30); call again for a fresh one.
    #[oai(validator(maximum(value = "30")))]
    pub qr_duration: u64,
    /// The QR code as a 512×512 PNG; public, unguessable, and gone once it expires.
    pub qr_link: String,
    /// The device being linked.
    pub device_id: String,
}

/// A pairing code to enter under "Link with phone number instead".
#[derive(Debug, Clone, Object)]
pub struct PairCodeResult {
    /// Eight characters shown as `XXXX-XXXX`.
    pub pair_code: String,
    /// The device being linked.
    pub device_id: String,
}

envelope!(
    /// A QR code was generated.
    QrLoginResponse,
    QrLoginResult
);
envelope!(
    /// A pairing code was generated.
    PairCodeResponse,
    PairCodeResult
);

/// Linking a WhatsApp account to a device.
pub struct LoginApi;

#[OpenApi(tag = "ApiTags::Login")]
impl LoginApi {
    /// Login Device
    ///
    /// Generates a QR code to scan with WhatsApp (Settings > Linked Devices > Link a Device).
    /// While a code is pending, calling again returns it; after the series runs out, a new one
    /// starts.
    #[oai(
        path = "/devices/:device_id/login",
        method = "get",
        operation_id = "loginDevice"
    )]
    async fn login(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        req: &Request,
        /// The device to log in.
        device_id: Path<String>,
    ) -> Result<Json<QrLoginResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        let qr = state.manager.login_qr(auth.0.id, &id).await?;
        let qr_link = wagate_core::events::wire::qr_link(&state.public_base(req), qr.image);
        Ok(QrLoginResponse::success(
            "QR code generated successfully",
            QrLoginResult {
                qr_duration: qr.duration_secs(),
                qr_link,
                device_id: id.to_string(),
            },
        ))
    }

    /// Login Device with pairing code
    ///
    /// Generates an 8-character pairing code to enter on the phone (Linked Devices > Link a
    /// Device > Link with phone number instead). Calling again with the same phone while the
    /// code is outstanding returns the same code.
    #[oai(
        path = "/devices/:device_id/login/code",
        method = "post",
        operation_id = "loginDeviceWithCode"
    )]
    async fn login_code(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device to log in.
        device_id: Path<String>,
        /// Phone number to pair with: country code and number, digits only (a leading + is
        /// allowed), e.g. 628912344551.
        phone: Query<Option<String>>,
    ) -> Result<Json<PairCodeResponse>, ApiError> {
        let id = self::device_id(&device_id)?;
        let phone = phone.0.unwrap_or_default();
        let code = state.manager.login_code(auth.0.id, &id, &phone).await?;
        Ok(PairCodeResponse::success(
            "Pairing code generated successfully",
            PairCodeResult {
                pair_code: code.pair_code,
                device_id: id.to_string(),
            },
        ))
    }
}
