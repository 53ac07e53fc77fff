//! What one node does of the cluster's forwarding and `GET /cluster`: a request that claims to
//! be forwarded is answered only with a valid signature (and then here), and the cluster's nodes
//! are listed for the operator, or for the `default` tenant while the admin API is off. Requests
//! that actually hop between nodes are `cluster`'s, with real processes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Sha256;
use wagate::{Config, Database, Running};
use wagate_core::engine::{NodeConfig, WhatsAppEndpoint};
use wagate_core::webhooks::WebhookConfig;
use wagate_openapi::AdminCredential;
use wagate_sandbox::{Sandbox, SandboxConfig};

use crate::support::{Answer, Api, Gateway, Options, pg};

/// The cluster secret of these tests' gateways.
const SECRET: &str = "a-cluster-secret-for-the-tests";
/// The `default` tenant's credential (`WAGATE_BASIC_AUTH`) of these tests' gateways.
const DEFAULT: (&str, &str) = ("default-user", "default-password-1234");
/// The admin credential of these tests' gateways.
const ADMIN: (&str, &str) = ("operator", "correct-horse-battery-staple");

/// One node started as `wagate serve` starts it, with what `Gateway` does not set: a cluster
/// secret and the `default` tenant.
struct Node {
    base: String,
    running: Running,
    _sandbox: Sandbox,
}

impl Node {
    async fn start(secret: Option<&str>, admin: Option<(&str, &str)>) -> Self {
        let sandbox = Sandbox::start_with(SandboxConfig::default())
            .await
            .expect("sandbox starts");
        let running = wagate::start(Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            database: Database::Url(pg::fresh_database_url().await),
            public_url: None,
            default_tenant: vec![(DEFAULT.0.into(), DEFAULT.1.into())],
            admin: admin
                .and_then(|(user, pass)| AdminCredential::new([(user.into(), pass.into())])),
            login_timeout: Duration::from_secs(20),
            write_stall: wagate::DEFAULT_WRITE_STALL,
            webhooks: WebhookConfig::default(),
            plugins: Vec::new(),
            whatsapp: WhatsAppEndpoint::Sandbox {
                url: sandbox.ws_url(),
                time_scale: 10,
            },
            metrics_listen: None,
            metrics_per_tenant: false,
            node: NodeConfig::default(),
            cluster_secret: secret.map(str::to_string),
            #[cfg(feature = "sandbox")]
            sandbox_control: sandbox.http_url(),
        })
        .await
        .expect("the gateway starts");
        Self {
            base: format!("http://{}", running.local_addr()),
            running,
            _sandbox: sandbox,
        }
    }

    /// A new tenant's client.
    async fn tenant(&self, name: &str) -> Api {
        let (_, credential) = self
            .running
            .manager()
            .store()
            .create_tenant(name)
            .await
            .expect("tenant");
        Api::new(&self.base, &credential.username, &credential.secret)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The forwarding signature as the README's scheme defines it: hex HMAC-SHA256 of
/// `"{method}\n{path_and_query}\n{at}"` keyed with the cluster secret.
fn signature(secret: &str, method: &Method, path: &str, at: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{method}\n{path}\n{at}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `method path` with `credential` and the forwarding headers of node 99, signed at `at` with
/// `signature`.
async fn as_forwarded(
    base: &str,
    credential: (&str, &str),
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    at: u64,
    signature: &str,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .basic_auth(credential.0, Some(credential.1))
        .header("Wagate-Forwarded-By", "99")
        .header("Wagate-Forwarded-At", at.to_string())
        .header("Wagate-Forward-Signature", signature);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or_default(),
    }
}

fn assert_refused(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.code(), "AUTHENTICATION_ERROR", "{what}");
    assert!(
        answer.headers.contains_key("www-authenticate"),
        "{what}: {:?}",
        answer.headers
    );
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("WAGATE_CLUSTER_SECRET") || message.contains("clock"),
        "{what}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_with_a_bad_or_stale_signature_is_refused_and_does_nothing() {
    let node = Node::start(Some(SECRET), None).await;
    let default_tenant = Api::new(&node.base, DEFAULT.0, DEFAULT.1);
    default_tenant.create_device("kept").await;
    let delete = Method::DELETE;
    let path = "/devices/kept";
    let now = unix_now();

    let wrong_secret = signature("not-the-cluster-secret", &delete, path, now);
    let stale = signature(SECRET, &delete, path, now - 120);
    let other_path = signature(SECRET, &delete, "/devices/other", now);
    for (what, at, signed) in [
        ("another secret", now, wrong_secret.as_str()),
        ("signed two minutes ago", now - 120, stale.as_str()),
        ("signed for another path", now, other_path.as_str()),
        ("not hex", now, "zz"),
    ] {
        let answer =
            as_forwarded(&node.base, DEFAULT, delete.clone(), path, None, at, signed).await;
        assert_refused(&answer, what);
    }
    assert_eq!(
        default_tenant.get(path).await.status,
        StatusCode::OK,
        "the device is still there"
    );

    let create = signature("not-the-cluster-secret", &Method::POST, "/devices", now);
    let answer = as_forwarded(
        &node.base,
        DEFAULT,
        Method::POST,
        "/devices",
        Some(json!({ "device_id": "made" })),
        now,
        &create,
    )
    .await;
    assert_refused(&answer, "a creation");
    let listed = default_tenant.get("/devices").await.body["results"].clone();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "no device was made: {listed}"
    );

    // The same request correctly signed is answered here, as any request for a local device.
    let signed = signature(SECRET, &Method::POST, "/devices", now);
    let answer = as_forwarded(
        &node.base,
        DEFAULT,
        Method::POST,
        "/devices",
        Some(json!({ "device_id": "made" })),
        now,
        &signed,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        default_tenant.get("/devices/made").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_cluster_secret_takes_no_forwarded_request() {
    let node = Node::start(None, None).await;
    let now = unix_now();
    // Signed with what a secret might be: without one this node cannot tell, so it refuses.
    let signed = signature(SECRET, &Method::POST, "/devices", now);
    let answer = as_forwarded(
        &node.base,
        DEFAULT,
        Method::POST,
        "/devices",
        Some(json!({ "device_id": "made" })),
        now,
        &signed,
    )
    .await;
    assert_refused(&answer, "no secret here");
    let default_tenant = Api::new(&node.base, DEFAULT.0, DEFAULT.1);
    assert_eq!(
        default_tenant.get("/devices").await.body["results"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_this_node_alive_with_its_devices() {
    let gateway = Gateway::start_with(Options {
        admin: Some(ADMIN),
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    api.create_device("linked").await;
    gateway.scan_login(&api, "linked").await;
    api.wait_logged_in("linked").await;

    let answer = gateway.admin().get("/cluster").await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.code(), "SUCCESS");
    let results = &answer.body["results"];
    let me = gateway.manager.node_id();
    assert_eq!(results["node_id"], me);
    let nodes = results["nodes"].as_array().expect("a list of nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node = &nodes[0];
    assert_eq!(node["id"], me);
    assert_eq!(node["alive"], true);
    assert_eq!(node["draining"], false);
    assert_eq!(node["devices"], 1, "the linked device runs here: {node}");
    assert_eq!(node["public_url"], gateway.base.as_str());
    for field in ["address", "started_at", "heartbeat_at"] {
        assert!(node.get(field).is_some(), "{field} is sent: {node}");
    }

    let anonymous = gateway.anonymous().get("/cluster").await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.body
    );
    assert_eq!(anonymous.code(), "AUTHENTICATION_ERROR");
    assert!(anonymous.headers.contains_key("www-authenticate"));
    let tenant = api.get("/cluster").await;
    assert_eq!(
        tenant.status,
        StatusCode::UNAUTHORIZED,
        "a tenant's credential while the admin API is on: {}",
        tenant.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_admin_api_off_the_default_tenant_sees_the_cluster() {
    let node = Node::start(None, None).await;
    let default_tenant = Api::new(&node.base, DEFAULT.0, DEFAULT.1);

    let answer = default_tenant.get("/cluster").await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let me = node.running.manager().node_id();
    assert_eq!(answer.body["results"]["node_id"], me);
    assert_eq!(answer.body["results"]["nodes"][0]["id"], me);
    assert_eq!(answer.body["results"]["nodes"][0]["alive"], true);

    let other = node.tenant("acme").await.get("/cluster").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED, "{}", other.body);
    let message = other.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("`default` tenant"), "{message}");
    let wrong = default_tenant
        .with_auth(DEFAULT.0, "not-the-password")
        .get("/cluster")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);

    // With the admin API on, the default tenant's credential is refused here.
    let admin_on = Node::start(None, Some(ADMIN)).await;
    let refused = Api::new(&admin_on.base, DEFAULT.0, DEFAULT.1)
        .get("/cluster")
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let admin = Api::new(&admin_on.base, ADMIN.0, ADMIN.1)
        .get("/cluster")
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
}
