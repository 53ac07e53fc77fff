//! HTTP Basic auth that yields the caller's tenant: a handler's signature shows its auth, and
//! every device look-up after it is scoped to that tenant.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::{Basic, BasicAuthorization};
use wagate_core::domain::Tenant;

use crate::throttle;
use crate::{ApiError, ApiState};

/// A wagate credential (HTTP Basic); it belongs to one tenant.
#[derive(SecurityScheme)]
#[oai(rename = "basicAuth", ty = "basic", checker = "tenant_of")]
pub struct TenantAuth(pub Tenant);

async fn tenant_of(req: &Request, basic: Basic) -> poem::Result<Tenant> {
    let tenant = match req.extensions().get::<Checked>() {
        Some(checked)
            if checked.username == basic.username && checked.password == basic.password =>
        {
            checked.outcome.clone()?
        }
        _ => verify(req, &basic).await?,
    };
    crate::request_span::record_tenant(tenant.id);
    Ok(tenant)
}

/// The outcome of a credential checked before routing (by `crate::forward`, to learn the
/// request's tenant), kept with the request so the handler's own check neither hashes it again
/// nor counts a failure twice against the throttle.
#[derive(Clone)]
struct Checked {
    username: String,
    password: String,
    outcome: Result<Tenant, ApiError>,
}

/// The tenant of `req`'s Basic credential, checked as [`TenantAuth`] checks it and remembered
/// for it; `None` without a Basic credential.
pub(crate) async fn check_ahead(req: &mut Request) -> Option<Result<Tenant, ApiError>> {
    let basic = <Basic as BasicAuthorization>::from_request(req).ok()?;
    let outcome = verify(req, &basic).await;
    req.extensions_mut().insert(Checked {
        username: basic.username,
        password: basic.password,
        outcome: outcome.clone(),
    });
    Some(outcome)
}

/// The tenant whose credential `basic` is: recently verified credentials first, then the
/// throttle, then hashing.
pub(crate) async fn verify(req: &Request, basic: &Basic) -> Result<Tenant, ApiError> {
    let state = req
        .data::<Arc<ApiState>>()
        .ok_or_else(|| ApiError::internal("api state missing from request"))?;
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
            Err(ApiError::unauthorized())
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}
