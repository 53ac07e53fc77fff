//! The webhook receiver inside the bench: a poem server on loopback that answers every POST
//! with 204 at once and notes when it arrived, over plain HTTP/1.1 or over TLS offering HTTP/2
//! (the tests' acceptor and certificate, `tests/it/support/tls.rs`). It only counts; checking
//! signatures is the tests' job, and would add to the latency measured here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, Server, handler, post};
use tokio::sync::watch;
use tokio::task::JoinHandle;

// The failed-handshake count is the tests' concern, unused here.
#[allow(dead_code)]
#[path = "../../it/support/tls.rs"]
mod tls;

pub use tls::TEST_CA_PEM;

/// How deliveries reach the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `http://`: HTTP/1.1 over kept-alive connections.
    Http1,
    /// `https://`: TLS, HTTP/2 negotiated by ALPN.
    Https2,
}

struct Shared {
    /// Arrival instants, in order of arrival.
    arrivals: Mutex<Vec<Instant>>,
    /// How many arrived, for waiters.
    count: watch::Sender<usize>,
}

/// A receiver at [`Receiver::url`]; it stops when dropped.
pub struct Receiver {
    /// Where to point the webhook.
    pub url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

#[handler]
async fn hook(Data(shared): Data<&Arc<Shared>>, _body: Vec<u8>) -> StatusCode {
    // The body is read (the extractor) so the connection stays reusable; nothing else is done
    // with it.
    let at = Instant::now();
    let n = {
        let mut arrivals = shared.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.push(at);
        arrivals.len()
    };
    shared.count.send_replace(n);
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start(transport: Transport) -> Result<Self> {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .context("binding the webhook receiver")?;
        let addr: SocketAddr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the receiver's listener has no socket address")?;
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let app = Route::new()
            .at("/hook", post(hook))
            .data(Arc::clone(&shared));
        let (server, scheme) = match transport {
            Transport::Http1 => (
                tokio::spawn(async move {
                    let _ = Server::new_with_acceptor(acceptor).run(app).await;
                }),
                "http",
            ),
            Transport::Https2 => {
                let acceptor = tls::TlsAcceptor::new(acceptor);
                (
                    tokio::spawn(async move {
                        let _ = Server::new_with_acceptor(acceptor).run(app).await;
                    }),
                    "https",
                )
            }
        };
        Ok(Self {
            url: format!("{scheme}://{addr}/hook"),
            shared,
            server,
        })
    }

    /// How many deliveries arrived so far.
    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Waits until `n` deliveries arrived in all, for at most `timeout`; when the `n`th came.
    pub async fn wait_count(&self, n: usize, timeout: Duration) -> Result<Instant> {
        let mut count = self.shared.count.subscribe();
        match tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => bail!("the webhook receiver stopped"),
            Err(_) => bail!(
                "only {} of {n} deliveries arrived within {:.1} s",
                self.count(),
                timeout.as_secs_f64()
            ),
        }
        let arrivals = self
            .shared
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        arrivals
            .get(n - 1)
            .copied()
            .context("a delivery counted but not recorded")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
