//! Building one whatsapp-rust client for a device.

use std::sync::Arc;

use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventHandler};
use whatsapp_rust::wacore::store::traits::Backend;
use whatsapp_rust::{Client, TokioRuntime};

use super::http::ReqwestHttp;
use super::{EngineContext, WhatsAppEndpoint};

/// Hands the client's events to the device's session.
///
/// The client calls this synchronously and cannot wait, so the channel is unbounded; the client
/// emits a handful of events per login, and the session drains them as they come.
struct ToSession(mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for ToSession {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }
}

/// A running client and the stream of its events.
pub(crate) struct RunningClient {
    pub client: Arc<Client>,
    pub handle: BotHandle,
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
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
    let handle = bot.spawn();
    Ok(RunningClient {
        client,
        handle,
        events,
    })
}
