//! wagate's HTTP API: the QR and pairing-code login endpoints, device management, public QR images, the
//! envelope, Basic auth to a tenant, the operator's admin API, and the spec generated from this
//! code.

#![deny(unsafe_code)]

mod admin;
mod auth;
mod body;
mod cluster;
mod device_path;
mod devices;
mod envelope;
mod error;
mod events;
mod forward;
mod http_metrics;
mod link_page;
mod link_tokens;
mod links;
mod login;
mod plugins;
mod readiness;
mod request_span;
mod routes;
#[cfg(feature = "sandbox")]
mod sandbox;
mod schema_as;
mod spec;
mod statics;
mod streams;
mod text;
mod throttle;
mod timestamp;
mod webhooks;

use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use wagate_core::engine::DeviceManager;
use wagate_core::metrics::Metrics;
use wagate_core::plugins::PluginCounters;
use wagate_core::webhooks::{DispatcherProbe, Webhooks};

pub use admin::{AdminAuth, AdminCredential};
pub use auth::TenantAuth;
pub use envelope::ErrorEnvelope;
pub use error::{ApiError, ErrorCode};
pub use http_metrics::metrics_endpoint;
pub use links::PublicBase;
use routes::Routes;

/// What every request handler shares.
pub struct ApiState {
    /// The login engine and, through it, the store.
    pub manager: Arc<DeviceManager>,
    /// Webhook endpoints and their delivery log.
    pub webhooks: Webhooks,
    /// The loaded plugins' counters.
    pub plugins: PluginCounters,
    /// The operator's credential for `/admin/…` (`WAGATE_ADMIN_AUTH`); the admin API is off
    /// (every `/admin/…` path a 404) without one.
    pub admin: Option<AdminCredential>,
    /// The base of the links handed out besides QR images' (link pages); the engine's
    /// `QrLinks` is the same base.
    pub public_base: PublicBase,
    /// Where every answer is counted, and what `GET /metrics` shows.
    pub metrics: Metrics,
    /// Whether this app serves `GET /metrics`; off when it is served on its own address
    /// (`--metrics-listen`), and then the path is a 404 here.
    pub metrics_on_api: bool,
    /// Whether webhook delivery runs, for `GET /ready`.
    pub dispatcher: DispatcherProbe,
    /// The secret nodes authenticate forwarded requests with (`WAGATE_CLUSTER_SECRET`); this
    /// node neither forwards nor accepts forwarded requests without it.
    pub cluster_secret: Option<String>,
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
    /// Liveness (`/health`) and readiness (`/ready`).
    Health,
    /// Tenants and their credentials, for the operator: its own credential
    /// (`WAGATE_ADMIN_AUTH`), off without it.
    Admin,
    /// The nodes serving the gateway from one database, for the operator.
    Cluster,
}

type Apis = (
    devices::DevicesApi,
    login::LoginApi,
    webhooks::WebhooksApi,
    plugins::PluginsApi,
    statics::StaticsApi,
    admin::AdminApi,
    streams::StreamsApi,
    link_tokens::LinkTokensApi,
    link_page::LinkPageApi,
    cluster::ClusterApi,
);

/// The error answers of every operation, module by module.
const ERRORS: [&[spec::OperationErrors]; 10] = [
    devices::ERRORS,
    login::ERRORS,
    webhooks::ERRORS,
    plugins::ERRORS,
    statics::ERRORS,
    admin::ERRORS,
    streams::ERRORS,
    link_tokens::ERRORS,
    link_page::ERRORS,
    cluster::ERRORS,
];

fn apis() -> Apis {
    (
        devices::DevicesApi,
        login::LoginApi,
        webhooks::WebhooksApi,
        plugins::PluginsApi,
        statics::StaticsApi,
        admin::AdminApi,
        streams::StreamsApi,
        link_tokens::LinkTokensApi,
        link_page::LinkPageApi,
        cluster::ClusterApi,
    )
}

/// The OpenAPI service of `api`, titled and described the same in every build, so a client
/// generated from either build's spec is the same package.
fn described<T: poem_openapi::OpenApi>(api: T) -> OpenApiService<T, ()> {
    OpenApiService::new(api, "wagate", env!("CARGO_PKG_VERSION")).description(
        "Multi-tenant WhatsApp multi-device login gateway: create device slots, link them by QR \
         code or pairing code, and follow their login state. Every JSON answer is an envelope \
         `{code, message, results}`; errors carry a machine-readable `code`. Fields without a \
         value are sent as `null`.",
    )
}

/// The OpenAPI service: every operation.
pub fn service() -> OpenApiService<Apis, ()> {
    described(apis())
}

/// The spec as YAML, as committed in `openapi/openapi.yaml`.
pub fn spec_yaml() -> String {
    Published::of(&service(), &ERRORS).yaml
}

/// The same spec as JSON, as served at `/openapi.json`.
pub fn spec_json() -> String {
    Published::of(&service(), &ERRORS).json
}

/// What a build publishes about itself: the refined spec in both forms, the Swagger UI page
/// showing it, and its routes.
struct Published {
    json: String,
    yaml: String,
    docs: String,
    routes: Routes,
}

impl Published {
    fn of<T: poem_openapi::OpenApi>(
        api: &OpenApiService<T, ()>,
        errors: &[&[spec::OperationErrors]],
    ) -> Self {
        let raw = api.spec();
        let spec = spec::refine(&raw, errors);
        let json = serde_json::to_string_pretty(&spec).expect("a JSON value serializes");
        // poem-openapi's page embeds its own document verbatim; it is swapped for ours, so
        // Swagger UI (served offline from poem-openapi's bundle) shows what we publish.
        let docs = api.swagger_ui_html().replacen(&raw, &json, 1);
        Self {
            yaml: serde_yaml::to_string(&spec).expect("a JSON value is YAML"),
            routes: Routes::from_spec(&spec),
            json,
            docs,
        }
    }
}

/// The whole HTTP application.
pub fn app(state: ApiState) -> impl Endpoint {
    let api = service();
    let published = Published::of(&api, &ERRORS);
    serve(api, published, state)
}

/// The sandbox build's API: every operation plus the simulated phone's, published alike.
#[cfg(feature = "sandbox")]
fn sandbox_service(
    sandbox_control: String,
) -> (OpenApiService<(Apis, sandbox::SandboxApi), ()>, Published) {
    let api = described((
        apis(),
        sandbox::SandboxApi {
            control: sandbox_control,
            http: reqwest::Client::new(),
        },
    ));
    let [d, l, w, p, s, a, t, k, g, c] = ERRORS;
    let published = Published::of(&api, &[d, l, w, p, s, a, t, k, g, c, sandbox::ERRORS]);
    (api, published)
}

/// The application of a sandbox build: the API plus the simulated phone's endpoints, which
/// drive the sandbox whose control API is at `sandbox_control` (e.g. `http://127.0.0.1:3010`).
#[cfg(feature = "sandbox")]
pub fn sandbox_app(state: ApiState, sandbox_control: String) -> impl Endpoint {
    let (api, published) = sandbox_service(sandbox_control);
    serve(api, published, state)
}

fn serve<T: poem_openapi::OpenApi + 'static>(
    api: OpenApiService<T, ()>,
    published: Published,
    state: ApiState,
) -> impl Endpoint {
    let Published {
        json,
        yaml,
        docs,
        routes,
    } = published;
    let routes = Arc::new(routes);
    let state = Arc::new(state);
    let forwarder = Arc::new(forward::Forwarder::new(Arc::clone(&state)));
    let admin_on = state.admin.is_some();
    let metrics = state.metrics.clone();
    let named = Arc::clone(&routes);
    let docs = Route::new().at("/", make_sync(move |_| Html(docs.clone())));
    let mut app = Route::new();
    if state.metrics_on_api {
        let scrape = metrics_endpoint(
            metrics.clone(),
            Arc::clone(&state.manager),
            state.plugins.clone(),
        );
        app = app.at("/metrics", scrape);
    }
    app.nest("/", api)
        .nest("/docs", docs)
        .nest(link_page::ASSETS_PATH, link_page::assets())
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(json.clone())
            }),
        )
        .at(
            "/openapi.yaml",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/x-yaml")
                    .body(yaml.clone())
            }),
        )
        // Inside the body's limit and the span and metrics: a forwarded request is read once
        // here, and counted and logged once on each node it passes.
        .around(move |endpoint, req| {
            let forwarder = Arc::clone(&forwarder);
            async move { forwarder.answer(endpoint, req).await }
        })
        .around(move |endpoint, mut req| {
            let routes = Arc::clone(&routes);
            async move {
                let path = req.uri().path().to_string();
                // Without an admin credential nothing under /admin is served, whatever the
                // method, body or credentials.
                if !admin_on && admin::is_admin_path(&path) {
                    return Ok(ApiError::admin_off().into_response());
                }
                // Bodies are read here, within the limit, whatever their Content-Length says.
                match body::read_within_limit(req.take_body()).await {
                    Ok(bytes) => req.set_body(bytes),
                    Err(body::Refused::TooLarge) => {
                        return Ok(ApiError::payload_too_large().into_response());
                    }
                    Err(body::Refused::Unreadable(e)) => {
                        let unread =
                            ApiError::validation(format!("the body could not be read: {e}"));
                        return Ok(unread.into_response());
                    }
                }
                Ok(match endpoint.call(req).await {
                    Ok(response) => response,
                    Err(e) => error::envelope_errors(e, &path, &routes),
                })
            }
        })
        .data(state)
        .data(Arc::new(throttle::AuthThrottle::default()))
        .around(request_span::in_span)
        // Outermost, so every answer counts, the ones refused before routing included.
        .around(move |endpoint, req| {
            let (metrics, named) = (metrics.clone(), Arc::clone(&named));
            async move { http_metrics::measured(endpoint, req, &metrics, &named).await }
        })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn parsed(json: &str) -> Value {
        serde_json::from_str(json).expect("the spec is JSON")
    }

    #[test]
    fn the_published_spec_is_built_and_shown_in_swagger_ui() {
        let published = Published::of(&service(), &ERRORS);
        let spec = parsed(&published.json);
        assert_eq!(spec["info"]["title"], "wagate");
        assert!(
            published.docs.contains(&published.json),
            "Swagger UI shows our spec"
        );
    }

    #[cfg(feature = "sandbox")]
    #[test]
    fn the_sandbox_build_publishes_the_same_api_plus_its_phone_under_its_own_tag() {
        let sandbox = parsed(&sandbox_service(String::new()).1.json);
        let plain = parsed(&spec_json());
        assert_eq!(sandbox["info"], plain["info"]);
        let paths = sandbox["paths"].as_object().unwrap();
        for (path, item) in paths {
            let plain_item = &plain["paths"][path];
            for (method, operation) in item.as_object().unwrap() {
                if path.starts_with("/sandbox/") {
                    assert_eq!(operation["tags"], serde_json::json!(["Sandbox"]), "{path}");
                } else {
                    assert_eq!(operation, &plain_item[method], "{method} {path}");
                }
            }
        }
    }
}
