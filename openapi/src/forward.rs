//! "Any node answers": a request for a device whose session runs on another node of the
//! cluster is forwarded to that node's internal address, and that node's answer is passed back
//! as it comes: the same status, the headers that matter and the body, a stream event by event.
//!
//! Device-scoped requests are `/devices/{device_id}` and everything under it (the tenant from
//! the Basic credential, checked as `TenantAuth` checks it), a link page's calls
//! `/link/{token}/login`, `/link/{token}/login/code` and `/link/{token}/events` (tenant and
//! device from the token; the page itself is served by any node), and in sandbox builds
//! `/sandbox/devices/{device_id}/…`. A request whose credential, device id or token does not
//! check out is answered here, as a gateway alone answers it.
//!
//! Nodes authenticate what they forward with the shared `WAGATE_CLUSTER_SECRET`:
//! [`FORWARDED_BY`] (the sending node's id), [`FORWARDED_AT`] (Unix seconds) and [`SIGNATURE`],
//! the hex HMAC-SHA256 of `"{method}\n{path_and_query}\n{at}"`. A request with a valid signature
//! (sent within [`MAX_SKEW`] of this node's clock) is answered here and never forwarded again,
//! so a request makes one hop at most; one with a bad or stale signature, or arriving at a node
//! without the secret, is refused with 401 before anything runs. The signature only says "a node
//! sent this: answer it here"; it grants no tenant anything, as the forwarded credential is
//! checked again by the node that answers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use hmac::{Hmac, KeyInit, Mac};
use poem::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use wagate_core::domain::{DeviceId, TenantId};
use wagate_core::engine::{Peer, Placement};

use crate::request_span::{record_device, record_tenant};
use crate::{ApiError, ApiState, auth};

/// The id of the node that forwarded a request.
pub const FORWARDED_BY: &str = "wagate-forwarded-by";
/// When the node forwarded it, in Unix seconds.
pub const FORWARDED_AT: &str = "wagate-forwarded-at";
/// Hex HMAC-SHA256 with the cluster secret of `"{method}\n{path_and_query}\n{at}"`.
pub const SIGNATURE: &str = "wagate-forward-signature";

/// How far a forwarded request's time may be from this node's clock, either way.
const MAX_SKEW: Duration = Duration::from_secs(60);

/// How long a peer may take to accept the connection. There is no overall limit: logins wait
/// for WhatsApp and streams stay open for as long as their client reads them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers that belong to one connection, never passed on (RFC 9110, 7.6.1), besides those a
/// `Connection` header names. `Host` and `Content-Length` are the new request's or answer's own.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Where device-scoped requests are answered: here, or forwarded with one HTTP client shared
/// by every request to every peer.
pub(crate) struct Forwarder {
    state: Arc<ApiState>,
    http: reqwest::Client,
}

impl Forwarder {
    /// A forwarder for the API of `state`.
    pub(crate) fn new(state: Arc<ApiState>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Peers are on the internal network: no proxy from the environment, and a redirect
            // goes back to the client as the peer sent it.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with no custom root, proxy or identity builds");
        Self { state, http }
    }

    /// Answers `req` with `endpoint` here, or forwards it to the node that runs its device.
    pub(crate) async fn answer<E: Endpoint>(
        &self,
        endpoint: E,
        mut req: Request,
    ) -> poem::Result<Response> {
        if FORWARDING_HEADERS
            .iter()
            .any(|name| req.headers().contains_key(*name))
        {
            return match self.check_signature(&req) {
                Ok(from) => {
                    tracing::debug!(from, "answering a request another node forwarded");
                    here(&endpoint, req).await
                }
                Err(why) => {
                    tracing::warn!("refused a request that claims to be forwarded: {why}");
                    Ok(ApiError::unauthorized_because(why).into_response())
                }
            };
        }
        let Some(scope) = Scope::of(req.uri().path()) else {
            return here(&endpoint, req).await;
        };
        let Some((tenant, device)) = self.device_of(&mut req, scope).await else {
            return here(&endpoint, req).await;
        };
        record_tenant(tenant);
        record_device(&device);
        match self.state.manager.placement(tenant, &device).await {
            Ok(Placement::Local) => here(&endpoint, req).await,
            Ok(Placement::Remote(peer)) => Ok(self.forward(req, &device, &peer).await),
            Ok(Placement::Unreachable { node }) => Ok(ApiError::device_moving(format!(
                "device `{device}` runs on node {node}, which gave no address to reach it at: \
                 retry in a moment, and give every node its WAGATE_NODE_ADDRESS"
            ))
            .into_response()),
            Err(e) => Ok(ApiError::from(e).into_response()),
        }
    }

    /// The tenant and device `scope` names, when they check out; `None` leaves the request to
    /// the handlers here, which answer it as a gateway alone does (400, 401, 404, 410).
    async fn device_of(&self, req: &mut Request, scope: Scope) -> Option<(TenantId, DeviceId)> {
        match scope {
            Scope::Device(raw) => {
                let device = DeviceId::parse(&percent_decoded(&raw)?).ok()?;
                let tenant = auth::check_ahead(req).await?.ok()?;
                Some((tenant.id, device))
            }
            // A failed look-up is answered by the page's handler, which makes it too.
            Scope::LinkToken(token) => {
                let link = self.state.manager.store().link_token(&token).await.ok()??;
                Some((link.tenant, link.device))
            }
        }
    }

    /// The id of the node that forwarded `req`, if its signature verifies; why not, otherwise.
    fn check_signature(&self, req: &Request) -> Result<String, String> {
        let Some(secret) = self.state.cluster_secret.as_deref() else {
            return Err(
                "this node has no cluster secret and takes no forwarded request: set the \
                        same WAGATE_CLUSTER_SECRET on every node"
                    .into(),
            );
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (Some(from), Some(at), Some(signature)) = (
            header(FORWARDED_BY),
            header(FORWARDED_AT),
            header(SIGNATURE),
        ) else {
            return Err(format!(
                "a forwarded request carries {FORWARDED_BY}, {FORWARDED_AT} and \
                 {SIGNATURE}: send none of them, or all three"
            ));
        };
        let at: u64 = at
            .parse()
            .map_err(|_| format!("{FORWARDED_AT} is not Unix seconds: {at}"))?;
        if unix_now().abs_diff(at) > MAX_SKEW.as_secs() {
            return Err(format!(
                "the forwarded request was signed at {at}, more than {} s from this node's \
                 clock: keep the nodes' clocks in step",
                MAX_SKEW.as_secs()
            ));
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let expected = sign(secret, req.method().as_str(), target, at);
        if bool::from(
            expected
                .as_bytes()
                .ct_eq(signature.to_ascii_lowercase().as_bytes()),
        ) {
            Ok(from.to_string())
        } else {
            Err("the forwarding signature does not verify: set the same \
                 WAGATE_CLUSTER_SECRET on every node"
                .into())
        }
    }

    /// `req` sent to `peer`, which runs `device`, and its answer as this node's.
    async fn forward(&self, req: Request, device: &DeviceId, peer: &Peer) -> Response {
        let Some(secret) = self.state.cluster_secret.as_deref() else {
            return ApiError::device_moving(format!(
                "device `{device}` runs on node {}, and this node forwards no request without a \
                 cluster secret: set the same WAGATE_CLUSTER_SECRET on every node",
                peer.node
            ))
            .into_response();
        };
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = match reqwest::Url::parse(&format!("{}{path_and_query}", peer.address)) {
            Ok(url) => url,
            Err(e) => {
                return ApiError::internal(format!(
                    "node {}'s address `{}` makes no URL: {e}",
                    peer.node, peer.address
                ))
                .into_response();
            }
        };
        // Signed as the peer will read it: the path and query of the request line sent.
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let method = req.method().clone();
        let at = unix_now();
        let mut headers = request_headers(req.headers());
        headers.insert(
            FORWARDED_BY,
            HeaderValue::from(self.state.manager.node_id()),
        );
        headers.insert(FORWARDED_AT, HeaderValue::from(at));
        headers.insert(
            SIGNATURE,
            HeaderValue::try_from(sign(secret, method.as_str(), &target, at))
                .expect("hex digits make a header value"),
        );
        // The body was read within its limit before routing; it is in memory.
        let body = match req.into_body().into_bytes().await {
            Ok(body) => body,
            Err(e) => {
                return ApiError::validation(format!("the body could not be read: {e}"))
                    .into_response();
            }
        };
        let mut request = self.http.request(method, url).headers(headers);
        if !body.is_empty() {
            request = request.body(body);
        }
        tracing::debug!(
            node = peer.node,
            "forwarding to the node that runs the device"
        );
        match request.send().await {
            Ok(upstream) => self.passed_back(upstream, device, peer).await,
            Err(e) => {
                tracing::warn!(node = peer.node, address = %peer.address, "forwarding failed: {e}");
                unreachable_peer(device, peer)
            }
        }
    }

    /// The peer's answer as this node's: its status and headers, its body streamed as it
    /// comes, except that a JSON answer's links point at this node's public base (below).
    async fn passed_back(
        &self,
        upstream: reqwest::Response,
        device: &DeviceId,
        peer: &Peer,
    ) -> Response {
        let status = upstream.status();
        let headers = answer_headers(upstream.headers());
        let mine = self.state.public_base.url();
        let body = if is_json(&headers) && !peer.public_url.is_empty() && peer.public_url != mine {
            match upstream.bytes().await {
                Ok(body) => Body::from(rebased(body, &peer.public_url, mine)),
                Err(e) => {
                    tracing::warn!(node = peer.node, "the forwarded answer broke off: {e}");
                    return unreachable_peer(device, peer);
                }
            }
        } else {
            Body::from_bytes_stream(chunks(upstream))
        };
        let mut response = Response::builder().status(status).body(body);
        *response.headers_mut() = headers;
        response
    }
}

/// The forwarding headers: a request with any of them must verify as forwarded.
const FORWARDING_HEADERS: [&str; 3] = [FORWARDED_BY, FORWARDED_AT, SIGNATURE];

/// What a device-scoped path names, before it is checked.
#[derive(Debug, PartialEq, Eq)]
enum Scope {
    /// A device of the caller's tenant, by its id as the path has it.
    Device(String),
    /// A link page's token.
    LinkToken(String),
}

impl Scope {
    /// The scope of `path`, if it is device-scoped.
    fn of(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        match segments.as_slice() {
            ["devices", id, ..] if !id.is_empty() => Some(Self::Device(id.to_string())),
            ["link", token, "login"]
            | ["link", token, "login", "code"]
            | ["link", token, "events"] => Some(Self::LinkToken(token.to_string())),
            #[cfg(feature = "sandbox")]
            ["sandbox", "devices", id, ..] if !id.is_empty() => Some(Self::Device(id.to_string())),
            _ => None,
        }
    }
}

/// `endpoint`'s answer to `req`, here.
async fn here<E: Endpoint>(endpoint: &E, req: Request) -> poem::Result<Response> {
    endpoint.call(req).await.map(IntoResponse::into_response)
}

/// The answer when `peer` cannot be reached: the device is most likely moving (its node stops,
/// restarts or lost its lease), so the client retries.
fn unreachable_peer(device: &DeviceId, peer: &Peer) -> Response {
    ApiError::device_moving(format!(
        "device `{device}` runs on node {}, which did not answer: it may be stopping or \
         restarting, and its devices then move to the other nodes; retry in a moment",
        peer.node
    ))
    .into_response()
}

/// The hex HMAC-SHA256 of `"{method}\n{path_and_query}\n{at}"` keyed with `secret`.
fn sign(secret: &str, method: &str, path_and_query: &str, at: u64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{method}\n{path_and_query}\n{at}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `name` belongs to one connection (see [`HOP_BY_HOP`]), or is named by its
/// `Connection` header.
fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|named| named.trim().eq_ignore_ascii_case(name.as_str()))
}

/// The client's headers a peer gets: all but the connection's own, `Host`, `Content-Length`
/// (the new request's) and any forwarding header.
fn request_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| {
            !hop_by_hop(name, headers)
                && *name != header::HOST
                && *name != header::CONTENT_LENGTH
                && !FORWARDING_HEADERS.contains(&name.as_str())
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The peer's answer headers the client gets: all but the connection's own and
/// `Content-Length` (the body may be rebased, and a stream is sent in chunks).
fn answer_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name, headers) && *name != header::CONTENT_LENGTH)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `body` with its links moved from the peer's public base `from` to this node's `to`, so a
/// client sees the same base whichever node answers (a QR image or link page is served by any
/// node). A link is a JSON string that starts with the base and a `/`, so every `"{from}/` is
/// replaced: the JSON stays valid and nothing but such a string can match.
fn rebased(body: Bytes, from: &str, to: &str) -> Bytes {
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let from = format!("\"{from}/");
    if !text.contains(&from) {
        return body;
    }
    Bytes::from(text.replace(&from, &format!("\"{to}/")))
}

/// The body of `upstream`, chunk by chunk as the peer sends it (an event stream's events go
/// on at once); an error ends it, which breaks the client's connection off as the peer's did.
fn chunks(upstream: reqwest::Response) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(Some(upstream), |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(upstream))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    })
}

/// `segment` with its `%XX` escapes decoded, as the router decodes path parameters; `None` when
/// that is not UTF-8.
fn percent_decoded(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_scoped_paths_are_told_apart() {
        let device = |id: &str| Some(Scope::Device(id.into()));
        let token = |t: &str| Some(Scope::LinkToken(t.into()));
        assert_eq!(Scope::of("/devices/d1"), device("d1"));
        assert_eq!(Scope::of("/devices/d1/login/events"), device("d1"));
        assert_eq!(Scope::of("/devices"), None);
        assert_eq!(Scope::of("/devices/"), None);
        assert_eq!(Scope::of("/link/tok/login"), token("tok"));
        assert_eq!(Scope::of("/link/tok/login/code"), token("tok"));
        assert_eq!(Scope::of("/link/tok/events"), token("tok"));
        assert_eq!(Scope::of("/link/tok"), None, "the page is any node's");
        assert_eq!(Scope::of("/webhooks/x"), None);
        #[cfg(feature = "sandbox")]
        assert_eq!(Scope::of("/sandbox/devices/d1/scan"), device("d1"));
    }

    #[test]
    fn signatures_cover_method_path_and_time() {
        let signed = sign("secret", "GET", "/devices/d1/status?x=1", 1_700_000_000);
        assert_eq!(signed.len(), 64);
        assert!(signed.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            signed,
            sign("secret", "POST", "/devices/d1/status?x=1", 1_700_000_000)
        );
        assert_ne!(
            signed,
            sign("secret", "GET", "/devices/d2/status?x=1", 1_700_000_000)
        );
        assert_ne!(
            signed,
            sign("secret", "GET", "/devices/d1/status?x=1", 1_700_000_001)
        );
        assert_ne!(
            signed,
            sign("other", "GET", "/devices/d1/status?x=1", 1_700_000_000)
        );
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Basic eDp5"),
            ("accept", "text/event-stream"),
            ("last-event-id", "abc"),
            ("host", "node-a"),
            ("content-length", "0"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            (FORWARDED_BY, "3"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let sent = request_headers(&headers);
        let mut names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "last-event-id"]);
    }

    #[test]
    fn links_move_to_this_nodes_base_and_nothing_else_does() {
        let body = Bytes::from_static(
            br#"{"qr_link":"http://10.0.0.2:3000/statics/images/qrcode/x.png","note":"http://10.0.0.2:3000 says hi","base":"http://10.0.0.2:30001/y"}"#,
        );
        let moved = rebased(body, "http://10.0.0.2:3000", "https://wa.example.com");
        assert_eq!(
            moved,
            Bytes::from_static(
                br#"{"qr_link":"https://wa.example.com/statics/images/qrcode/x.png","note":"http://10.0.0.2:3000 says hi","base":"http://10.0.0.2:30001/y"}"#
            )
        );
    }

    #[test]
    fn path_segments_decode_as_the_router_decodes_them() {
        assert_eq!(percent_decoded("me%40home").as_deref(), Some("me@home"));
        assert_eq!(percent_decoded("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decoded("50%").as_deref(), Some("50%"));
        assert_eq!(percent_decoded("%+1x").as_deref(), Some("%+1x"));
        assert_eq!(percent_decoded("%ff"), None);
    }
}
