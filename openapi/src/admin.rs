//! The operator's API under `/admin/…`: tenants and their credentials. It has its own
//! credential (`WAGATE_ADMIN_AUTH`), which is no tenant's: a tenant credential is refused here
//! and the admin credential is refused everywhere else. Without the setting the admin API is
//! off and every `/admin/…` path is a 404 (`crate::serve` answers before routing).

use std::fmt;
use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::auth::Basic;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi, SecurityScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use wagate_core::domain::TenantId;
use wagate_core::engine::LoginError;
use wagate_core::store::{Credential, StoreError, TenantSummary};

use crate::devices::example_time;
use crate::envelope::envelope;
use crate::error::ErrorCode;
use crate::spec::OperationErrors;
use crate::text::Text;
use crate::throttle;
use crate::timestamp::Timestamp;
use crate::{ApiError, ApiState, ApiTags};

/// Whether `path` is the admin API's, which answers 404 while the admin API is off.
pub(crate) fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// The operator's credentials for the admin API (`WAGATE_ADMIN_AUTH`), kept as SHA-256 digests
/// and compared in constant time. They are not stored in the database and belong to no tenant.
#[derive(Clone)]
pub struct AdminCredential {
    pairs: Vec<([u8; 32], [u8; 32])>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl AdminCredential {
    /// The admin credential made of these `(username, password)` pairs; `None` without any,
    /// which leaves the admin API off.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Option<Self> {
        let pairs: Vec<_> = pairs
            .into_iter()
            .map(|(user, password)| (sha256(&user), sha256(&password)))
            .collect();
        (!pairs.is_empty()).then_some(Self { pairs })
    }

    /// Whether `username` and `password` are one of the pairs. Every pair is compared in full
    /// whatever matches, so the time taken does not tell which part was wrong.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        let (user, password) = (sha256(username), sha256(password));
        self.pairs
            .iter()
            .fold(subtle::Choice::from(0), |found, (u, p)| {
                found | (u.ct_eq(&user) & p.ct_eq(&password))
            })
            .into()
    }
}

/// Keeps the credential out of logs.
impl fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminCredential")
            .field("pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

/// The operator's credential (HTTP Basic, `WAGATE_ADMIN_AUTH`), for the admin API only; it is
/// no tenant's.
// The checker yields the username signed in, for the log.
#[derive(SecurityScheme)]
#[oai(rename = "adminAuth", ty = "basic", checker = "operator")]
pub struct AdminAuth(pub String);

pub(crate) async fn operator(req: &Request, basic: Basic) -> poem::Result<String> {
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| poem::Error::from(ApiError::internal("api state missing from request")))?;
    let Some(admin) = &state.admin else {
        return Err(ApiError::admin_off().into());
    };
    let admitted = throttle::admit(req, &basic.username)?;
    if admin.verify(&basic.username, &basic.password) {
        Ok(basic.username)
    } else {
        admitted.failed();
        Err(ApiError::admin_unauthorized().into())
    }
}

/// A tenant and how much it holds.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct TenantInfo {
    /// The tenant's id.
    pub id: Uuid,
    /// Its name, unique among tenants.
    pub name: String,
    /// Its device slots.
    pub devices: u64,
    /// Its API credentials.
    pub credentials: u64,
    /// When it was created.
    pub created_at: Timestamp,
}

impl From<TenantSummary> for TenantInfo {
    fn from(t: TenantSummary) -> Self {
        Self {
            id: t.tenant.id.0,
            name: t.tenant.name,
            devices: u64::try_from(t.devices).unwrap_or_default(),
            credentials: u64::try_from(t.credentials).unwrap_or_default(),
            created_at: t.created_at.into(),
        }
    }
}

const EXAMPLE_TENANT: Uuid = Uuid::from_u128(0x3f2a8c1e_9b4d_4e7a_8c21_5d6e7f809a1b);
const EXAMPLE_USERNAME: &str = "wg_4Jc1aZ0qL8sVt2Xy";

impl Example for TenantInfo {
    fn example() -> Self {
        Self {
            id: EXAMPLE_TENANT,
            name: "Acme Support".into(),
            devices: 3,
            credentials: 1,
            created_at: example_time().into(),
        }
    }
}

/// An API credential of a tenant, in clear in this answer only: wagate keeps only a hash of
/// the password.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CredentialInfo {
    /// The HTTP Basic username.
    pub username: String,
    /// The HTTP Basic password.
    pub password: String,
}

impl From<Credential> for CredentialInfo {
    fn from(c: Credential) -> Self {
        Self {
            username: c.username,
            password: c.secret,
        }
    }
}

impl Example for CredentialInfo {
    fn example() -> Self {
        Self {
            username: EXAMPLE_USERNAME.into(),
            password: "q7VxN2mK9pR4sT8wY1zB3cD5fG6hJ0kL".into(),
        }
    }
}

/// A new tenant with its first credential.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct TenantWithCredential {
    /// The tenant.
    #[oai(flatten)]
    pub tenant: TenantInfo,
    /// Its first credential, shown only here.
    pub credential: CredentialInfo,
}

impl Example for TenantWithCredential {
    fn example() -> Self {
        Self {
            tenant: TenantInfo {
                devices: 0,
                ..TenantInfo::example()
            },
            credential: CredentialInfo::example(),
        }
    }
}

/// The id of a removed tenant.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct TenantRef {
    /// The tenant's id.
    pub id: Uuid,
}

impl Example for TenantRef {
    fn example() -> Self {
        Self { id: EXAMPLE_TENANT }
    }
}

/// A revoked credential.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CredentialRef {
    /// The tenant it belonged to.
    pub tenant_id: Uuid,
    /// Its username.
    pub username: String,
}

impl Example for CredentialRef {
    fn example() -> Self {
        Self {
            tenant_id: EXAMPLE_TENANT,
            username: EXAMPLE_USERNAME.into(),
        }
    }
}

/// A new tenant.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateTenantRequest {
    /// A name for operators, unique among tenants: 1–256 characters, not only whitespace;
    /// leading and trailing whitespace is dropped.
    #[oai(validator(max_length = 256, pattern = r"\S", custom = "crate::text::Storable"))]
    pub name: Text,
}

impl Example for CreateTenantRequest {
    fn example() -> Self {
        Self {
            name: "Acme Support".into(),
        }
    }
}

envelope!(
    /// A new tenant, with its first credential shown once.
    TenantCreatedResponse,
    TenantWithCredential,
    "Tenant added"
);
envelope!(
    /// Every tenant.
    TenantListResponse,
    [TenantInfo],
    "List tenants"
);
envelope!(
    /// A removed tenant.
    TenantDeletedResponse,
    TenantRef,
    "Tenant removed"
);
envelope!(
    /// A new credential, shown once.
    CredentialCreatedResponse,
    CredentialInfo,
    "Credential added"
);
envelope!(
    /// A revoked credential.
    CredentialRevokedResponse,
    CredentialRef,
    "Credential revoked"
);

/// The admin API is off.
const OFF: (u16, &str) = (
    404,
    "`NOT_FOUND`: the admin API is off; set `WAGATE_ADMIN_AUTH` to turn it on.",
);
/// A malformed tenant id in the path.
const BAD_TENANT_ID: (u16, &str) = (400, "`VALIDATION_ERROR`: the tenant id is not a UUID.");
/// No such tenant.
const NO_TENANT: (u16, &str) = (404, "`TENANT_NOT_FOUND`: no tenant with this id.");

/// The error answers of the admin operations (the spec's; see `crate::spec`).
pub(crate) const ERRORS: &[OperationErrors] = &[
    OperationErrors {
        operation: "createTenant",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the body is not a tenant (a `name` that is empty, only \
                 whitespace, longer than 256 characters, holds a NUL character or is not a \
                 string; an unknown field).",
            ),
            OFF,
            (409, "`TENANT_EXISTS`: a tenant has this name."),
        ]],
    },
    OperationErrors {
        operation: "listTenants",
        answers: &[&[OFF]],
    },
    OperationErrors {
        operation: "deleteTenant",
        answers: &[&[BAD_TENANT_ID, OFF, NO_TENANT]],
    },
    OperationErrors {
        operation: "createCredential",
        answers: &[&[BAD_TENANT_ID, OFF, NO_TENANT]],
    },
    OperationErrors {
        operation: "revokeCredential",
        answers: &[&[
            (
                400,
                "`VALIDATION_ERROR`: the tenant id is not a UUID, or the username holds a NUL \
                 character.",
            ),
            OFF,
            NO_TENANT,
            (
                404,
                "`CREDENTIAL_NOT_FOUND`: the tenant has no credential with this username.",
            ),
        ]],
    },
];

/// The admin answer to a store error: tenants and credentials that are missing or taken.
fn refused(e: StoreError) -> ApiError {
    match &e {
        StoreError::TenantNotFound(id) => ApiError::not_found(
            ErrorCode::TenantNotFound,
            format!("no tenant with id {id}: list them with GET /admin/tenants"),
        ),
        StoreError::TenantExists(_) => ApiError::conflict(ErrorCode::TenantExists, e.to_string()),
        StoreError::CredentialNotFound { .. } => {
            ApiError::not_found(ErrorCode::CredentialNotFound, e.to_string())
        }
        _ => e.into(),
    }
}

/// Tenants and their credentials, for the operator.
pub struct AdminApi;

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// Add a tenant
    ///
    /// Creates a tenant with one fresh credential; its password is in this answer only.
    #[oai(
        path = "/admin/tenants",
        method = "post",
        operation_id = "createTenant"
    )]
    async fn create(
        &self,
        auth: AdminAuth,
        state: Data<&Arc<ApiState>>,
        body: Json<CreateTenantRequest>,
    ) -> Result<Json<TenantCreatedResponse>, ApiError> {
        let name = body.0.name.as_ref().trim();
        let store = state.manager.store();
        let (tenant, credential) = store.create_tenant(name).await.map_err(refused)?;
        tracing::info!(admin = %auth.0, tenant = %tenant.id, name, "tenant created");
        let summary = store.tenant(tenant.id).summary().await?.ok_or_else(|| {
            ApiError::internal(format!("tenant {} vanished as it was created", tenant.id))
        })?;
        Ok(TenantCreatedResponse::success(
            "Tenant added",
            TenantWithCredential {
                tenant: summary.into(),
                credential: credential.into(),
            },
        ))
    }

    /// List tenants
    ///
    /// Every tenant, oldest first, with how many devices and credentials it has.
    #[oai(path = "/admin/tenants", method = "get", operation_id = "listTenants")]
    async fn list(
        &self,
        _auth: AdminAuth,
        state: Data<&Arc<ApiState>>,
    ) -> Result<Json<TenantListResponse>, ApiError> {
        let tenants = state.manager.store().list_tenants().await?;
        Ok(TenantListResponse::success(
            "List tenants",
            tenants.into_iter().map(TenantInfo::from).collect(),
        ))
    }

    /// Remove a tenant
    ///
    /// Revokes the tenant's credentials, logs each of its devices out of WhatsApp and removes
    /// them, then removes the tenant with its webhook endpoints and their delivery log.
    #[oai(
        path = "/admin/tenants/:tenant_id",
        method = "delete",
        operation_id = "deleteTenant"
    )]
    async fn delete(
        &self,
        auth: AdminAuth,
        state: Data<&Arc<ApiState>>,
        /// The tenant's id.
        tenant_id: Path<Uuid>,
    ) -> Result<Json<TenantDeletedResponse>, ApiError> {
        let tenant = TenantId(tenant_id.0);
        state
            .manager
            .delete_tenant(tenant)
            .await
            .map_err(|e| match e {
                LoginError::Store(e) => refused(e),
                other => other.into(),
            })?;
        tracing::info!(admin = %auth.0, %tenant, "tenant removed");
        Ok(TenantDeletedResponse::success(
            "Tenant removed",
            TenantRef { id: tenant.0 },
        ))
    }

    /// Add a credential
    ///
    /// Gives the tenant one more credential; its password is in this answer only. The
    /// tenant's other credentials keep working.
    #[oai(
        path = "/admin/tenants/:tenant_id/credentials",
        method = "post",
        operation_id = "createCredential"
    )]
    async fn add_credential(
        &self,
        auth: AdminAuth,
        state: Data<&Arc<ApiState>>,
        /// The tenant's id.
        tenant_id: Path<Uuid>,
    ) -> Result<Json<CredentialCreatedResponse>, ApiError> {
        let tenant = TenantId(tenant_id.0);
        let credential = state
            .manager
            .store()
            .tenant(tenant)
            .add_credential()
            .await
            .map_err(refused)?;
        tracing::info!(admin = %auth.0, %tenant, username = %credential.username, "credential added");
        Ok(CredentialCreatedResponse::success(
            "Credential added",
            credential.into(),
        ))
    }

    /// Revoke a credential
    ///
    /// The credential is refused from the next request on.
    #[oai(
        path = "/admin/tenants/:tenant_id/credentials/:username",
        method = "delete",
        operation_id = "revokeCredential"
    )]
    async fn revoke_credential(
        &self,
        auth: AdminAuth,
        state: Data<&Arc<ApiState>>,
        /// The tenant's id.
        tenant_id: Path<Uuid>,
        /// The credential's username.
        #[oai(validator(custom = "crate::text::Storable"))]
        username: Path<String>,
    ) -> Result<Json<CredentialRevokedResponse>, ApiError> {
        let tenant = TenantId(tenant_id.0);
        state
            .manager
            .store()
            .tenant(tenant)
            .revoke_credential(&username)
            .await
            .map_err(refused)?;
        tracing::info!(admin = %auth.0, %tenant, username = %username.0, "credential revoked");
        Ok(CredentialRevokedResponse::success(
            "Credential revoked",
            CredentialRef {
                tenant_id: tenant.0,
                username: username.0,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(user: &str, password: &str) -> (String, String) {
        (user.to_string(), password.to_string())
    }

    #[test]
    fn only_a_configured_pair_verifies() {
        let admin =
            AdminCredential::new([pair("root", "s3cret"), pair("ops", "other")]).expect("pairs");
        assert!(admin.verify("root", "s3cret"));
        assert!(admin.verify("ops", "other"));
        assert!(!admin.verify("root", "other"), "pairs do not mix");
        assert!(!admin.verify("root", "s3cret!"));
        assert!(!admin.verify("", ""));
    }

    #[test]
    fn no_pairs_is_no_admin_api() {
        assert!(AdminCredential::new(Vec::new()).is_none());
    }

    #[test]
    fn the_debug_form_shows_no_secret() {
        let admin = AdminCredential::new([pair("root", "s3cret")]).expect("a pair");
        let shown = format!("{admin:?}");
        assert!(
            !shown.contains("root") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
