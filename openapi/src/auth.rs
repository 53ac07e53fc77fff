//! HTTP Basic auth that yields the caller's tenant: a handler's signature shows its auth, and
//! every device look-up after it is scoped to that tenant.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Basic;
use wagate_core::domain::Tenant;

use crate::throttle;
use crate::{ApiError, ApiState};

/// A wagate credential (HTTP Basic); it belongs to one tenant.
#[derive(SecurityScheme)]
#[oai(rename = "basicAuth", ty = "basic", checker = "tenant_of")]
pub struct TenantAuth(pub Tenant);

async fn tenant_of(req: &Request, basic: Basic) -> poem::Result<Tenant> {
    let tenant = verify(req, basic).await?;
    crate::request_span::record_tenant(tenant.id);
    Ok(tenant)
}

async fn verify(req: &Request, basic: Basic) -> poem::Result<Tenant> {
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| poem::Error::from(ApiError::internal("api state missing from request")))?;
    let store = state.manager.store();
    // A credential that verified recently is never throttled: someone else's guessing must not
    // lock out the clients that know their password.
    if let Some(tenant) = store.recently_verified(&basic.username, &basic.password) {
        return Ok(tenant);
    }
    let admitted = throttle::admit(req, &basic.username)?;
    match store.authenticate(&basic.username, &basic.password).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => {
            admitted.failed();
            Err(ApiError::unauthorized().into())
        }
        Err(e) => Err(ApiError::internal(e).into()),
    }
}
