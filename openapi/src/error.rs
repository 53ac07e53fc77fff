//! Every error answer, in the envelope, with the status and headers clients rely on.

use poem::http::StatusCode;
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;
use wagate_core::engine::LoginError;
use wagate_core::store::StoreError;

use crate::envelope::ErrorEnvelope;

/// An error answer.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed: a bad phone number, device id or body.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// No or wrong credentials.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorEnvelope>,
        #[oai(header = "WWW-Authenticate")] String,
    ),
    /// The device, webhook, delivery or image does not exist for this tenant.
    #[oai(status = 404)]
    NotFound(Json<ErrorEnvelope>),
    /// The device already exists, or the request conflicts with what is stored.
    #[oai(status = 409)]
    Conflict(Json<ErrorEnvelope>),
    /// WhatsApp asked to slow down.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorEnvelope>, #[oai(header = "Retry-After")] u64),
    /// A fault inside the gateway.
    #[oai(status = 500)]
    Internal(Json<ErrorEnvelope>),
    /// WhatsApp refused the request.
    #[oai(status = 502)]
    BadGateway(Json<ErrorEnvelope>),
    /// WhatsApp did not answer in time.
    #[oai(status = 504)]
    GatewayTimeout(Json<ErrorEnvelope>),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorEnvelope> {
    Json(ErrorEnvelope {
        code: code.to_string(),
        message: message.into(),
    })
}

/// The challenge a 401 carries, so browsers and HTTP clients offer Basic credentials.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"wagate\"";

impl ApiError {
    /// 400 `VALIDATION_ERROR`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::BadRequest(body("VALIDATION_ERROR", message))
    }

    /// 401 `AUTHENTICATION_ERROR`.
    pub fn unauthorized() -> Self {
        Self::Unauthorized(
            body(
                "AUTHENTICATION_ERROR",
                "missing or wrong credentials: send HTTP Basic auth with a wagate credential",
            ),
            BASIC_CHALLENGE.to_string(),
        )
    }

    /// 404 with `code`.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::NotFound(body(code, message))
    }

    /// 409 with `code`.
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::Conflict(body(code, message))
    }

    /// 500 `INTERNAL_SERVER_ERROR`; the detail goes to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::Internal(body(
            "INTERNAL_SERVER_ERROR",
            "the gateway failed internally; the error is logged, try again",
        ))
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeviceExists { .. } => {
                Self::conflict("DEVICE_ALREADY_EXISTS", e.to_string())
            }
            StoreError::DeviceNotFound { .. } => Self::not_found("DEVICE_NOT_FOUND", e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        let message = e.to_string();
        match e {
            LoginError::DeviceNotFound(_) => Self::not_found("DEVICE_NOT_FOUND", message),
            LoginError::AlreadyLoggedIn(_) => Self::BadRequest(body("ALREADY_LOGGED_IN", message)),
            LoginError::InvalidPhone(_) => Self::validation(message),
            LoginError::Timeout { .. } => Self::GatewayTimeout(body("GATEWAY_TIMEOUT", message)),
            LoginError::RateLimited { retry_after, .. } => Self::TooManyRequests(
                body("RATE_LIMITED", message),
                retry_after.map(|d| d.as_secs().max(1)).unwrap_or(60),
            ),
            LoginError::Refused { .. } => Self::BadGateway(body("WHATSAPP_REFUSED", message)),
            LoginError::Cancelled(_) => Self::Conflict(body("LOGIN_CANCELLED", message)),
            LoginError::Store(store) => store.into(),
            LoginError::Internal { .. } => Self::internal(message),
        }
    }
}

/// Turns every error poem or poem-openapi raises itself (unparsable input, missing credentials,
/// unknown routes) into the envelope, so no answer escapes it.
pub(crate) async fn envelope_errors(error: poem::Error) -> poem::Response {
    use poem::IntoResponse;
    // Our own answers are already in the envelope.
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let answer = match status {
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
        StatusCode::NOT_FOUND => ApiError::not_found("NOT_FOUND", "no such endpoint: see /docs"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::validation(format!("method not allowed here: {error}"))
        }
        s if s.is_client_error() => ApiError::validation(error.to_string()),
        _ => ApiError::internal(error.to_string()),
    };
    let mut response = answer.into_response();
    if status.is_client_error() {
        response.set_status(status);
    }
    response
}
