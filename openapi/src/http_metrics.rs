//! The HTTP side of the metrics: every answer counted under the path template of its route
//! (`wagate_http_requests_total`, `wagate_http_request_duration_seconds`), and `GET /metrics`
//! itself, a plain route outside the OpenAPI spec (its answer is not JSON).
//!
//! A `route` label is a template the gateway serves or `other`, and a `method` label a known
//! method or `other`: a client cannot make new series by inventing paths or methods, and no
//! concrete device id or link token (a credential) ever becomes a label.

use std::sync::Arc;
use std::time::Instant;

use poem::http::Method;
use poem::http::header::{ACCEPT, CONTENT_TYPE};
use poem::{Endpoint, IntoResponse, Request, Response};
use wagate_core::engine::DeviceManager;
use wagate_core::metrics::{Format, Metrics, ScrapeSources};
use wagate_core::plugins::PluginCounters;

use crate::link_page::ASSETS_PATH;
use crate::routes::Routes;

/// The label of a path no route serves.
const OTHER: &str = "other";

/// The routes served besides the spec's operations, named by their own path.
const PLAIN_ROUTES: [&str; 4] = ["/docs", "/openapi.json", "/openapi.yaml", "/metrics"];

/// The `route` label of `path`: the spec's template serving it, one of the plain routes, or
/// `other`.
pub(crate) fn route_label<'r>(routes: &'r Routes, path: &str) -> &'r str {
    if let Some(template) = routes.template(path) {
        return template;
    }
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if let Some(plain) = PLAIN_ROUTES.iter().find(|p| **p == trimmed) {
        return plain;
    }
    match trimmed.strip_prefix(ASSETS_PATH) {
        Some("/link.js") => "/statics/link/link.js",
        Some("/link.css") => "/statics/link/link.css",
        _ => OTHER,
    }
}

/// The `method` label of `method`: its name when it is one of HTTP's own, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => OTHER,
    }
}

/// Runs `endpoint` for `req` and counts its answer (an error by the status it becomes) under
/// the route serving the request's path.
pub(crate) async fn measured<E: Endpoint>(
    endpoint: E,
    req: Request,
    metrics: &Metrics,
    routes: &Routes,
) -> poem::Result<Response> {
    let started = Instant::now();
    let route = route_label(routes, req.uri().path()).to_string();
    let method = method_label(req.method());
    let answer = endpoint.call(req).await.map(IntoResponse::into_response);
    let status = match &answer {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    metrics.http_request(&route, method, status.as_u16(), started.elapsed());
    answer
}

/// `GET /metrics`: every metric, in OpenMetrics when the scraper asks for it (Prometheus
/// does), else in the Prometheus text format 0.0.4. No auth: serve it on a separate address
/// (`--metrics-listen`) to keep it off a public port.
pub fn metrics_endpoint(
    metrics: Metrics,
    manager: Arc<DeviceManager>,
    plugins: PluginCounters,
) -> impl Endpoint {
    let shared = Arc::new((metrics, manager, plugins));
    poem::get(poem::endpoint::make(move |req: Request| {
        let shared = Arc::clone(&shared);
        async move {
            let (metrics, manager, plugins) = &*shared;
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let sources = ScrapeSources { manager, plugins };
            let body = metrics.render(sources, format).await;
            Response::builder()
                .header(CONTENT_TYPE, format.content_type())
                .body(body)
        }
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn routes_are_labelled_by_template_and_unknown_paths_as_other() {
        let routes = Routes::from_spec(&json!({"paths": {
            "/devices/{device_id}/login": {"get": {}},
            "/link/{token}": {"get": {}},
        }}));
        assert_eq!(
            route_label(&routes, "/devices/d1/login"),
            "/devices/{device_id}/login"
        );
        assert_eq!(route_label(&routes, "/link/secret-token"), "/link/{token}");
        assert_eq!(route_label(&routes, "/metrics"), "/metrics");
        assert_eq!(route_label(&routes, "/docs/"), "/docs");
        assert_eq!(
            route_label(&routes, "/statics/link/link.js"),
            "/statics/link/link.js"
        );
        assert_eq!(route_label(&routes, "/no/such/device-42"), "other");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
