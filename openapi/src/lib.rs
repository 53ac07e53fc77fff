//! wagate's HTTP API: the seed's login endpoints, device management, public QR images, the
//! envelope, Basic auth to a tenant, and the spec generated from this code.

mod auth;
mod devices;
mod envelope;
mod error;
mod events;
mod login;
mod plugins;
#[cfg(feature = "sandbox")]
mod sandbox;
mod statics;
mod webhooks;

use std::sync::Arc;

use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Request, Route};
use poem_openapi::{OpenApiService, Tags};
use wagate_core::engine::DeviceManager;
use wagate_core::plugins::PluginCounters;
use wagate_core::webhooks::Webhooks;

pub use auth::TenantAuth;
pub use envelope::ErrorEnvelope;
pub use error::ApiError;

/// What every request handler shares.
pub struct ApiState {
    /// The login engine and, through it, the store.
    pub manager: Arc<DeviceManager>,
    /// Webhook endpoints and their delivery log.
    pub webhooks: Webhooks,
    /// The loaded plugins' counters.
    pub plugins: PluginCounters,
    /// Base of the links the API hands out (e.g. `https://wa.example.com`); from the request's
    /// `Host` when unset.
    pub public_url: Option<String>,
}

impl ApiState {
    /// The base URL links are built on.
    pub fn public_base(&self, req: &Request) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let headers = req.headers();
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get("host"))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("http");
        format!("{scheme}://{host}")
    }
}

/// Groups of operations in the spec.
#[derive(Tags)]
pub enum ApiTags {
    /// Device slots.
    Devices,
    /// Linking a WhatsApp account.
    Login,
    /// Signed, retried event deliveries to the tenant's endpoints.
    Webhooks,
    /// Shared libraries the gateway hands every event to.
    Plugins,
    /// Liveness.
    Health,
}

type Apis = (
    devices::DevicesApi,
    login::LoginApi,
    webhooks::WebhooksApi,
    plugins::PluginsApi,
    statics::StaticsApi,
);

/// The OpenAPI service: every operation and the spec they make.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            devices::DevicesApi,
            login::LoginApi,
            webhooks::WebhooksApi,
            plugins::PluginsApi,
            statics::StaticsApi,
        ),
        "wagate",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Multi-tenant WhatsApp multi-device login gateway: create device slots, link them by QR \
         code or pairing code, and follow their login state. Every JSON answer is an envelope \
         `{code, message, results}`; errors carry a machine-readable `code`.",
    )
}

/// The spec as YAML, as committed in `openapi/openapi.yaml`.
pub fn spec_yaml() -> String {
    service().spec_yaml()
}

/// The whole HTTP application.
pub fn app(state: ApiState) -> impl Endpoint {
    serve(service(), state)
}

/// The application of a sandbox build: the API plus the simulated phone's endpoints, which
/// drive the sandbox whose control API is at `sandbox_control` (e.g. `http://127.0.0.1:3010`).
#[cfg(feature = "sandbox")]
pub fn sandbox_app(state: ApiState, sandbox_control: String) -> impl Endpoint {
    let api = OpenApiService::new(
        (
            devices::DevicesApi,
            login::LoginApi,
            webhooks::WebhooksApi,
            plugins::PluginsApi,
            statics::StaticsApi,
            sandbox::SandboxApi {
                control: sandbox_control,
                http: reqwest::Client::new(),
            },
        ),
        "wagate (sandbox)",
        env!("CARGO_PKG_VERSION"),
    );
    serve(api, state)
}

fn serve<T: poem_openapi::OpenApi + 'static>(
    api: OpenApiService<T, ()>,
    state: ApiState,
) -> impl Endpoint {
    let docs = api.swagger_ui();
    let json = api.spec_endpoint();
    let yaml = api.spec_endpoint_yaml();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", json)
        .at("/openapi.yaml", yaml)
        .catch_all_error(error::envelope_errors)
        .data(Arc::new(state))
        .with(Tracing)
}
