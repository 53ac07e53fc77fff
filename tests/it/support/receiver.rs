//! A webhook receiver for the tests: a real HTTP server on loopback that records every request
//! raw and answers with scripted statuses; over plain HTTP/1.1, or over TLS (`tls.rs`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::{HeaderMap, StatusCode, Version};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Response, Route, handler};
use serde_json::{Value, json};

use super::Api;
use super::tls::{HandshakesFailed, TlsAcceptor};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    /// The HTTP version it came over.
    pub version: Version,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, byte for byte.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The body as JSON.
    pub fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// How long after `since` it arrived; panics if it arrived first.
    pub fn arrived_after(&self, since: Instant) -> Duration {
        assert!(self.at >= since, "it arrived before the moment it follows");
        self.at.duration_since(since)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    delay: Mutex<Duration>,
    /// Sent as `Location` with every 3xx answer.
    location: Mutex<Option<String>>,
    arrived: Notify,
}

/// A receiver at `url`; it stops when dropped.
pub struct Receiver {
    /// Where to point a webhook.
    pub url: String,
    shared: Arc<Shared>,
    /// Set for an HTTPS receiver.
    handshakes_failed: Option<HandshakesFailed>,
    server: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[handler]
async fn hook(
    shared: Data<&Arc<Shared>>,
    version: Version,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Response {
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = shared.script.lock().unwrap().pop_front().unwrap_or(200);
    shared.received.lock().unwrap().push(Received {
        version,
        headers: headers.clone(),
        body,
        at: Instant::now(),
    });
    shared.arrived.notify_waiters();
    let mut response = Response::builder().status(StatusCode::from_u16(status).expect("a status"));
    if let Some(location) = shared
        .location
        .lock()
        .unwrap()
        .clone()
        .filter(|_| (300..400).contains(&status))
    {
        response = response.header("location", location);
    }
    response.finish()
}

impl Receiver {
    /// A receiver on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A receiver on `addr` (to come back on the port of one that was stopped).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let (acceptor, addr) = bind(addr).await;
        let shared = Arc::new(Shared::default());
        let server = serve(acceptor, &shared);
        Self {
            url: format!("http://{addr}/hook"),
            shared,
            handshakes_failed: None,
            server,
        }
    }

    /// A receiver on a free loopback port that speaks only TLS, with a certificate signed by
    /// [`super::tls::TEST_CA_PEM`], and offers HTTP/2 and HTTP/1.1; its URL is `https://127.0.0.1:PORT/hook`.
    pub async fn start_https() -> Self {
        let (tcp, addr) = bind("127.0.0.1:0".parse().unwrap()).await;
        let shared = Arc::new(Shared::default());
        let acceptor = TlsAcceptor::new(tcp);
        let handshakes_failed = Some(acceptor.handshakes_failed());
        let server = serve(acceptor, &shared);
        Self {
            url: format!("https://{addr}/hook"),
            shared,
            handshakes_failed,
            server,
        }
    }

    /// How many TLS handshakes failed so far; panics for a plain HTTP receiver.
    pub fn handshakes_failed(&self) -> usize {
        self.handshakes_failed
            .as_ref()
            .expect("an HTTPS receiver")
            .get()
    }

    /// A loopback URL nothing listens on yet, and its address.
    pub fn vacant() -> (String, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("an address");
        (format!("http://{addr}/hook"), addr)
    }

    /// Answers the next requests with `statuses`, then 200 again.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.shared.script.lock().unwrap().extend(statuses);
    }

    /// Points every 3xx answer at `url`.
    pub fn redirect_to(&self, url: &str) {
        *self.shared.location.lock().unwrap() = Some(url.to_string());
    }

    /// Makes every answer wait `delay`.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    pub fn slow_down(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many requests arrived so far.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Waits up to `within` until `n` requests arrived; returns when the `n`-th did.
    #[cfg_attr(not(feature = "sandbox"), allow(dead_code))]
    pub async fn wait_count(&self, n: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            if let Some(at) = self
                .shared
                .received
                .lock()
                .unwrap()
                .get(n - 1)
                .map(|r| r.at)
            {
                return at;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{n} requests did not arrive within {within:?}; {} did",
                    self.count()
                );
            }
        }
    }

    /// Waits up to `within` until `done` holds for the requests so far; returns them.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.received();
                assert!(
                    done(&received),
                    "the receiver did not get what was expected within {within:?}; it got {} requests: {:?}",
                    received.len(),
                    received
                        .iter()
                        .map(|r| r.event()["type"].clone())
                        .collect::<Vec<_>>()
                );
                return received;
            }
        }
    }

    /// Waits until an event of `event_type` arrived; returns the first.
    pub async fn wait_for(&self, event_type: &str, within: Duration) -> Received {
        let received = self
            .wait_until(within, |r| {
                r.iter().any(|x| x.event()["type"] == event_type)
            })
            .await;
        received
            .into_iter()
            .find(|x| x.event()["type"] == event_type)
            .expect("present")
    }
}

async fn bind(addr: SocketAddr) -> (TcpAcceptor, SocketAddr) {
    let acceptor = TcpListener::bind(addr)
        .into_acceptor()
        .await
        .expect("the receiver's port is free");
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .expect("a TCP address");
    (acceptor, addr)
}

fn serve(acceptor: impl Acceptor + 'static, shared: &Arc<Shared>) -> JoinHandle<()> {
    let app = Route::new().at("/hook", hook).data(Arc::clone(shared));
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    })
}

/// Registers an endpoint for `events` at `url`; returns its id and secret.
pub async fn subscribe(
    api: &Api,
    url: &str,
    events: &[&str],
    devices: Option<&[&str]>,
) -> (String, String) {
    let mut body = json!({ "url": url, "events": events, "description": "test receiver" });
    if let Some(devices) = devices {
        body["device_ids"] = json!(devices);
    }
    let answer = api.post_json("/webhooks", body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = &answer.body["results"];
    (
        results["id"].as_str().expect("id").to_string(),
        results["secret"].as_str().expect("secret").to_string(),
    )
}

/// A receiver subscribed to `events` of `api`'s tenant, and its endpoint's secret.
pub async fn subscribed(api: &Api, events: &[&str]) -> (Receiver, String) {
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(api, &receiver.url, events, None).await;
    (receiver, secret)
}
