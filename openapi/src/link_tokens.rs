//! Link tokens, the operator's side: `POST /devices/{device_id}/link` makes a link page for one
//! device and answers its URL, `DELETE` revokes the device's links. The page itself and its
//! token-scoped calls are in `crate::link_page`.

use std::sync::Arc;

use chrono::{SubsecRound as _, TimeDelta, Utc};
use poem::web::Data;
use poem::{Request, RequestBody};
use poem_openapi::param::Path;
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::{Example, ParseFromJSON, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object, OpenApi};
use wagate_core::domain::DeviceState;
use wagate_core::engine::LoginError;

use crate::auth::TenantAuth;
use crate::device_path::DevicePath;
use crate::devices::{MOVING, NO_DEVICE, example_time};
use crate::envelope::{ErrorEnvelope, envelope};
use crate::error::ErrorCode;
use crate::spec::OperationErrors;
use crate::timestamp::Timestamp;
use crate::{ApiError, ApiState, ApiTags};

/// How long a link works when the request does not say, in seconds: long enough to send it and
/// open it, short enough that a forgotten one is soon dead.
const DEFAULT_EXPIRES_IN: u32 = 600;

/// What a new link is to be like.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateLinkRequest {
    /// Seconds the link works, 60 to 86400 (a day); 600 when absent. It stops working earlier
    /// once its device logs in, or when revoked.
    #[oai(validator(minimum(value = "60"), maximum(value = "86400")))]
    pub expires_in: Option<u32>,
}

impl Example for CreateLinkRequest {
    fn example() -> Self {
        Self {
            expires_in: Some(DEFAULT_EXPIRES_IN),
        }
    }
}

/// A link page for one device.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LinkCreatedResult {
    /// The device the link logs in.
    pub device_id: String,
    /// The page to send the person whose phone is to be linked: it needs no other credential
    /// and reaches this device only. Shown only here (only a hash of its token is stored).
    pub link_url: String,
    /// When the link stops working.
    pub expires_at: Timestamp,
}

impl Example for LinkCreatedResult {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            link_url: "http://localhost:3000/link/3q2-7wX9kL0mN1pQ4rS5tU6vW7xY8zA9bC0dE1fG2hI"
                .into(),
            expires_at: example_time().into(),
        }
    }
}

/// The device's links were revoked.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LinksRevokedResult {
    /// The device.
    pub device_id: String,
    /// How many links stopped working now (those already expired or revoked are not counted).
    pub revoked: u64,
}

impl Example for LinksRevokedResult {
    fn example() -> Self {
        Self {
            device_id: "my-device-id".into(),
            revoked: 1,
        }
    }
}

envelope!(
    /// A link page was created.
    LinkCreatedResponse,
    LinkCreatedResult,
    "Link created"
);
envelope!(
    /// The device's link pages were revoked.
    LinksRevokedResponse,
    LinksRevokedResult,
    "Links revoked"
);

/// A JSON body the client may leave out entirely: no `Content-Type` and no bytes is `None`, as
/// is an empty or `null` JSON body. poem-openapi's `Json` wants a `Content-Type` even for an
/// optional body, which `curl -X POST` without `-d` does not send.
pub struct OptionalJson<T>(pub Option<T>);

impl<'a, T: ParseFromJSON + Type + Send> ApiExtractor<'a> for OptionalJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Json<T> as Payload>::CONTENT_TYPE,
                schema: T::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        use poem_openapi::error::ContentTypeError;
        match request.content_type() {
            Some(content_type) if <Json<T> as Payload>::check_content_type(content_type) => {
                let parsed = <Json<Option<T>> as ParsePayload>::from_request(request, body).await?;
                Ok(Self(parsed.0))
            }
            Some(content_type) => Err(ContentTypeError::NotSupported {
                content_type: content_type.to_string(),
            }
            .into()),
            None => {
                let bytes = body.take()?.into_bytes().await?;
                if bytes.is_empty() {
                    Ok(Self(None))
                } else {
                    Err(ContentTypeError::ExpectContentType.into())
                }
            }
        }
    }
}

/// The error answers of the operator's link operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "createLinkToken",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the device id is malformed, or the body is not \
                 `{\"expires_in\": 60–86400}`. `ALREADY_LOGGED_IN`: the device is linked; log it \
                 out before sending a link to link another account.",
            ),
            NO_DEVICE,
            MOVING,
        ]],
    },
    OperationErrors {
        operation: "revokeLinkTokens",
        answers: &[&[
            (400, "`VALIDATION_ERROR`: the device id is malformed."),
            NO_DEVICE,
            MOVING,
        ]],
    },
];

/// Link pages, for the operator.
pub struct LinkTokensApi;

#[OpenApi(tag = "ApiTags::Login")]
impl LinkTokensApi {
    /// Create a link page for a device
    ///
    /// A link to send to the person whose phone is to be linked: `link_url` opens a page that
    /// shows a QR code (or a pairing code for a phone number) for this device and follows it to
    /// `logged_in`, with no other credential: the link is the credential, and it reaches this
    /// device only. It works until `expires_at`, until the device logs in (then it is used up),
    /// or until revoked with `DELETE /devices/{device_id}/link`. Each call makes a new link;
    /// earlier ones keep working.
    #[oai(
        path = "/devices/:device_id/link",
        method = "post",
        operation_id = "createLinkToken"
    )]
    async fn create(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device to link.
        device_id: Path<DevicePath>,
        /// How long the link works; may be left out.
        request: OptionalJson<CreateLinkRequest>,
    ) -> Result<Json<LinkCreatedResponse>, ApiError> {
        let id = device_id.0.0;
        let expires_in = request
            .0
            .and_then(|r| r.expires_in)
            .unwrap_or(DEFAULT_EXPIRES_IN);
        let tenant = state.manager.store().tenant(auth.0.id);
        let device = tenant
            .find_device(&id)
            .await?
            .ok_or_else(|| LoginError::DeviceNotFound(id.clone()))?;
        if device.state == DeviceState::LoggedIn {
            return Err(ApiError::BadRequest(Json(ErrorEnvelope {
                code: ErrorCode::AlreadyLoggedIn,
                message: format!(
                    "device `{id}` is logged in already: log it out before sending a link to \
                     link another account"
                ),
                passkey_request_options: None,
                restore: None,
            })));
        }
        // Whole milliseconds, as every moment is written, so the answer says what is stored.
        let expires_at = (Utc::now() + TimeDelta::seconds(expires_in.into())).trunc_subsecs(3);
        let token = tenant.create_link_token(&id, expires_at).await?;
        Ok(LinkCreatedResponse::success(
            "Link created",
            LinkCreatedResult {
                device_id: id.to_string(),
                link_url: state.public_base.link_page(&token),
                expires_at: expires_at.into(),
            },
        ))
    }

    /// Revoke a device's link pages
    ///
    /// Every link of the device stops working now, including a used one whose page still
    /// follows the device's events; `revoked` counts them. A login already under way through
    /// one goes on (log the device out to stop it).
    #[oai(
        path = "/devices/:device_id/link",
        method = "delete",
        operation_id = "revokeLinkTokens"
    )]
    async fn revoke(
        &self,
        auth: TenantAuth,
        state: Data<&Arc<ApiState>>,
        /// The device whose links to revoke.
        device_id: Path<DevicePath>,
    ) -> Result<Json<LinksRevokedResponse>, ApiError> {
        let id = device_id.0.0;
        let revoked = state
            .manager
            .store()
            .tenant(auth.0.id)
            .revoke_link_tokens(&id)
            .await?;
        Ok(LinksRevokedResponse::success(
            "Links revoked",
            LinksRevokedResult {
                device_id: id.to_string(),
                revoked,
            },
        ))
    }
}
