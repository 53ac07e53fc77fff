//! Public resources: QR images, the health check (liveness) and readiness.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;
use wagate_core::engine::qr_png;

use crate::envelope::envelope;
use crate::error::ErrorCode;
use crate::readiness::{self, ReadyResponse, ReadyResult};
use crate::spec::OperationErrors;
use crate::{ApiError, ApiState, ApiTags};

/// A QR image.
#[derive(ApiResponse)]
pub enum QrImageResponse {
    /// The PNG.
    #[oai(status = 200, content_type = "image/png")]
    Png(Binary<Vec<u8>>, #[oai(header = "Cache-Control")] String),
}

/// The gateway is up.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct HealthResult {
    /// `ok`.
    pub status: String,
}

impl Example for HealthResult {
    fn example() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

envelope!(
    /// The gateway's health.
    HealthResponse,
    HealthResult,
    "ok"
);

/// The error answers of the public operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "getQrImage",
        answers: &[&[(
            404,
            "`NOT_FOUND`: no such image, or its code expired; call the login endpoint again \
             for a new one.",
        )]],
    },
    OperationErrors {
        operation: "health",
        answers: &[],
    },
    OperationErrors {
        operation: "ready",
        answers: &[&[(
            503,
            "`NOT_READY`: the gateway cannot take traffic yet: its database does not answer \
             or lacks migrations, webhook delivery is not running, or the linked devices are \
             still being restored. The message says which; `restore` carries the restore's \
             progress.",
        )]],
    },
];

/// The path of QR image `image`, as [`StaticsApi`] serves it.
pub(crate) fn qr_image_path(image: Uuid) -> String {
    format!("{QR_IMAGE_DIR}/{QR_IMAGE_PREFIX}{image}{QR_IMAGE_SUFFIX}")
}

const QR_IMAGE_DIR: &str = "/statics/images/qrcode";
const QR_IMAGE_PREFIX: &str = "scan-qr-";
const QR_IMAGE_SUFFIX: &str = ".png";

/// Resources served without authentication.
pub struct StaticsApi;

#[OpenApi]
impl StaticsApi {
    /// Get a QR code image
    ///
    /// The PNG behind a login's `qr_link`. No authentication: the name is unguessable, and the
    /// image is gone (404) once its code expires.
    #[oai(
        path = "/statics/images/qrcode/:file_name",
        method = "get",
        operation_id = "getQrImage",
        tag = "ApiTags::Login"
    )]
    async fn qr_image(
        &self,
        state: Data<&Arc<ApiState>>,
        /// `scan-qr-{uuid}.png`.
        file_name: Path<String>,
    ) -> Result<QrImageResponse, ApiError> {
        let gone = || {
            ApiError::not_found(
                ErrorCode::NotFound,
                "qr image not found or expired: call the login endpoint again for a new code",
            )
        };
        let id = file_name
            .strip_prefix(QR_IMAGE_PREFIX)
            .and_then(|rest| rest.strip_suffix(QR_IMAGE_SUFFIX))
            .and_then(|uuid| Uuid::parse_str(uuid).ok())
            .ok_or_else(gone)?;
        let png = qr_png(state.manager.store(), id).await?.ok_or_else(gone)?;
        Ok(QrImageResponse::Png(Binary(png), "no-store".to_string()))
    }

    /// Check health
    #[oai(
        path = "/health",
        method = "get",
        operation_id = "health",
        tag = "ApiTags::Health"
    )]
    async fn health(&self) -> Json<HealthResponse> {
        HealthResponse::success(
            "ok",
            HealthResult {
                status: "ok".to_string(),
            },
        )
    }

    /// Check readiness
    ///
    /// Whether this gateway can take traffic: 200 once its database answers with every
    /// migration applied, webhook delivery runs and the start-up restore of linked devices has
    /// finished; 503 `NOT_READY` until then (or when one of them stops), saying what is not
    /// ready, with the restore's progress in `restore`. `/health` is liveness: it answers as
    /// long as the process serves.
    #[oai(
        path = "/ready",
        method = "get",
        operation_id = "ready",
        tag = "ApiTags::Health"
    )]
    async fn ready(&self, state: Data<&Arc<ApiState>>) -> Result<Json<ReadyResponse>, ApiError> {
        let restore = readiness::check(&state).await?;
        Ok(ReadyResponse::success(
            "ready",
            ReadyResult {
                status: "ready".to_string(),
                restore,
            },
        ))
    }
}
