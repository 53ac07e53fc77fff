//! Every error answer, in the envelope, with the status and headers clients rely on.

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum};
use wagate_core::engine::{LoginError, QrFetchError};
use wagate_core::store::StoreError;

use crate::envelope::ErrorEnvelope;
use crate::readiness::{RestoreField, RestoreProgress};
use crate::routes::Routes;

/// An error answer.
#[derive(Debug, Clone, ApiResponse)]
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
    /// The device, webhook, delivery or image does not exist for this tenant, or no link has
    /// this token; or, on the admin API, the tenant or credential does not exist, or the admin
    /// API is off.
    #[oai(status = 404)]
    NotFound(Json<ErrorEnvelope>),
    /// The method is not served on this path.
    #[oai(status = 405)]
    MethodNotAllowed(Json<ErrorEnvelope>, #[oai(header = "Allow")] String),
    /// The device or tenant already exists, or the request conflicts with what is stored.
    #[oai(status = 409)]
    Conflict(Json<ErrorEnvelope>),
    /// The link expired, was revoked or was already used.
    #[oai(status = 410)]
    Gone(Json<ErrorEnvelope>),
    /// The body is larger than the gateway takes.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorEnvelope>),
    /// The body is not JSON.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorEnvelope>),
    /// WhatsApp asked to slow down.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorEnvelope>, #[oai(header = "Retry-After")] u64),
    /// A fault inside the gateway.
    #[oai(status = 500)]
    Internal(Json<ErrorEnvelope>),
    /// WhatsApp refused the request.
    #[oai(status = 502)]
    BadGateway(Json<ErrorEnvelope>),
    /// The gateway cannot take traffic yet (`GET /ready`), or the device is moving between
    /// nodes: retry after `Retry-After` seconds.
    #[oai(status = 503)]
    ServiceUnavailable(
        Json<ErrorEnvelope>,
        #[oai(header = "Retry-After")] Option<u64>,
    ),
    /// WhatsApp did not answer in time.
    #[oai(status = 504)]
    GatewayTimeout(Json<ErrorEnvelope>),
}

/// Every error `code` the gateway answers with. The spec lists them as an enum and README's
/// error list names each one; a test keeps the three in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A parameter or the body is malformed (400).
    ValidationError,
    /// The device is linked already: log it out before a new login (400).
    AlreadyLoggedIn,
    /// No or wrong credentials (401).
    AuthenticationError,
    /// No device with this id in the caller's tenant (404).
    DeviceNotFound,
    /// No webhook endpoint with this id in the caller's tenant (404).
    WebhookNotFound,
    /// No delivery with this id for this endpoint (404).
    DeliveryNotFound,
    /// No tenant with this id (404; admin API).
    TenantNotFound,
    /// The tenant has no credential with this username (404; admin API).
    CredentialNotFound,
    /// No such route, QR image, link or sandbox phone, or the admin API is off (404).
    NotFound,
    /// The method is not served on this path; `Allow` lists those that are (405).
    MethodNotAllowed,
    /// A device with this id exists already (409).
    DeviceAlreadyExists,
    /// A tenant with this name exists already (409; admin API).
    TenantExists,
    /// A QR code event whose code expired is not sent again (409).
    DeliveryExpired,
    /// The device was deleted or logged out while its login was pending (409).
    LoginCancelled,
    /// The account confirms links with a passkey: the envelope carries
    /// `passkey_request_options`; post the assertion to `POST /devices/{device_id}/login/passkey`
    /// (409).
    PasskeyRequired,
    /// A passkey assertion was posted for a device that is not in `passkey_required` (409).
    NoPasskeyRequested,
    /// The link expired, was revoked or was already used: ask whoever sent it for a new one
    /// (410).
    LinkExpired,
    /// The body is larger than 64 KiB (413).
    PayloadTooLarge,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// WhatsApp asked to slow down, or too many sign-ins failed; retry after `Retry-After`
    /// seconds (429).
    RateLimited,
    /// A fault inside the gateway; it is logged (500).
    InternalServerError,
    /// WhatsApp refused the request (502).
    WhatsappRefused,
    /// `GET /ready` only: the gateway cannot take traffic yet; the message says what is not
    /// ready (database, migrations, webhook delivery, the start-up restore) and `restore`
    /// carries the restore's progress (503).
    NotReady,
    /// The device is moving between gateway nodes (one joined, left or restarts) or its node
    /// cannot be reached; retry after `Retry-After` seconds (503).
    DeviceMoving,
    /// WhatsApp did not answer within the login timeout (504).
    GatewayTimeout,
}

fn body(code: ErrorCode, message: impl Into<String>) -> Json<ErrorEnvelope> {
    Json(ErrorEnvelope {
        code,
        message: message.into(),
        passkey_request_options: None,
        restore: None,
    })
}

/// The largest request body the gateway reads; every body it takes is far smaller.
pub const MAX_BODY: usize = 64 * 1024;

/// The challenge a 401 carries, so browsers and HTTP clients offer Basic credentials.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"wagate\"";

impl ApiError {
    /// 400 `VALIDATION_ERROR`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::BadRequest(body(ErrorCode::ValidationError, message))
    }

    /// 401 `AUTHENTICATION_ERROR`.
    pub fn unauthorized() -> Self {
        Self::Unauthorized(
            body(
                ErrorCode::AuthenticationError,
                "missing or wrong credentials: send HTTP Basic auth with a wagate credential",
            ),
            BASIC_CHALLENGE.to_string(),
        )
    }

    /// 401 `AUTHENTICATION_ERROR` saying `message`: what to send instead.
    pub fn unauthorized_because(message: impl Into<String>) -> Self {
        Self::Unauthorized(
            body(ErrorCode::AuthenticationError, message),
            BASIC_CHALLENGE.to_string(),
        )
    }

    /// 401 `AUTHENTICATION_ERROR` on the admin API.
    pub fn admin_unauthorized() -> Self {
        Self::Unauthorized(
            body(
                ErrorCode::AuthenticationError,
                "missing or wrong credentials: send HTTP Basic auth with the admin credential \
                 (WAGATE_ADMIN_AUTH); a tenant's credential is not accepted here",
            ),
            BASIC_CHALLENGE.to_string(),
        )
    }

    /// 404 `NOT_FOUND` for every `/admin/…` path while the admin API is off.
    pub fn admin_off() -> Self {
        Self::not_found(
            ErrorCode::NotFound,
            "the admin API is off: set WAGATE_ADMIN_AUTH=user:password on the gateway to turn \
             it on",
        )
    }

    /// 404 with `code`.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::NotFound(body(code, message))
    }

    /// 410 `LINK_EXPIRED`: the link page's token no longer works.
    pub fn link_expired() -> Self {
        Self::Gone(body(
            ErrorCode::LinkExpired,
            "this link expired, was revoked or was already used; ask for a new one",
        ))
    }

    /// 409 with `code`.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict(body(code, message))
    }

    /// 429 `RATE_LIMITED` for a client or username with too many failed sign-ins.
    pub fn too_many_failed_sign_ins(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs().max(1);
        Self::TooManyRequests(
            body(
                ErrorCode::RateLimited,
                format!(
                    "too many failed sign-ins from this address or for this username: retry in \
                     {seconds} s with the right credentials"
                ),
            ),
            seconds,
        )
    }

    /// 413 `PAYLOAD_TOO_LARGE`.
    pub fn payload_too_large() -> Self {
        Self::PayloadTooLarge(body(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {} KiB: send less", MAX_BODY / 1024),
        ))
    }

    /// 503 `NOT_READY`, with the start-up restore's progress in the envelope's `restore`.
    pub fn not_ready(message: impl Into<String>, restore: RestoreProgress) -> Self {
        let mut envelope = body(ErrorCode::NotReady, message);
        envelope.0.restore = Some(RestoreField(restore));
        Self::ServiceUnavailable(envelope, None)
    }

    /// 503 `DEVICE_MOVING`: the device's node is changing or cannot be reached; retry in a
    /// second.
    pub fn device_moving(message: impl Into<String>) -> Self {
        Self::ServiceUnavailable(body(ErrorCode::DeviceMoving, message), Some(1))
    }

    /// 500 `INTERNAL_SERVER_ERROR`; the detail goes to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::Internal(body(
            ErrorCode::InternalServerError,
            "the gateway failed internally; the error is logged, try again",
        ))
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeviceExists { .. } => {
                Self::conflict(ErrorCode::DeviceAlreadyExists, e.to_string())
            }
            StoreError::DeviceNotFound { .. } => {
                Self::not_found(ErrorCode::DeviceNotFound, e.to_string())
            }
            // The caller's tenant was deleted after its credential was checked: that credential
            // is no longer any tenant's.
            StoreError::TenantNotFound(_) => Self::unauthorized(),
            other => Self::internal(other),
        }
    }
}

impl From<QrFetchError> for ApiError {
    fn from(e: QrFetchError) -> Self {
        match e {
            QrFetchError::Store(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        let message = e.to_string();
        match e {
            LoginError::DeviceNotFound(_) => Self::not_found(
                ErrorCode::DeviceNotFound,
                format!("{message}: create it first with POST /devices"),
            ),
            LoginError::AlreadyLoggedIn(_) => {
                Self::BadRequest(body(ErrorCode::AlreadyLoggedIn, message))
            }
            LoginError::InvalidPhone(_) => Self::validation(message),
            LoginError::Timeout { .. } => {
                Self::GatewayTimeout(body(ErrorCode::GatewayTimeout, message))
            }
            LoginError::RateLimited { retry_after, .. } => Self::TooManyRequests(
                body(ErrorCode::RateLimited, message),
                retry_after.map(|d| d.as_secs().max(1)).unwrap_or(60),
            ),
            LoginError::Refused { .. } => {
                Self::BadGateway(body(ErrorCode::WhatsappRefused, message))
            }
            LoginError::Cancelled(_) => Self::Conflict(body(ErrorCode::LoginCancelled, message)),
            LoginError::OwnedElsewhere(_) => Self::device_moving(message),
            LoginError::PasskeyRequired {
                request_options, ..
            } => {
                let mut envelope = body(ErrorCode::PasskeyRequired, message);
                envelope.0.passkey_request_options = Some(Box::new(request_options));
                Self::Conflict(envelope)
            }
            LoginError::NoPasskeyRequested(_) => {
                Self::Conflict(body(ErrorCode::NoPasskeyRequested, message))
            }
            LoginError::InvalidPasskeyAssertion(_) => Self::validation(message),
            LoginError::Store(store) => store.into(),
            LoginError::Internal { .. } => Self::internal(message),
        }
    }
}

/// Turns every error poem or poem-openapi raises itself (unparsable input, missing credentials,
/// unknown routes, a method or body type a route does not take) into the envelope, so no answer
/// escapes it. `path` is the request's, to name path parameters and fill `Allow`.
pub(crate) fn envelope_errors(error: poem::Error, path: &str, routes: &Routes) -> poem::Response {
    use poem::IntoResponse;
    use poem_openapi::error::{
        ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
    };
    // Our own answers are already in the envelope.
    if error.is_from_response() {
        return error.into_response();
    }
    let answer = if let Some(e) = error.downcast_ref::<ParsePathError>() {
        // poem-openapi names path parameters by position (`param0`); the route knows the name.
        let name = e
            .name
            .strip_prefix("param")
            .and_then(|n| n.parse().ok())
            .and_then(|index| routes.param_name(path, index))
            .unwrap_or(e.name);
        ApiError::validation(format!("path parameter `{name}`: {}", plain(&e.reason)))
    } else if let Some(e) = error.downcast_ref::<ParseParamError>() {
        ApiError::validation(format!(
            "query parameter `{}`: {}",
            e.name,
            plain(&e.reason)
        ))
    } else if let Some(e) = error.downcast_ref::<ParseRequestPayloadError>() {
        ApiError::validation(format!("JSON body: {}", plain(&e.reason)))
    } else if error.is::<ContentTypeError>() {
        ApiError::UnsupportedMediaType(body(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ))
    } else {
        match error.status() {
            StatusCode::UNAUTHORIZED if crate::admin::is_admin_path(path) => {
                ApiError::admin_unauthorized()
            }
            StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
            StatusCode::NOT_FOUND => {
                ApiError::not_found(ErrorCode::NotFound, "no such endpoint: see /docs")
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = routes.allow(path).unwrap_or_default();
                ApiError::MethodNotAllowed(
                    body(
                        ErrorCode::MethodNotAllowed,
                        format!("this path serves only {allow}"),
                    ),
                    allow,
                )
            }
            s if s.is_client_error() => ApiError::validation(error.to_string()),
            _ => ApiError::internal(error.to_string()),
        }
    };
    answer.into_response()
}

/// poem-openapi's wording of a parse failure, made readable: `verification failed.
/// maxLength(256)` becomes `must have at most 256 characters`, and so on for each rule.
fn plain(reason: &str) -> String {
    const FAILED: [&str; 2] = ["verification failed. ", "verify failed. "];
    let Some((before, rule)) = FAILED.iter().find_map(|f| reason.split_once(f)) else {
        return reason.to_string();
    };
    let argument = |name: &str| {
        rule.strip_prefix(name)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.split([')', ',']).next())
    };
    let rule = if let Some(n) = argument("maxLength") {
        format!("must have at most {n} characters")
    } else if let Some(n) = argument("minItems") {
        format!("must have at least {n} item(s)")
    } else if let Some(n) = argument("maximum") {
        format!("must be at most {n}")
    } else if let Some(n) = argument("minimum") {
        format!("must be at least {n}")
    } else if rule == format!("pattern(\"{}\")", crate::text::NOT_BLANK) {
        "must contain more than whitespace".to_string()
    } else if let Some(pattern) = rule.strip_prefix("pattern(") {
        format!("must match {}", pattern.trim_end_matches(')'))
    } else {
        format!("must be {rule}")
    };
    format!("{before}{rule}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wagate_core::domain::TenantId;

    #[test]
    fn a_write_for_a_tenant_deleted_meanwhile_is_unauthorized_not_internal() {
        let e = ApiError::from(StoreError::TenantNotFound(TenantId(uuid::Uuid::nil())));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    }
}
