//! The wagate binary: configuration, wiring, and the commands `serve`, `migrate`,
//! `tenant create` and `spec`.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{Signal, SignalKind, signal};
use wagate::{Config, Database};
use wagate_core::cluster::{Cluster, ClusterOptions};
use wagate_core::engine::{NodeConfig, WhatsAppEndpoint};
use wagate_core::plugins::PluginSpec;
use wagate_core::store::Store;
use wagate_core::webhooks::{RetrySchedule, WebhookConfig, trusted_roots_from_pem};
use wagate_openapi::AdminCredential;

/// wagate: a multi-tenant WhatsApp multi-device login gateway.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// How log lines are written: `text` for people, `json` for log collectors (one object a
    /// line, with the current span's fields and the list of spans). `RUST_LOG` chooses what is
    /// logged.
    #[arg(
        long,
        env = "WAGATE_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (the message among
    /// them), `span` (the current span's fields) and `spans` (every span it is in, outermost
    /// first).
    Json,
}

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,whatsapp_rust=warn,wacore=warn,tokio_postgres=warn";

/// Installs the logger: `RUST_LOG` (else [`DEFAULT_LOG_FILTER`]) chooses what is logged,
/// `format` how.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let logger = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logger.init(),
        LogFormat::Json => logger
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

// Parsed once at start; boxing the serve options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Print the OpenAPI spec (YAML).
    Spec,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its first credential (shown once).
    Create {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Args, Clone)]
struct DbArgs {
    /// PostgreSQL URL; when unset, a private cluster is started in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where wagate keeps its files (the embedded PostgreSQL cluster among them).
    #[arg(long, env = "WAGATE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WAGATE_LISTEN", default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArgs,
    /// Base of the links the API hands out, e.g. https://wa.example.com; from the request's
    /// Host header when unset.
    #[arg(long, env = "WAGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Credentials of the default tenant, `user:pass[,user2:pass2]`.
    #[arg(long, env = "WAGATE_BASIC_AUTH")]
    basic_auth: Option<String>,
    /// The operator's credential for the admin API (`/admin/…`), `user:pass[,user2:pass2]`;
    /// no tenant's. The admin API is off when unset.
    #[arg(long, env = "WAGATE_ADMIN_AUTH", hide_env_values = true)]
    admin_auth: Option<String>,
    /// Seconds a login call waits for WhatsApp before answering 504.
    #[arg(long, env = "WAGATE_LOGIN_TIMEOUT", default_value_t = 20)]
    login_timeout: u64,
    #[command(flatten)]
    webhooks: WebhookArgs,
    /// Plugins to load, comma-separated paths of shared libraries (each with an empty config).
    #[arg(long, env = "WAGATE_PLUGINS")]
    plugins: Option<String>,
    /// A JSON file listing plugins with their configs: `[{"path", "config"?, "queue"?}]`.
    #[arg(long, env = "WAGATE_PLUGIN_CONFIG")]
    plugin_config: Option<PathBuf>,
    /// Serve `GET /metrics` on this address instead of the API's (which then answers 404 there).
    #[arg(long, env = "WAGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Count devices per tenant in the metrics too (`wagate_tenant_devices{tenant_id,state}`).
    #[arg(long, env = "WAGATE_METRICS_PER_TENANT")]
    metrics_per_tenant: bool,
    #[command(flatten)]
    node: NodeArgs,
    #[cfg(feature = "sandbox")]
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Running several nodes on one database.
#[derive(Args)]
struct NodeArgs {
    /// Where the other nodes reach this one, e.g. http://10.0.0.5:3000; the listen address when
    /// it names one interface. Every node of a cluster needs one.
    #[arg(long, env = "WAGATE_NODE_ADDRESS")]
    node_address: Option<String>,
    /// The secret nodes authenticate the requests they forward to each other with; the same on
    /// every node. Without it a node neither forwards nor accepts forwarded requests.
    #[arg(
        long = "cluster-secret",
        env = "WAGATE_CLUSTER_SECRET",
        hide_env_values = true
    )]
    cluster_secret: Option<String>,
    /// Seconds between a node's heartbeats, which renew the leases of its devices.
    #[arg(long, env = "WAGATE_NODE_HEARTBEAT", default_value_t = 5)]
    node_heartbeat: u64,
    /// Seconds a device's lease lasts without renewal: how long a paused or cut-off node's
    /// devices wait before the others take them (a dead process's are taken at once).
    #[arg(long, env = "WAGATE_LEASE_EXPIRY", default_value_t = 15)]
    lease_expiry: u64,
}

impl NodeArgs {
    fn config(&self) -> anyhow::Result<NodeConfig> {
        if self.node_heartbeat == 0 || self.lease_expiry < 2 * self.node_heartbeat {
            bail!(
                "WAGATE_LEASE_EXPIRY ({} s) must be at least twice WAGATE_NODE_HEARTBEAT ({} s), which must be at least 1 s: a lease must survive one late heartbeat",
                self.lease_expiry,
                self.node_heartbeat
            );
        }
        if let Some(address) = &self.node_address {
            let parsed = reqwest::Url::parse(address)
                .with_context(|| format!("WAGATE_NODE_ADDRESS {address}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                bail!(
                    "WAGATE_NODE_ADDRESS {address} must be an http(s) URL with a host, e.g. http://10.0.0.5:3000"
                );
            }
        }
        if self.cluster_secret.as_deref().is_some_and(|s| s.len() < 16) {
            bail!("WAGATE_CLUSTER_SECRET must be at least 16 characters");
        }
        Ok(NodeConfig {
            address: self
                .node_address
                .as_deref()
                .map(|a| a.trim_end_matches('/').to_string()),
            heartbeat: Duration::from_secs(self.node_heartbeat),
            lease_expiry: Duration::from_secs(self.lease_expiry),
        })
    }
}

#[derive(Args)]
struct WebhookArgs {
    /// Accept webhook URLs on loopback, private and link-local addresses.
    #[arg(long, env = "WAGATE_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
    /// Delays between a failed delivery's attempts (ms, s, m, h); dead after the last.
    #[arg(
        long,
        env = "WAGATE_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,24h",
        value_parser = RetrySchedule::parse
    )]
    webhook_retry_schedule: RetrySchedule,
    /// Seconds one delivery attempt may take.
    #[arg(long, env = "WAGATE_WEBHOOK_TIMEOUT", default_value_t = 10)]
    webhook_timeout: u64,
    /// A PEM file of certificate authorities trusted for https webhook URLs besides the public
    /// ones.
    #[arg(long, env = "WAGATE_WEBHOOK_CA_FILE")]
    webhook_ca_file: Option<PathBuf>,
    /// Delivery attempts in flight at most, over all endpoints.
    #[arg(long, env = "WAGATE_WEBHOOK_CONCURRENCY", default_value_t = 256)]
    webhook_concurrency: usize,
    /// Delivery attempts in flight at most, per endpoint.
    #[arg(
        long,
        env = "WAGATE_WEBHOOK_ENDPOINT_CONCURRENCY",
        default_value_t = 32
    )]
    webhook_endpoint_concurrency: usize,
    /// Days events stay in the delivery log once nothing is pending for them.
    #[arg(long, env = "WAGATE_WEBHOOK_RETENTION_DAYS", default_value_t = 14)]
    webhook_retention_days: u64,
}

impl WebhookArgs {
    fn config(&self) -> anyhow::Result<WebhookConfig> {
        if self.webhook_concurrency == 0 || self.webhook_endpoint_concurrency == 0 {
            bail!(
                "WAGATE_WEBHOOK_CONCURRENCY and WAGATE_WEBHOOK_ENDPOINT_CONCURRENCY must be at least 1"
            );
        }
        if self.webhook_timeout == 0 {
            bail!("WAGATE_WEBHOOK_TIMEOUT must be at least 1 second");
        }
        let trusted_roots = match &self.webhook_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("reading WAGATE_WEBHOOK_CA_FILE {}", path.display())
                })?;
                trusted_roots_from_pem(&pem)
                    .with_context(|| format!("WAGATE_WEBHOOK_CA_FILE {}", path.display()))?
            }
        };
        Ok(WebhookConfig {
            allow_private: self.webhook_allow_private,
            trusted_roots,
            retry_schedule: self.webhook_retry_schedule.clone(),
            timeout: Duration::from_secs(self.webhook_timeout),
            max_in_flight: self.webhook_concurrency,
            max_in_flight_per_endpoint: self.webhook_endpoint_concurrency,
            retention: Duration::from_secs(self.webhook_retention_days * 24 * 3600),
            ..WebhookConfig::default()
        })
    }
}

#[cfg(feature = "sandbox")]
#[derive(Args)]
struct SandboxArgs {
    /// Run a WhatsApp sandbox in this process and point every device at it.
    #[arg(long, env = "WAGATE_SANDBOX")]
    sandbox: bool,
    /// Point every device at a standalone sandbox, e.g. ws://127.0.0.1:3010/ws/chat (loopback only).
    #[arg(long, env = "WAGATE_WHATSAPP_URL", conflicts_with = "sandbox")]
    whatsapp_url: Option<String>,
    /// How much faster than real time sandbox clients run their timers.
    #[arg(long, env = "WAGATE_SANDBOX_TIME_SCALE", default_value_t = 1)]
    sandbox_time_scale: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(db) => {
            let (_cluster, store) = open_store(&db).await?;
            drop(store);
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant {
            command: TenantCommand::Create { name, db },
        } => {
            let (_cluster, store) = open_store(&db).await?;
            let (tenant, credential) = store.create_tenant(&name).await?;
            println!("tenant:   {} ({})", tenant.name, tenant.id);
            println!("username: {}", credential.username);
            println!("password: {}", credential.secret);
            println!("(the password is shown once; wagate keeps only its hash)");
            Ok(())
        }
        Command::Spec => {
            print!("{}", wagate_openapi::spec_yaml());
            Ok(())
        }
    }
}

/// Connects to `DATABASE_URL`, or to the embedded cluster in the data directory: the one a
/// running `wagate serve` uses, or one started for this command.
async fn open_store(db: &DbArgs) -> anyhow::Result<(Option<Cluster>, Store)> {
    if let Some(url) = &db.database_url {
        let store = Store::connect(url).await?;
        return Ok((None, store));
    }
    let dir = absolute(&db.data_dir.join("postgres"))?;
    let cluster = Cluster::open(&dir, ClusterOptions::default())
        .await
        .with_context(|| format!("opening the embedded PostgreSQL in {}", dir.display()))?;
    let store = Store::connect(&cluster.url()).await?;
    Ok((Some(cluster), store))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::path::absolute(path)?)
}

/// `user:pass[,user2:pass2]` from the setting `name` (named in errors, which never show a
/// password).
fn parse_basic_auth(name: &str, raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.trim().split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                Ok((user.to_string(), pass.to_string()))
            }
            _ => bail!(
                "{name} entry `{}` must be user:password",
                pair.split(':').next().unwrap_or_default()
            ),
        })
        .collect()
}

/// The admin credential from `WAGATE_ADMIN_AUTH`, kept apart from the tenants': a username of
/// the default tenant's (`WAGATE_BASIC_AUTH`) is refused.
fn admin_credential(
    raw: Option<&str>,
    tenant_pairs: Option<&[(String, String)]>,
) -> anyhow::Result<Option<AdminCredential>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let pairs = parse_basic_auth("WAGATE_ADMIN_AUTH", raw)?;
    for (user, _) in &pairs {
        if tenant_pairs.is_some_and(|t| t.iter().any(|(u, _)| u == user)) {
            bail!(
                "WAGATE_ADMIN_AUTH username `{user}` is also in WAGATE_BASIC_AUTH: the admin \
                 credential must not be a tenant's; choose another username"
            );
        }
    }
    Ok(AdminCredential::new(pairs))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let default_tenant = args
        .basic_auth
        .as_deref()
        .map(|raw| parse_basic_auth("WAGATE_BASIC_AUTH", raw))
        .transpose()?
        .unwrap_or_default();
    let admin = admin_credential(args.admin_auth.as_deref(), Some(&default_tenant))?;
    let webhooks = args.webhooks.config()?;
    let node = args.node.config()?;
    let mut plugins = args
        .plugins
        .as_deref()
        .map(PluginSpec::from_list)
        .unwrap_or_default();
    if let Some(file) = &args.plugin_config {
        plugins.extend(PluginSpec::from_file(file)?);
    }
    let database = match &args.db.database_url {
        Some(url) => Database::Url(url.clone()),
        None => Database::Embedded(absolute(&args.db.data_dir.join("postgres"))?),
    };

    #[cfg(feature = "sandbox")]
    let (whatsapp, sandbox_control, _sandbox) = sandbox_endpoint(&args.sandbox).await?;
    #[cfg(not(feature = "sandbox"))]
    let whatsapp = WhatsAppEndpoint::Production;

    let mut running = wagate::start(Config {
        listen: args.listen,
        database,
        public_url: args.public_url,
        default_tenant,
        admin,
        login_timeout: Duration::from_secs(args.login_timeout),
        write_stall: wagate::DEFAULT_WRITE_STALL,
        webhooks,
        plugins,
        whatsapp,
        metrics_listen: args.metrics_listen,
        metrics_per_tenant: args.metrics_per_tenant,
        node,
        cluster_secret: args.node.cluster_secret.clone(),
        #[cfg(feature = "sandbox")]
        sandbox_control,
    })
    .await?;
    // Tests and scripts that start wagate on port 0 read the address from here.
    println!("listening on http://{}", running.local_addr());

    let failed = tokio::select! {
        _ = signals.recv() => None,
        outcome = running.serving() => Some(outcome),
    };
    running.stop().await?;
    match failed {
        Some(Err(e)) => Err(anyhow::Error::new(e).context("serving HTTP")),
        _ => Ok(()),
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made: one that arrives while the gateway
/// is still starting waits for it instead of killing it half-started.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for either.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(feature = "sandbox")]
async fn sandbox_endpoint(
    args: &SandboxArgs,
) -> anyhow::Result<(WhatsAppEndpoint, String, Option<wagate_sandbox::Sandbox>)> {
    let time_scale = args.sandbox_time_scale.max(1);
    if let Some(url) = &args.whatsapp_url {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("--whatsapp-url {url}"))?;
        let host = parsed.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback || parsed.scheme() != "ws" {
            bail!(
                "--whatsapp-url {url} is refused: a sandbox build only talks to ws:// on loopback"
            );
        }
        tracing::warn!(%url, "sandbox build: devices talk to a WhatsApp sandbox, not WhatsApp");
        // The standalone sandbox serves its control API on the websocket's host and port.
        let control = format!(
            "http://{host}:{}",
            parsed.port_or_known_default().unwrap_or(80)
        );
        return Ok((
            WhatsAppEndpoint::Sandbox {
                url: url.clone(),
                time_scale,
            },
            control,
            None,
        ));
    }
    if args.sandbox {
        let sandbox = wagate_sandbox::Sandbox::start_with(wagate_sandbox::SandboxConfig {
            time_scale,
            ..Default::default()
        })
        .await?;
        tracing::warn!(url = %sandbox.ws_url(), "sandbox mode: devices talk to an in-process WhatsApp sandbox");
        let url = sandbox.ws_url();
        let control = sandbox.http_url();
        return Ok((
            WhatsAppEndpoint::Sandbox { url, time_scale },
            control,
            Some(sandbox),
        ));
    }
    bail!(
        "this is a sandbox build: start it with --sandbox or --whatsapp-url ws://127.0.0.1:PORT/ws/chat"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_api_is_off_without_an_admin_credential() {
        assert!(admin_credential(None, None).unwrap().is_none());
    }

    #[test]
    fn an_admin_credential_verifies_its_pair_only() {
        let admin = admin_credential(Some("operator:pa:ss"), None)
            .unwrap()
            .expect("an admin credential");
        assert!(admin.verify("operator", "pa:ss"));
        assert!(!admin.verify("operator", "pa"));
    }

    #[test]
    fn an_admin_username_of_the_default_tenant_is_refused() {
        let tenants = parse_basic_auth("WAGATE_BASIC_AUTH", "admin:secret").unwrap();
        let err = admin_credential(Some("admin:zq9xk"), Some(&tenants))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("WAGATE_BASIC_AUTH"), "{err}");
        assert!(!err.contains("zq9xk"), "no password in errors: {err}");
    }

    #[test]
    fn a_malformed_admin_credential_is_named_without_its_password() {
        let err = admin_credential(Some("operator"), None)
            .expect_err("refused")
            .to_string();
        assert!(
            err.starts_with("WAGATE_ADMIN_AUTH entry `operator`"),
            "{err}"
        );
    }
}
