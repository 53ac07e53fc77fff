//! Helpers shared by the end-to-end tests: a gateway on a free port with its own database and
//! sandbox, an authenticated HTTP client, and a QR decoder.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use wagate::{Config, Database, Running};
use wagate_core::domain::{DeviceId, DeviceState, TenantId};
use wagate_core::engine::{DeviceManager, WhatsAppEndpoint};
use wagate_core::events::{EngineEventKind, NewEvent};
use wagate_core::plugins::PluginSpec;
use wagate_core::store::Store;
use wagate_core::webhooks::{RetrySchedule, WebhookConfig, trusted_roots_from_pem};
use wagate_openapi::AdminCredential;
use wagate_sandbox::{Sandbox, SandboxConfig};

// The store's test-database helpers are shared with wagate-core's own tests.
#[allow(dead_code)]
#[path = "../../../core/tests/support/mod.rs"]
pub mod pg;

#[cfg(test)]
pub mod browser;
#[cfg(all(test, feature = "sandbox"))]
pub mod cluster;
pub mod nats;
// The real binary exists only for the test target (the benchmarks share this module).
#[cfg(all(test, feature = "sandbox"))]
pub mod process;
#[cfg(test)]
pub mod prometheus;
pub mod receiver;
#[cfg(test)]
pub mod scrape;
#[cfg(test)]
pub mod sse;
pub mod tls;
#[cfg(test)]
pub mod tools;

/// How a test gateway runs.
#[derive(Clone)]
pub struct Options {
    /// Seconds a login waits for WhatsApp.
    pub login_timeout: Duration,
    /// Sandbox clients' timer speed-up.
    pub time_scale: u32,
    /// QR refs per series.
    pub qr_refs: usize,
    /// Accept webhook URLs on loopback (the tests' receivers are there).
    pub webhook_allow_private: bool,
    /// Delays between webhook attempts, e.g. `100ms,200ms`.
    pub webhook_retry_schedule: &'static str,
    /// PEM certificate authorities trusted for https receivers (`WAGATE_WEBHOOK_CA_FILE`).
    pub webhook_ca_pem: Option<&'static [u8]>,
    /// Plugins to load.
    pub plugins: Vec<PluginSpec>,
    /// The admin credential (`WAGATE_ADMIN_AUTH`); the admin API is off without it.
    pub admin: Option<(&'static str, &'static str)>,
    /// How long a client may take nothing before its connection is closed.
    pub write_stall: Duration,
    /// Serve `GET /metrics` on its own address (`--metrics-listen`), e.g. `127.0.0.1:0`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Count devices per tenant in the metrics (`--metrics-per-tenant`).
    pub metrics_per_tenant: bool,
}

impl Options {
    /// The defaults with the sandbox's clients at real time, for bounds on how soon things happen.
    pub fn real_time() -> Self {
        Self {
            time_scale: 1,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            login_timeout: Duration::from_secs(20),
            time_scale: 10,
            qr_refs: 6,
            webhook_allow_private: true,
            webhook_retry_schedule: "100ms,200ms,400ms,800ms",
            webhook_ca_pem: None,
            plugins: Vec::new(),
            admin: None,
            write_stall: wagate::DEFAULT_WRITE_STALL,
            metrics_listen: None,
            metrics_per_tenant: false,
        }
    }
}

/// A gateway serving on 127.0.0.1, on its own database, linked to its own sandbox: started by
/// [`wagate::start`], as the binary starts it.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The sandbox its devices talk to.
    pub sandbox: Sandbox,
    /// Its store, to look behind the API.
    pub store: Store,
    /// Its engine.
    pub manager: Arc<DeviceManager>,
    running: Running,
    database_url: String,
    options: Options,
}

impl Gateway {
    /// A gateway with default options.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A gateway with `options`.
    pub async fn start_with(options: Options) -> Self {
        let sandbox = Sandbox::start_with(SandboxConfig {
            qr_refs: options.qr_refs,
            time_scale: options.time_scale,
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox starts");
        let database_url = pg::fresh_database_url().await;
        Self::launch(sandbox, database_url, options).await
    }

    /// Shuts this gateway down (nothing is logged out) and starts a new one on the same
    /// database and sandbox, which restores the linked devices.
    pub async fn restart(self) -> Self {
        let Gateway {
            sandbox,
            running,
            database_url,
            options,
            ..
        } = self;
        running.stop().await.expect("the gateway stops");
        Self::launch(sandbox, database_url, options).await
    }

    async fn launch(sandbox: Sandbox, database_url: String, options: Options) -> Self {
        let running = wagate::start(Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            database: Database::Url(database_url.clone()),
            public_url: None,
            default_tenant: Vec::new(),
            admin: options
                .admin
                .and_then(|(user, pass)| AdminCredential::new([(user.into(), pass.into())])),
            login_timeout: options.login_timeout,
            write_stall: options.write_stall,
            webhooks: WebhookConfig {
                allow_private: options.webhook_allow_private,
                retry_schedule: RetrySchedule::parse(options.webhook_retry_schedule)
                    .expect("a retry schedule"),
                timeout: Duration::from_secs(2),
                trusted_roots: options
                    .webhook_ca_pem
                    .map(|pem| trusted_roots_from_pem(pem).expect("a CA bundle"))
                    .unwrap_or_default(),
                ..WebhookConfig::default()
            },
            plugins: options.plugins.clone(),
            whatsapp: WhatsAppEndpoint::Sandbox {
                url: sandbox.ws_url(),
                time_scale: options.time_scale,
            },
            metrics_listen: options.metrics_listen,
            metrics_per_tenant: options.metrics_per_tenant,
            node: wagate_core::engine::NodeConfig::default(),
            cluster_secret: None,
            #[cfg(feature = "sandbox")]
            sandbox_control: sandbox.http_url(),
        })
        .await
        .expect("the gateway starts");
        let manager = Arc::clone(running.manager());
        let gateway = Self {
            base: format!("http://{}", running.local_addr()),
            sandbox,
            store: manager.store().clone(),
            manager,
            running,
            database_url,
            options,
        };
        // `start` returns with the listener bound: requests wait for the server, never fail.
        gateway
    }

    /// The URL of its database.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A connection to its database, to look behind the store; it closes when dropped.
    pub async fn sql(&self) -> tokio_postgres::Client {
        pg::sql(&self.database_url).await
    }

    /// Moves the expiry of every link token of `tenant` a minute into the past, as time would;
    /// returns how many there were.
    pub async fn expire_link_tokens(&self, tenant: TenantId) -> u64 {
        self.sql()
            .await
            .execute(
                "UPDATE link_tokens SET expires_at = now() - interval '1 minute'
                 WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .expect("the link tokens' expiry moves")
    }

    /// The events recorded for `device` of `tenant`, oldest first, as `(type, data)`.
    pub async fn recorded_events(&self, tenant: TenantId, device: &str) -> Vec<(String, Value)> {
        self.recorded_envelopes(tenant, device)
            .await
            .into_iter()
            .map(|body| {
                (
                    body["type"].as_str().unwrap_or_default().to_string(),
                    body["data"].clone(),
                )
            })
            .collect()
    }

    /// The events recorded for `device` of `tenant` in the outbox, oldest first, each as the
    /// envelope consumers receive.
    pub async fn recorded_envelopes(&self, tenant: TenantId, device: &str) -> Vec<Value> {
        let client = self.sql().await;
        let rows = client
            .query(
                "SELECT body FROM events WHERE tenant_id = $1 AND device_id = $2 ORDER BY seq",
                &[&tenant.0, &device],
            )
            .await
            .expect("events");
        rows.iter()
            .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("JSON"))
            .collect()
    }

    /// Rows of whatsapp-rust key material stored for a device, over every key table.
    pub async fn key_rows(&self, tenant: TenantId, device: &str) -> i64 {
        self.key_tables_sum(tenant, device, "count(*)").await
    }

    /// Bytes of whatsapp-rust key material stored for a device, over every key table.
    pub async fn key_bytes(&self, tenant: TenantId, device: &str) -> i64 {
        self.key_tables_sum(
            tenant,
            device,
            "coalesce(sum(pg_column_size(t.*)), 0)::bigint",
        )
        .await
    }

    async fn key_tables_sum(&self, tenant: TenantId, device: &str, aggregate: &str) -> i64 {
        let id = DeviceId::parse(device).expect("device id");
        let Some(internal) = self
            .store
            .tenant(tenant)
            .device_internal_id(&id)
            .await
            .expect("lookup")
        else {
            return 0;
        };
        let client = self.sql().await;
        let tables = client
            .query(
                "SELECT table_name FROM information_schema.columns
                 WHERE column_name = 'device_internal_id' AND table_name LIKE 'wa\\_%'",
                &[],
            )
            .await
            .expect("tables");
        let mut total = 0;
        for table in tables {
            let name: String = table.get(0);
            let value: i64 = client
                .query_one(
                    &format!("SELECT {aggregate} FROM {name} t WHERE device_internal_id = $1"),
                    &[&internal],
                )
                .await
                .expect("aggregate")
                .get(0);
            total += value;
        }
        total
    }

    /// Rows stored for `tenant`, by table: every table with a `tenant_id` column, and the
    /// webhook deliveries of its endpoints. Tables without rows are left out.
    pub async fn tenant_rows(&self, tenant: TenantId) -> Vec<(String, i64)> {
        let client = self.sql().await;
        let tables = client
            .query(
                "SELECT table_name FROM information_schema.columns
                 WHERE column_name = 'tenant_id' AND table_schema = 'public'
                 ORDER BY table_name",
                &[],
            )
            .await
            .expect("tables");
        let mut counts: Vec<(String, String)> = tables
            .iter()
            .map(|row| {
                let name: String = row.get(0);
                let count = format!("SELECT count(*) FROM {name} WHERE tenant_id = $1");
                (name, count)
            })
            .collect();
        counts.push((
            "webhook_deliveries".into(),
            "SELECT count(*) FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE e.tenant_id = $1"
                .into(),
        ));
        let mut found = Vec::new();
        for (table, sql) in counts {
            let n: i64 = client
                .query_one(&sql, &[&tenant.0])
                .await
                .expect("count")
                .get(0);
            if n > 0 {
                found.push((table, n));
            }
        }
        found
    }

    /// Shows a QR code for `device` and lets the sandbox phone scan it; returns the account's
    /// JID and when the scan was made.
    pub async fn scan_login(&self, api: &Api, device: &str) -> (String, tokio::time::Instant) {
        let qr = showing_qr(api, device).await;
        let scanned_at = tokio::time::Instant::now();
        let linked = self.sandbox.scan_qr(&qr).await.expect("linked");
        (linked.jid, scanned_at)
    }

    /// A new tenant and an API client holding its credential.
    pub async fn tenant(&self, name: &str) -> Api {
        self.tenant_with_id(name).await.1
    }

    /// A new tenant, its id, and an API client holding its credential.
    pub async fn tenant_with_id(&self, name: &str) -> (TenantId, Api) {
        let (tenant, credential) = self.store.create_tenant(name).await.expect("tenant");
        (
            tenant.id,
            Api {
                base: self.base.clone(),
                auth: Some((credential.username, credential.secret)),
                http: reqwest::Client::new(),
            },
        )
    }

    /// An API client holding the admin credential the gateway was started with.
    pub fn admin(&self) -> Api {
        let (user, pass) = self
            .options
            .admin
            .expect("a gateway started with an admin credential");
        Api::new(&self.base, user, pass)
    }

    /// An API client without credentials.
    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            auth: None,
            http: reqwest::Client::new(),
        }
    }
}

/// An HTTP client for the gateway's API.
#[derive(Clone)]
pub struct Api {
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

/// A decoded answer: status, headers and JSON body.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

impl Answer {
    /// The envelope's `code`.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The seconds of its `Retry-After` header.
    pub fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {:?}", self.headers))
    }
}

impl Api {
    /// A client for the gateway at `base` with a credential.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    pub fn new(base: &str, user: &str, pass: &str) -> Api {
        Api {
            base: base.to_string(),
            auth: Some((user.to_string(), pass.to_string())),
            http: reqwest::Client::new(),
        }
    }

    /// The same client with other credentials.
    pub fn with_auth(&self, user: &str, pass: &str) -> Api {
        Api {
            auth: Some((user.to_string(), pass.to_string())),
            ..self.clone()
        }
    }

    /// A request to `path` with this client's credentials.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// Sends `request` and decodes the answer.
    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request).await
    }

    /// `method path` with a body of `content_type`, as a client that is not JSON-minded sends it.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> Answer {
        let request = self
            .request(method, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        Self::answer(request).await
    }

    /// Opens the event stream at `path`, resuming after `last_event_id` when given; the answer
    /// when it is not a stream.
    #[cfg(test)]
    pub async fn stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<sse::EventStream, Answer> {
        let mut request = self.request(reqwest::Method::GET, path);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("the gateway answers");
        if response.status() != StatusCode::OK {
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.expect("body");
            return Err(Answer {
                status,
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
        }
        Ok(sse::EventStream::new(response))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str) -> Answer {
        self.send(reqwest::Method::POST, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a device and returns its id.
    pub async fn create_device(&self, id: &str) -> String {
        let answer = self
            .post_json("/devices", serde_json::json!({ "device_id": id }))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["results"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// The same credentials against the gateway at `base` (after a restart).
    pub fn at(&self, base: &str) -> Api {
        Api {
            base: base.to_string(),
            ..self.clone()
        }
    }

    /// Polls the device's status until it is logged in.
    pub async fn wait_logged_in(&self, device: &str) {
        self.wait_state(device, "logged_in").await;
    }

    /// Polls the device until its state is `state`.
    pub async fn wait_state(&self, device: &str, state: &str) {
        eventually(&format!("device {device} reaching {state}"), || async {
            let seen =
                self.get(&format!("/devices/{device}")).await.body["results"]["state"].clone();
            if seen == state { Ok(()) } else { Err(seen) }
        })
        .await
    }
}

/// Runs `probe` every 50 ms until it answers `Ok`, for up to 30 s, and returns what it found;
/// panics saying `what` did not happen, with the last thing `probe` saw.
pub async fn eventually<T, Seen: std::fmt::Debug, Probe: Future<Output = Result<T, Seen>>>(
    what: &str,
    mut probe: impl FnMut() -> Probe,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} did not happen within 30 s; last seen: {seen:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `n` events of a device's state changes, as the engine would record them.
#[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
pub fn state_changes(n: usize) -> Vec<NewEvent> {
    let kind = EngineEventKind::StateChanged {
        from: DeviceState::Disconnected,
        to: DeviceState::Connecting,
    };
    (0..n).map(|_| NewEvent::from_kind(&kind)).collect()
}

/// Builds the workspace's plugin `package` (a cdylib) in its own target directory, so it can
/// run while `cargo test` holds the main one, and returns the library's path.
#[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
pub async fn plugin_library(package: &'static str) -> std::path::PathBuf {
    // One build at a time: the tests that need plugins share them.
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILDING.lock().await;
    tokio::task::spawn_blocking(move || {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target").join("plugin-builds");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--locked",
                "--quiet",
                "-p",
                package,
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building plugin {package} failed");
        target
            .join("debug")
            .join(format!("lib{}.so", package.replace('-', "_")))
    })
    .await
    .expect("the build finishes")
}

/// Fetches a URL without credentials: status and body bytes.
pub async fn fetch(url: &str) -> (StatusCode, Vec<u8>) {
    let response = reqwest::get(url).await.expect("fetch");
    let status = response.status();
    (status, response.bytes().await.expect("body").to_vec())
}

/// A page as a browser gets it: status, headers and the HTML.
pub struct Page {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub html: String,
}

impl Page {
    /// The value of header `name`, empty when there is none.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Opens a page without credentials, as a browser following a link does.
pub async fn fetch_page(url: &str) -> Page {
    let response = reqwest::get(url).await.expect("fetch");
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        html: response.text().await.expect("a text body"),
    }
}

/// The QR code `device` shows, read from the image its login call links to, as the phone's
/// camera would.
pub async fn showing_qr(api: &Api, device: &str) -> String {
    let login = api.get(&format!("/devices/{device}/login")).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let (_, png) = fetch(login.body["results"]["qr_link"].as_str().expect("qr_link")).await;
    decode_qr(&png)
}

/// Reads the QR code in a PNG image.
pub fn decode_qr(png_bytes: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes.to_vec()))
        .read_info()
        .expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.line_size / width;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        pixels[y * info.line_size + x * channels]
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code in the image");
    grids[0].decode().expect("the QR code decodes").1
}
