//! The handle to one live client connection: queueing stanzas for its writer, and matching the
//! client's answers to the requests the server (or the phone) sent it.
//!
//! It knows nothing of the registry, the phone or the socket itself, so the registry can hold
//! handles and the phone can drive them without either depending on the socket code
//! (`connection`), which creates them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use wacore_binary::Node;

use crate::stanza::{self, SERVER};

/// How long the server waits for a client to answer a server-initiated request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Stanzas queued for one client before senders wait.
const OUTBOUND_QUEUE: usize = 64;

/// A server-initiated request that got no usable answer.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The socket closed first.
    #[error("the client disconnected")]
    Gone,
    /// No answer within the time limit.
    #[error("the client did not answer within {0:?}")]
    Timeout(Duration),
}

/// What a [`Conn`] hands its socket's writer: a stanza to seal and send, or the order to close,
/// which comes through the same queue so it follows every stanza queued before it.
pub(crate) enum Outbound {
    /// A stanza for the client.
    Node(Node),
    /// Close the socket.
    Close,
}

/// What a registering client told the server about itself.
pub(crate) struct Registration {
    /// The companion's Signal identity key (raw, 32 bytes).
    pub identity: [u8; 32],
}

/// A live, established client connection.
pub(crate) struct Conn {
    /// The sandbox's number for this connection.
    pub id: u64,
    /// The client's Noise static key.
    pub client_static: [u8; 32],
    /// Set for a new device, absent for a login.
    pub registration: Option<Registration>,
    /// The device JID once logged in.
    pub jid: Option<String>,
    out: mpsc::Sender<Outbound>,
    pending: Mutex<HashMap<String, oneshot::Sender<Node>>>,
    /// `companion_finish` waiters by pairing ref: the phone decides how to answer them.
    finish_waiters: Mutex<HashMap<Vec<u8>, oneshot::Sender<Node>>>,
    /// Where the client's passkey-handshake requests go while the phone runs that handshake
    /// here; the phone answers them itself.
    passkey_requests: Mutex<Option<mpsc::Sender<Node>>>,
    next_id: AtomicU64,
    /// Set once the client has left passive mode, i.e. it is ready for what was queued for it.
    active: AtomicBool,
}

impl Conn {
    /// A handle for the established connection `id`, and the queue its socket's writer drains.
    /// The queue is bounded, so a client that stops reading slows its senders down.
    pub fn new(
        id: u64,
        client_static: [u8; 32],
        registration: Option<Registration>,
        jid: Option<String>,
    ) -> (Self, mpsc::Receiver<Outbound>) {
        let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let conn = Self {
            id,
            client_static,
            registration,
            jid,
            out,
            pending: Mutex::new(HashMap::new()),
            finish_waiters: Mutex::new(HashMap::new()),
            passkey_requests: Mutex::new(None),
            next_id: AtomicU64::new(1),
            active: AtomicBool::new(false),
        };
        (conn, out_rx)
    }

    /// Records that the client went active.
    pub fn set_active(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    /// Whether the client has gone active on this connection.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Queues a stanza for the client.
    pub async fn send(&self, node: Node) -> Result<(), RequestError> {
        self.out
            .send(Outbound::Node(node))
            .await
            .map_err(|_| RequestError::Gone)
    }

    /// Resolves once nothing can reach the client any more: its socket closed or was closed.
    pub async fn closed(&self) {
        self.out.closed().await;
    }

    /// Sends a last stanza, then closes the socket.
    pub async fn close_with(&self, node: Node) {
        let _ = self.out.send(Outbound::Node(node)).await;
        let _ = self.out.send(Outbound::Close).await;
    }

    /// A fresh stanza id for a server-initiated request.
    pub fn next_id(&self) -> String {
        format!(
            "sbx.{}.{}",
            self.id,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends an `<iq>` that carries an `id` and waits for the client's answer to it.
    pub async fn request(&self, node: Node) -> Result<Node, RequestError> {
        let id = stanza::id(&node).unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let outcome = async {
            self.send(node).await?;
            match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(RequestError::Gone),
                Err(_) => Err(RequestError::Timeout(REQUEST_TIMEOUT)),
            }
        }
        .await;
        lock(&self.pending).remove(&id);
        outcome
    }

    /// Hands the client's `result` or `error` `<iq>` to the [`Conn::request`] waiting for its
    /// id; an answer nobody waits for (late, or to a request sent without waiting) is dropped.
    pub fn answer_request(&self, answer: Node) {
        if let Some(id) = stanza::id(&answer)
            && let Some(waiter) = lock(&self.pending).remove(&id)
        {
            let _ = waiter.send(answer);
        }
    }

    /// Waits for the client's `companion_finish` of the pairing-code flow `pairing_ref`.
    pub fn expect_companion_finish(&self, pairing_ref: &[u8]) -> oneshot::Receiver<Node> {
        let (tx, rx) = oneshot::channel();
        lock(&self.finish_waiters).insert(pairing_ref.to_vec(), tx);
        rx
    }

    /// Takes the waiter [`Conn::expect_companion_finish`] left for `pairing_ref`, so exactly one
    /// `companion_finish` reaches the phone; `None` when no phone waits for it.
    pub fn take_companion_finish_waiter(
        &self,
        pairing_ref: &[u8],
    ) -> Option<oneshot::Sender<Node>> {
        lock(&self.finish_waiters).remove(pairing_ref)
    }

    /// Sends the client's passkey-handshake requests to the returned queue until it is dropped.
    pub fn divert_passkey_requests(&self) -> mpsc::Receiver<Node> {
        // A handful suffices: the client sends one request per step and waits for its answer.
        let (tx, rx) = mpsc::channel(8);
        *lock(&self.passkey_requests) = Some(tx);
        rx
    }

    /// Hands a client's passkey-handshake request to the handshake running on this connection;
    /// gives it back when none runs (or the client floods it), for the caller to refuse.
    pub fn divert_passkey_request(&self, request: Node) -> Option<Node> {
        let mut slot = lock(&self.passkey_requests);
        let Some(tx) = slot.as_ref() else {
            return Some(request);
        };
        let sent = tx.try_send(request);
        if tx.is_closed() {
            // The handshake ended; forget it so the next request is refused at once.
            *slot = None;
        }
        sent.err().map(|e| e.into_inner())
    }
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it: every map here stays
/// consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `user:device@s.whatsapp.net`, the form every companion is keyed by.
pub(crate) fn device_jid(user: &str, device: u32) -> String {
    format!("{user}:{device}@{SERVER}")
}
