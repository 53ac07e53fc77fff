//! Building one whatsapp-rust client for a device.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventHandler};
use whatsapp_rust::wacore::store::traits::Backend;
use whatsapp_rust::{Client, OwnedNodeRef, RawNodeLease, TokioRuntime};

use super::http::ReqwestHttp;
use super::{EngineContext, WhatsAppEndpoint};

/// Hands the client's events to the device's session.
///
/// The client calls this synchronously and cannot wait, so the channel is unbounded; the client
/// emits a handful of events per login, and the session drains them as they come. Of the raw
/// stanzas only the few [`WireNotice`]s pass, so routine traffic never wakes the session.
struct ToSession(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for ToSession {
    fn handle_event(&self, event: Arc<Event>) {
        if let Event::RawNode(node) = &*event
            && WireNotice::of(node).is_none()
        {
            return;
        }
        let _ = self.0.send(event);
    }
}

/// What WhatsApp says on the wire that whatsapp-rust 0.7.0 acts on without an event of its own
/// (newer releases report both); the session reads them from the raw stanzas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireNotice {
    /// `<stream:error code="429">`: too many requests; the client would reconnect after a
    /// back-off.
    RateLimited,
    /// `<ib><client_expiration t=…>`: the date after which WhatsApp refuses this client version.
    ClientExpiring(DateTime<Utc>),
}

impl WireNotice {
    /// The notice `node` carries, if it is one.
    pub(crate) fn of(node: &OwnedNodeRef) -> Option<Self> {
        let node = node.get();
        if node.tag == "stream:error" {
            return node
                .get_attr("code")
                .is_some_and(|code| *code == "429")
                .then_some(Self::RateLimited);
        }
        if node.tag == "ib" {
            let at = node
                .get_optional_child("client_expiration")?
                .get_attr("t")?;
            let secs: i64 = at.as_str().parse().ok()?;
            return DateTime::from_timestamp(secs, 0).map(Self::ClientExpiring);
        }
        None
    }
}

/// A running client and the stream of its events.
pub(crate) struct RunningClient {
    pub client: Arc<Client>,
    pub handle: BotHandle,
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
    /// Keeps the raw stanzas coming that [`WireNotice`] reads.
    _raw_nodes: RawNodeLease,
}

/// Builds and starts a client on `backend`.
pub(crate) async fn start(
    ctx: &EngineContext,
    backend: Arc<dyn Backend>,
) -> Result<RunningClient, String> {
    let (tx, events) = mpsc::unbounded_channel();
    let builder = Bot::builder()
        .with_backend_arc(backend)
        .with_http_client(ReqwestHttp(ctx.http.clone()))
        .with_push_name(ctx.config.push_name.clone())
        .skip_history_sync()
        .with_event_handler(ToSession(tx));
    let bot = match &ctx.config.endpoint {
        WhatsAppEndpoint::Production => {
            builder
                .with_transport_factory(TokioWebSocketTransportFactory::new())
                .with_runtime(TokioRuntime)
                .build()
                .await
        }
        #[cfg(feature = "sandbox")]
        WhatsAppEndpoint::Sandbox { url, time_scale } => {
            builder
                .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(url.clone()))
                .with_runtime(wagate_sandbox::ScaledRuntime::new(*time_scale))
                // The sandbox serves no version endpoint.
                .with_version((2, 3000, 1_023_000_000))
                .build()
                .await
        }
    }
    .map_err(|e| format!("the whatsapp client could not be built: {e}"))?;
    let client = bot.client();
    // Before the client runs, so no notice is missed.
    let raw_nodes = client.acquire_raw_node_forwarding();
    let handle = bot.spawn();
    Ok(RunningClient {
        client,
        handle,
        events,
        _raw_nodes: raw_nodes,
    })
}
