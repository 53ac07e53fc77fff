//! TLS for the webhook receivers of the tests and of the bench (which includes this file): a
//! poem acceptor that completes each connection's handshake with the certificate of
//! `fixtures/tls` (for `127.0.0.1` and `localhost`; see its README), offering HTTP/2 before
//! HTTP/1.1 as a real HTTPS server does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate authority that signed the receivers' certificate, to be trusted by the
/// gateway under test (`WAGATE_WEBHOOK_CA_FILE`).
pub const TEST_CA_PEM: &[u8] = include_bytes!("../fixtures/tls/ca.pem");
const RECEIVER_CERT_PEM: &[u8] = include_bytes!("../fixtures/tls/receiver.pem");
const RECEIVER_KEY_PEM: &[u8] = include_bytes!("../fixtures/tls/receiver.key");

/// Accepts TCP connections and completes their TLS handshake; one that fails is counted and
/// skipped.
pub struct TlsAcceptor {
    tcp: TcpAcceptor,
    tls: tokio_rustls::TlsAcceptor,
    failed: Arc<AtomicUsize>,
}

impl TlsAcceptor {
    /// TLS over the connections of `tcp`.
    pub fn new(tcp: TcpAcceptor) -> Self {
        Self {
            tcp,
            tls: tokio_rustls::TlsAcceptor::from(server_config()),
            failed: Arc::default(),
        }
    }

    /// Counts the handshakes that failed (the client refused the certificate, say).
    pub fn handshakes_failed(&self) -> HandshakesFailed {
        HandshakesFailed(Arc::clone(&self.failed))
    }
}

/// How many of an acceptor's handshakes failed so far; readable after the acceptor moved into
/// its server.
pub struct HandshakesFailed(Arc<AtomicUsize>);

impl HandshakesFailed {
    /// The count so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn server_config() -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(RECEIVER_CERT_PEM)
        .collect::<Result<Vec<_>, _>>()
        .expect("the fixture certificate");
    let key = PrivateKeyDer::from_pem_slice(RECEIVER_KEY_PEM).expect("the fixture key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a usable certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

impl Acceptor for TlsAcceptor {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.tcp.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (tcp, local, remote, _) = self.tcp.accept().await?;
            match self.tls.accept(tcp).await {
                Ok(tls) => return Ok((tls, local, remote, Scheme::HTTPS)),
                Err(_) => {
                    self.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}
