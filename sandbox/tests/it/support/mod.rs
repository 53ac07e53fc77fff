//! Helpers shared by the sandbox's tests: a real whatsapp-rust client pointed at a sandbox, and
//! ways to wait for the events it emits.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::mpsc;
use wagate_sandbox::{Sandbox, SandboxConfig, ScaledRuntime};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::passkey::Assertion;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventHandler, PairSuccess};
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::store::traits::Backend;
use whatsapp_rust::{Client, pair_code::PairCodeOptions};

/// Long enough for any single step of a login on a loaded two-core machine.
pub const STEP: Duration = Duration::from_secs(60);

/// A sandbox on a free loopback port whose clients run `time_scale` times faster.
pub async fn sandbox(qr_refs: usize, time_scale: u32) -> Sandbox {
    Sandbox::start_with(SandboxConfig {
        qr_refs,
        time_scale,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

/// The client needs an HTTP client only for media and the version fetch; the tests use neither.
struct NoHttp;

#[whatsapp_rust::async_trait]
impl HttpClient for NoHttp {
    async fn execute(&self, request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        whatsapp_rust::anyhow::bail!(
            "the sandbox tests make no HTTP calls, got {} {}",
            request.method,
            request.url
        )
    }
}

struct Forward(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }
}

/// A real whatsapp-rust client running against a sandbox, with its events in order.
pub struct TestClient {
    /// The running client.
    pub client: Arc<Client>,
    /// Its store, kept to restart the same device.
    pub backend: Arc<dyn Backend>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    handle: Option<BotHandle>,
}

impl TestClient {
    /// A brand-new device (empty store) connecting to `sandbox`.
    pub async fn new(sandbox: &Sandbox) -> Self {
        Self::with_backend(sandbox, Arc::new(InMemoryBackend::new())).await
    }

    /// A client on an existing store, as after a process restart.
    pub async fn with_backend(sandbox: &Sandbox, backend: Arc<dyn Backend>) -> Self {
        Self::build(
            &sandbox.ws_url(),
            sandbox.config().time_scale,
            backend,
            false,
        )
        .await
    }

    /// A brand-new device that processes the history its phone sends (the gateway skips it).
    pub async fn keeping_history(sandbox: &Sandbox) -> Self {
        let backend = Arc::new(InMemoryBackend::new());
        Self::build(
            &sandbox.ws_url(),
            sandbox.config().time_scale,
            backend,
            true,
        )
        .await
    }

    /// A brand-new device connecting to the sandbox at `ws_url`, timers `time_scale` times faster.
    pub async fn at(ws_url: &str, time_scale: u32) -> Self {
        Self::build(ws_url, time_scale, Arc::new(InMemoryBackend::new()), false).await
    }

    async fn build(
        ws_url: &str,
        time_scale: u32,
        backend: Arc<dyn Backend>,
        history: bool,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut bot = Bot::builder()
            .with_backend_arc(Arc::clone(&backend))
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(ws_url))
            .with_http_client(NoHttp)
            .with_runtime(ScaledRuntime::new(time_scale))
            .with_version((2, 3000, 1_023_000_000))
            .with_push_name("wagate test")
            .with_event_handler(Forward(tx));
        if !history {
            bot = bot.skip_history_sync();
        }
        let bot = bot.build().await.expect("client builds");
        let client = bot.client();
        let handle = bot.spawn();
        Self {
            client,
            backend,
            events,
            handle: Some(handle),
        }
    }

    /// Waits for the first event `pick` accepts, skipping the others.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let found = tokio::time::timeout(STEP, async {
            while let Some(event) = self.events.recv().await {
                if let Some(t) = pick(&event) {
                    return Some(t);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(t)) => t,
            Ok(None) => panic!("the client stopped before {what}"),
            Err(_) => panic!("no {what} within {STEP:?}"),
        }
    }

    /// The next QR code the client shows, with the lifetime it gives it.
    pub async fn next_qr(&mut self) -> (String, Duration) {
        self.wait_for("QR code", |e| match e {
            Event::PairingQrCode(qr) => Some((qr.code.clone(), qr.timeout)),
            _ => None,
        })
        .await
    }

    /// Waits for the client's `PairSuccess`: the phone's signed identity verified.
    pub async fn paired(&mut self) -> PairSuccess {
        self.wait_for("PairSuccess", |e| match e {
            Event::PairSuccess(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Waits until the client is logged in and usable.
    pub async fn connected(&mut self) {
        self.wait_for("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await
    }

    /// Waits for the server's passkey request (a passkey account's phone is linking the client)
    /// and returns its WebAuthn request options JSON.
    pub async fn passkey_request(&mut self) -> String {
        self.wait_for("PairPasskeyRequest", |e| match e {
            Event::PairPasskeyRequest(r) => Some(r.request_options_json.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the verification code the client derived in a passkey link, as it shows it.
    pub async fn passkey_code(&mut self) -> String {
        self.wait_for("PairPasskeyConfirmation", |e| match e {
            Event::PairPasskeyConfirmation(c) => Some(c.code.clone()),
            _ => None,
        })
        .await
    }

    /// Plays the companion's side of a passkey link to `phone`'s account on `sandbox`: answers
    /// the server's request with the phone's passkey, then confirms; returns the verification
    /// code the client showed.
    pub async fn prove_passkey(&mut self, sandbox: &Sandbox, phone: &str) -> String {
        let options = self.passkey_request().await;
        let signed = sandbox
            .passkey_assertion(phone, &options)
            .expect("the phone holds the passkey");
        self.client
            .send_passkey_response(assertion(&signed))
            .await
            .expect("the server accepts the assertion");
        let code = self.passkey_code().await;
        self.client
            .send_passkey_confirmation()
            .await
            .expect("the server takes the pairing request");
        code
    }

    /// Asks for a pairing code for `phone` once the socket is up.
    pub async fn request_pair_code(&self, phone: &str) -> String {
        self.client
            .wait_for_socket(STEP)
            .await
            .expect("socket comes up");
        self.client
            .pair_with_code(PairCodeOptions {
                phone_number: phone.to_string(),
                ..Default::default()
            })
            .await
            .expect("the sandbox issues a pairing ref")
    }

    /// Stops the client, as a process exit would.
    pub async fn stop(mut self) -> Arc<dyn Backend> {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        Arc::clone(&self.backend)
    }
}

/// An assertion JSON in WhatsApp Web's shape as the client sends it: the JSON itself and the
/// credential id it names (`rawId`).
pub fn assertion(json: &str) -> Assertion {
    let parsed: serde_json::Value = serde_json::from_str(json).expect("the assertion is JSON");
    let raw_id = parsed["rawId"].as_str().expect("the assertion has a rawId");
    Assertion {
        assertion_json: json.as_bytes().to_vec(),
        credential_id: URL_SAFE_NO_PAD.decode(raw_id).expect("rawId is base64url"),
    }
}

/// Links a new client by QR and waits until it is connected.
pub async fn link_by_qr(sandbox: &Sandbox) -> (TestClient, wagate_sandbox::Linked) {
    let mut client = TestClient::new(sandbox).await;
    let (qr, _) = client.next_qr().await;
    let linked = sandbox
        .scan_qr(&qr)
        .await
        .expect("the phone links the client");
    client.connected().await;
    (client, linked)
}

/// Waits until `holds` is true, checking every few milliseconds for up to [`STEP`].
pub async fn eventually(what: &str, holds: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !holds() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST path` on the control API at `base` with the JSON `body`: the status and the JSON answer.
pub async fn control_post(base: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("control API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}
