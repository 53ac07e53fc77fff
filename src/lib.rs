//! wagate as a library: the one start-up path. The binary turns its command line into a
//! [`Config`] and calls [`start`]; the tests and benchmarks call the same function with theirs,
//! so what they exercise is the gateway the binary runs.

#![deny(unsafe_code)]

mod listener;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wagate_core::cluster::{Cluster, ClusterError, ClusterOptions};
use wagate_core::engine::{DeviceManager, EngineConfig, NodeConfig, WhatsAppEndpoint};
use wagate_core::events::EventBus;
use wagate_core::events::relay::EventRelay;
use wagate_core::metrics::Metrics;
use wagate_core::plugins::{PluginError, PluginHost, PluginSpec};
use wagate_core::store::{DeviceCacheKeeper, Store, StoreError};
use wagate_core::webhooks::{Dispatcher, WebhookConfig, WebhookError, Webhooks};
use wagate_openapi::{AdminCredential, ApiState, PublicBase};

pub use listener::DEFAULT_WRITE_STALL;
use listener::StallGuarded;

/// How long in-flight requests get to finish at shutdown.
const REQUEST_GRACE: Duration = Duration::from_secs(10);
/// How long plugins get to finish their queued events at shutdown.
const PLUGIN_GRACE: Duration = Duration::from_secs(5);
/// How long one request to WhatsApp's media servers may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failed start-up restore waits before it is tried again.
const RESTORE_RETRY: Duration = Duration::from_secs(5);

/// Where the gateway keeps its data.
#[derive(Debug, Clone)]
pub enum Database {
    /// An existing PostgreSQL database (`DATABASE_URL`).
    Url(String),
    /// The embedded cluster in this directory, started and stopped with the gateway.
    Embedded(PathBuf),
}

/// Everything a running gateway is made from.
#[derive(Debug)]
pub struct Config {
    /// Where to serve HTTP; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the data lives.
    pub database: Database,
    /// The base of every link handed out (`WAGATE_PUBLIC_URL`); the listen address when unset.
    pub public_url: Option<String>,
    /// The `default` tenant's credentials (`WAGATE_BASIC_AUTH`), made exactly these at start;
    /// empty leaves tenants as they are.
    pub default_tenant: Vec<(String, String)>,
    /// The operator's credential for the admin API; off without one.
    pub admin: Option<AdminCredential>,
    /// How long a login call waits for WhatsApp.
    pub login_timeout: Duration,
    /// How long a client may take nothing of what it is sent (an event stream it stopped
    /// reading) before its connection is closed; [`DEFAULT_WRITE_STALL`] unless a test needs
    /// it shorter.
    pub write_stall: Duration,
    /// Webhook delivery.
    pub webhooks: WebhookConfig,
    /// Plugins to load, in order.
    pub plugins: Vec<PluginSpec>,
    /// Where WhatsApp is.
    pub whatsapp: WhatsAppEndpoint,
    /// Where `GET /metrics` is served instead of on `listen` (`--metrics-listen`); on `listen`
    /// when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the metrics count devices per tenant too (`--metrics-per-tenant`): tenant ids
    /// become labels only by this opt-in.
    pub metrics_per_tenant: bool,
    /// How this process takes part in a cluster of nodes on the same database: its internal
    /// address, heartbeat and lease expiry. A node alone behaves as a single gateway.
    pub node: NodeConfig,
    /// The secret nodes authenticate forwarded requests with (`WAGATE_CLUSTER_SECRET`);
    /// without it this node neither forwards nor accepts forwarded requests.
    pub cluster_secret: Option<String>,
    /// Sandbox builds: the base URL of the sandbox's control API, served under `/sandbox/…`.
    #[cfg(feature = "sandbox")]
    pub sandbox_control: String,
}

/// Why the gateway did not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A plugin refused to load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Loading the plugins stopped before it finished.
    #[error("loading the plugins stopped: {0}")]
    PluginTask(#[source] tokio::task::JoinError),
    /// The listen address could not be bound.
    #[error("could not listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The embedded PostgreSQL did not start.
    #[error("starting the embedded PostgreSQL in {}: {source}", .dir.display())]
    Cluster {
        /// Its data directory.
        dir: PathBuf,
        /// What went wrong.
        source: ClusterError,
    },
    /// The database could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Webhook delivery did not start.
    #[error("starting webhook delivery: {0}")]
    Webhooks(#[from] WebhookError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A gateway that serves. [`Running::stop`] shuts it down in order; dropping it aborts it, as a
/// process exit would (nothing is logged out, the next start restores the linked devices).
pub struct Running {
    local: SocketAddr,
    /// The metrics server on its own address, with its stop signal.
    metrics_server: Option<(SocketAddr, oneshot::Sender<()>, AbortOnDrop<()>)>,
    manager: Arc<DeviceManager>,
    server: AbortOnDrop<std::io::Result<()>>,
    stop_serving: Option<oneshot::Sender<()>>,
    restoring: AbortOnDrop<()>,
    relay: EventRelay,
    device_rows: DeviceCacheKeeper,
    dispatcher: Dispatcher,
    plugins: PluginHost,
    cluster: Option<Cluster>,
}

/// A task that is aborted when its handle is dropped, so that no task outlives its owner.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts a gateway: loads the plugins, binds the listen address, opens the database (starting
/// the embedded cluster), sets up the default tenant, starts webhook delivery and the engine,
/// starts restoring the linked devices in the background, and serves.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let Config {
        listen,
        database,
        public_url,
        default_tenant,
        admin,
        login_timeout,
        write_stall,
        webhooks,
        plugins,
        whatsapp,
        metrics_listen,
        metrics_per_tenant,
        mut node,
        cluster_secret,
        #[cfg(feature = "sandbox")]
        sandbox_control,
    } = config;
    // Loading runs the plugins' initialisers: off the async workers, and before anything serves.
    let mut plugins = tokio::task::spawn_blocking(move || PluginHost::load(&plugins))
        .await
        .map_err(StartError::PluginTask)??;
    let acceptor = TcpListener::bind(listen)
        .into_acceptor()
        .await
        .map_err(|source| StartError::Listen {
            address: listen,
            source,
        })?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(listen);
    let metrics_acceptor = match metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .into_acceptor()
                .await
                .map_err(|source| StartError::Listen { address, source })?,
        ),
        None => None,
    };
    let metrics = Metrics::new(metrics_per_tenant);
    let (cluster, store) = open_store(database).await?;
    if !default_tenant.is_empty() {
        store
            .ensure_tenant_with_credentials("default", &default_tenant)
            .await?;
    }

    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(StartError::Http)?;
    let dispatcher = Dispatcher::start(store.clone(), webhooks.clone(), metrics.clone()).await?;
    // Every request for a device reads its row: kept in memory while every node's changes are
    // heard.
    let device_rows = store.keep_device_rows();
    let bus = EventBus::new();
    plugins.start(&bus);
    let public_base = PublicBase::new(public_url.as_deref(), local);
    // Without an address of its own, a node listening on one interface is reached there.
    if node.address.is_none() && !listen.ip().is_unspecified() {
        node.address = Some(format!("http://{local}"));
    }
    let link = store
        .register_node(node.address.as_deref(), public_base.url())
        .await?;
    tracing::info!(node = link.id(), address = ?node.address, "joined the cluster of nodes on this database");
    let manager = DeviceManager::new(
        store.clone(),
        bus,
        EngineConfig {
            endpoint: whatsapp,
            login_timeout,
            push_name: EngineConfig::PUSH_NAME.to_string(),
            qr_links: Arc::new(public_base.clone()),
            metrics: metrics.clone(),
            node,
        },
        http,
        link,
        public_base.url().to_string(),
    );
    // A tenant's streams span the devices of every node.
    let relay = EventRelay::start(
        store.clone(),
        manager.events().clone(),
        Arc::new({
            let manager = Arc::clone(&manager);
            move |tenant, device: &str| manager.runs_here(tenant, device)
        }),
    );
    // Linked devices come back by themselves; the API serves while they reconnect, and
    // `/ready` says 503 until they have. A restore fails only before it starts any device (the
    // database did not answer), so it is tried again until it succeeds.
    let restoring = AbortOnDrop(tokio::spawn({
        let manager = Arc::clone(&manager);
        async move {
            loop {
                match manager.restore().await {
                    Ok(n) => {
                        tracing::info!(devices = n, "linked devices restored");
                        return;
                    }
                    Err(e) => tracing::error!(
                        "linked devices not restored, trying again in {} s: {e}",
                        RESTORE_RETRY.as_secs()
                    ),
                }
                tokio::time::sleep(RESTORE_RETRY).await;
            }
        }
    }));
    let state = ApiState {
        manager: Arc::clone(&manager),
        webhooks: Webhooks::new(store, webhooks),
        plugins: plugins.counters(),
        admin,
        public_base,
        metrics: metrics.clone(),
        metrics_on_api: metrics_acceptor.is_none(),
        dispatcher: dispatcher.probe(),
        cluster_secret,
    };
    let metrics_server = metrics_acceptor.map(|acceptor| {
        let scrape = wagate_openapi::metrics_endpoint(
            metrics,
            Arc::clone(&state.manager),
            state.plugins.clone(),
        );
        serve_metrics(acceptor, metrics_listen.unwrap_or(listen), scrape)
    });
    #[cfg(feature = "sandbox")]
    let app = wagate_openapi::sandbox_app(state, sandbox_control);
    #[cfg(not(feature = "sandbox"))]
    let app = wagate_openapi::app(state);

    let (stop_serving, stopped) = oneshot::channel::<()>();
    let server = AbortOnDrop(tokio::spawn(async move {
        poem::Server::new_with_acceptor(StallGuarded::new(acceptor, write_stall))
            .run_with_graceful_shutdown(
                app,
                async {
                    let _ = stopped.await;
                },
                Some(REQUEST_GRACE),
            )
            .await
    }));
    tracing::info!(%local, "wagate is serving; API docs at /docs");
    Ok(Running {
        local,
        metrics_server,
        manager,
        server,
        stop_serving: Some(stop_serving),
        restoring,
        relay,
        device_rows,
        dispatcher,
        plugins,
        cluster,
    })
}

/// Serves `GET /metrics` (`scrape`) alone on `acceptor`, bound for `requested`, until told to
/// stop; every other path there is a 404.
fn serve_metrics(
    acceptor: impl Acceptor + 'static,
    requested: SocketAddr,
    scrape: impl poem::Endpoint + 'static,
) -> (SocketAddr, oneshot::Sender<()>, AbortOnDrop<()>) {
    let address = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(requested);
    let (stop, stopped) = oneshot::channel::<()>();
    let app = poem::Route::new().at("/metrics", scrape);
    let task = AbortOnDrop(tokio::spawn(async move {
        let served = poem::Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                app,
                async {
                    let _ = stopped.await;
                },
                Some(REQUEST_GRACE),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(%address, "the metrics server stopped: {e}");
        }
    }));
    tracing::info!(%address, "metrics served at /metrics on their own address");
    (address, stop, task)
}

/// Connects to the database, starting the embedded cluster when there is no URL.
async fn open_store(database: Database) -> Result<(Option<Cluster>, Store), StartError> {
    let dir = match database {
        Database::Url(url) => return Ok((None, Store::connect(&url).await?)),
        Database::Embedded(dir) => dir,
    };
    let cluster = Cluster::start(&dir, ClusterOptions::default())
        .await
        .map_err(|source| StartError::Cluster {
            dir: dir.clone(),
            source,
        })?;
    tracing::info!(
        dir = %dir.display(),
        socket = %cluster.socket_dir().display(),
        "embedded PostgreSQL ready (Unix socket only, reachable by this user alone)"
    );
    let store = Store::connect(&cluster.url()).await?;
    Ok((Some(cluster), store))
}

impl Running {
    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where `GET /metrics` is served when it has its own address (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(address, _, _)| *address)
    }

    /// Its engine, and through it the store.
    pub fn manager(&self) -> &Arc<DeviceManager> {
        &self.manager
    }

    /// Waits until the HTTP server stops by itself, which it does only on an error.
    pub async fn serving(&mut self) -> std::io::Result<()> {
        match (&mut self.server.0).await {
            Ok(outcome) => outcome,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Shuts down in order: the node hands its devices to the other nodes (each stopped here,
    /// then connected there; requests are forwarded to their new owners meanwhile), requests
    /// get [`REQUEST_GRACE`] to finish, the engine stops what is left (nothing is logged out)
    /// and the node leaves the cluster, webhook delivery hands its claims back once the
    /// engine's last events are in the outbox, plugins get [`PLUGIN_GRACE`], and the embedded
    /// cluster stops last.
    pub async fn stop(mut self) -> Result<(), ClusterError> {
        self.restoring.0.abort();
        self.manager.hand_over().await;
        if let Some(stop) = self.stop_serving.take() {
            let _ = stop.send(());
        }
        // Its outcome was reported by `serving` if it failed; here it only has to end.
        let _ = (&mut self.server.0).await;
        if let Some((_, stop, mut task)) = self.metrics_server.take() {
            let _ = stop.send(());
            let _ = (&mut task.0).await;
        }
        self.manager.shutdown().await;
        self.manager.leave().await;
        let Running {
            relay,
            device_rows,
            dispatcher,
            plugins,
            cluster,
            ..
        } = self;
        drop(relay);
        drop(device_rows);
        dispatcher.shutdown().await;
        plugins.shutdown(PLUGIN_GRACE).await;
        if let Some(cluster) = cluster {
            cluster.stop().await?;
        }
        Ok(())
    }
}
