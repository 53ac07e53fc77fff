//! One span per request: method and path at once, the tenant once its credential checked out,
//! the device once its path parameter parsed. Every log line of the request carries them, the
//! engine's included when it logs on the caller's task. Each answer is logged once: at INFO, at
//! WARN for a server error, and at DEBUG whatever its status for the paths that probes and
//! scrapers ask for every few seconds ([`PROBE_PATHS`]).

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument as _;
use tracing::field::{Empty, display};
use wagate_core::domain::{DeviceId, TenantId};

/// Liveness, readiness and metrics: asked for by machines every few seconds, so their answers
/// (a 503 from `/ready` while the gateway starts included) are logged at DEBUG only.
const PROBE_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Runs `endpoint` for `req` inside the request's span, logging the answer's status and time.
pub(crate) async fn in_span<E: Endpoint>(endpoint: E, req: Request) -> poem::Result<Response> {
    let probe = PROBE_PATHS.contains(&req.uri().path());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        // A link page's path holds its token, a credential: it is logged without.
        path = %crate::link_page::loggable_path(req.uri().path()),
        tenant = Empty,
        device = Empty,
    );
    async move {
        let started = Instant::now();
        let answer = endpoint.call(req).await.map(IntoResponse::into_response);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &answer {
            Ok(response) if probe => {
                tracing::debug!(status = response.status().as_u16(), elapsed_ms, "answered")
            }
            Err(e) if probe => {
                tracing::debug!(status = e.status().as_u16(), elapsed_ms, "failed: {e}")
            }
            Ok(response) if response.status().is_server_error() => {
                tracing::warn!(status = response.status().as_u16(), elapsed_ms, "answered")
            }
            Ok(response) => {
                tracing::info!(status = response.status().as_u16(), elapsed_ms, "answered")
            }
            Err(e) => tracing::warn!(status = e.status().as_u16(), elapsed_ms, "failed: {e}"),
        }
        answer
    }
    .instrument(span)
    .await
}

/// Names the request's tenant in its span.
pub(crate) fn record_tenant(tenant: TenantId) {
    tracing::Span::current().record("tenant", display(tenant));
}

/// Names the request's device in its span.
pub(crate) fn record_device(device: &DeviceId) {
    tracing::Span::current().record("device", display(device));
}
