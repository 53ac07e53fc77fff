//! The login endpoints: QR code, pairing code, and the passkey step some accounts add to both.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::Object;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;

use wagate_core::domain::DeviceId;
use wagate_core::engine::{PairCodeLogin, QrLogin};

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::devices::{CANCELLED, DeviceStateName, MOVING, NO_DEVICE};
use crate::envelope::envelope;
use crate::spec::OperationErrors;
use crate::{ApiError, ApiState, ApiTags};

/// A QR code to scan with WhatsApp's "Link a device".
#[derive(Debug, Clone, Object)]
#[oai(example)]
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
#[oai(example)]
pub struct PairCodeResult {
    /// Eight characters shown as `XXXX-XXXX`.
    pub pair_code: String,
    /// The device being linked.
    pub device_id: String,
}

impl Example for QrLoginResult {
    fn example() -> Self {
        Self {
            qr_duration: 30,
            qr_link: "http://localhost:3000/statics/images/qrcode/\
                      scan-qr-b0b7bb43-9a22-455a-814f-5a225c743310.png"
                .into(),
            device_id: "my-device-id".into(),
        }
    }
}

impl Example for PairCodeResult {
    fn example() -> Self {
        Self {
            pair_code: "ABCD-1234".into(),
            device_id: "my-device-id".into(),
        }
    }
}

/// A passkey assertion WhatsApp accepted; the link goes on to `logged_in`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PasskeyAcceptedResult {
    /// The device being linked.
    pub device_id: String,
    /// Its state: still `passkey_required` until the link completes (`passkey_confirmation`,
    /// then `logged_in`, follow as events).
    pub state: DeviceStateName,
}

impl Example for PasskeyAcceptedResult {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            state: DeviceStateName::PasskeyRequired,
        }
    }
}

envelope!(
    /// WhatsApp accepted the passkey assertion.
    PasskeyAcceptedResponse,
    PasskeyAcceptedResult,
    "Passkey accepted"
);
envelope!(
    /// A QR code was generated.
    QrLoginResponse,
    QrLoginResult,
    "QR code generated successfully"
);
envelope!(
    /// A pairing code was generated.
    PairCodeResponse,
    PairCodeResult,
    "Pairing code generated successfully"
);

/// What can go wrong with a login of a device that exists, besides a bad phone number; the
/// link page's logins (`crate::link_page`) answer them too.
pub(crate) const LOGIN_OUTCOMES: [(u16, &str); 6] = [
    CANCELLED,
    (
        409,
        "`PASSKEY_REQUIRED`: the account confirms links with a passkey; the envelope carries \
         `passkey_request_options`: get an assertion for them and post it to \
         `POST /devices/{device_id}/login/passkey`.",
    ),
    (
        429,
        "`RATE_LIMITED`: WhatsApp asked to slow down; retry after `Retry-After` seconds.",
    ),
    (
        502,
        "`WHATSAPP_REFUSED`: WhatsApp refused the login (e.g. the client is outdated).",
    ),
    (
        504,
        "`GATEWAY_TIMEOUT`: WhatsApp did not answer within the login timeout; the device is \
         back to `disconnected`, call again.",
    ),
    MOVING,
];

/// The error answers of the login operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "loginDevice",
        answers: &[
            &[(
                400,
                "`VALIDATION_ERROR`: the device id is malformed. `ALREADY_LOGGED_IN`: the device \
                 is linked; log it out before linking another account.",
            )],
            &[NO_DEVICE],
            &LOGIN_OUTCOMES,
        ],
    },
    OperationErrors {
        operation: "loginDeviceWithCode",
        answers: &[
            &[(
                400,
                "`VALIDATION_ERROR`: the device id or the phone number is malformed (the phone \
                 is 7–15 digits with the country code, not starting with 0). \
                 `ALREADY_LOGGED_IN`: the device is linked; log it out first.",
            )],
            &[NO_DEVICE],
            &LOGIN_OUTCOMES,
        ],
    },
    OperationErrors {
        operation: "loginDeviceWithPasskey",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the device id is malformed, or the body is not a WebAuthn \
                 assertion (`rawId`, `type: public-key`, `response` with `clientDataJSON`, \
                 `authenticatorData` and `signature`, base64url).",
            ),
            NO_DEVICE,
            CANCELLED,
            (
                409,
                "`NO_PASSKEY_REQUESTED`: the device is not in `passkey_required`.",
            ),
            (
                502,
                "`WHATSAPP_REFUSED`: WhatsApp did not accept the assertion; the login ended \
                 (`login_failed`, `passkey_failed`) and the device is `disconnected`: start a \
                 new login.",
            ),
            MOVING,
        ]],
    },
];

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
        /// The device to log in.
        device_id: Path<DevicePath>,
    ) -> Result<Json<QrLoginResponse>, ApiError> {
        let id = device_id.0.0;
        let qr = state.manager.login_qr(auth.0.id, &id).await?;
        Ok(qr_answer(qr, &id))
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
        device_id: Path<DevicePath>,
        /// Phone number to pair with: country code and number, digits only (a leading + is
        /// allowed), e.g. 628912344551.
        #[oai(validator(pattern = r"^\+?[1-9][0-9]{6,14}$"))]
        phone: Query<String>,
    ) -> Result<Json<PairCodeResponse>, ApiError> {
        let id = device_id.0.0;
        let code = state.manager.login_code(auth.0.id, &id, &phone).await?;
        Ok(pair_code_answer(code, &id))
    }

    /// Confirm a login with the account's passkey
    ///
    /// Some accounts confirm every new link with a passkey. After the scan (or the pairing
    /// code) such a device goes to `passkey_required`: the `passkey_requested` event, and the
    /// 409 `PASSKEY_REQUIRED` answer of the login calls, carry WebAuthn request options. Get an
    /// assertion for them (`navigator.credentials.get` on a device that holds the passkey) and
    /// post the `PublicKeyCredential` as JSON here. Once WhatsApp accepts it,
    /// `passkey_confirmation` carries a code the phone shows too, and `logged_in` follows.
    #[oai(
        path = "/devices/:device_id/login/passkey",
        method = "post",
        operation_id = "loginDeviceWithPasskey"
    )]
    async fn login_passkey(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device waiting for the passkey.
        device_id: Path<DevicePath>,
        /// The WebAuthn assertion: `{"id", "rawId", "type": "public-key", "response":
        /// {"clientDataJSON", "authenticatorData", "signature", "userHandle"}}`, binary fields
        /// base64url.
        assertion: Json<serde_json::Value>,
    ) -> Result<Json<PasskeyAcceptedResponse>, ApiError> {
        let id = device_id.0.0;
        state
            .manager
            .login_passkey(auth.0.id, &id, &assertion.0)
            .await?;
        Ok(PasskeyAcceptedResponse::success(
            "Passkey accepted",
            PasskeyAcceptedResult {
                device_id: id.to_string(),
                state: DeviceStateName::PasskeyRequired,
            },
        ))
    }
}

/// The answer of a QR login of `device`, the same from every endpoint that starts one.
pub(crate) fn qr_answer(qr: QrLogin, device: &DeviceId) -> Json<QrLoginResponse> {
    QrLoginResponse::success(
        "QR code generated successfully",
        QrLoginResult {
            qr_duration: qr.duration_secs(),
            qr_link: qr.link,
            device_id: device.to_string(),
        },
    )
}

/// The answer of a pairing-code login of `device`, the same from every endpoint that starts one.
pub(crate) fn pair_code_answer(code: PairCodeLogin, device: &DeviceId) -> Json<PairCodeResponse> {
    PairCodeResponse::success(
        "Pairing code generated successfully",
        PairCodeResult {
            pair_code: code.pair_code,
            device_id: device.to_string(),
        },
    )
}
