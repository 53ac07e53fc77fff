//! The scenarios, and what they share: a fresh stack (database, sandbox, gateway) per
//! scenario, and linking devices through the real login flow.

pub mod cold;
pub mod memory;
pub mod restore;
pub mod storm;
pub mod warm;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt as _;

use crate::Args;
use crate::api::{Api, SandboxControl};
use crate::processes::{GatewayProc, GatewaySpec, Postgres, SandboxProc};
use crate::receiver::TEST_CA_PEM;
use crate::table::Row;

/// The scenarios, in the order a full run takes them.
pub const ALL: [&str; 6] = ["warm", "cold", "storm", "restore", "webhooks", "memory"];

/// What every scenario gets: the run's flags, its PostgreSQL, the binaries, where logs go.
pub struct Bench {
    /// The command line.
    pub args: Args,
    /// The run's PostgreSQL server.
    pub postgres: Postgres,
    /// The `wagate` binary.
    pub wagate: PathBuf,
    /// The `wagate-sandbox` binary.
    pub sandbox: PathBuf,
    /// Where the children's stderr goes, a file per process.
    pub log_dir: PathBuf,
    /// Makes database names unique within the run.
    databases: AtomicUsize,
}

impl Bench {
    /// A bench with the run's shared parts.
    pub fn new(
        args: Args,
        postgres: Postgres,
        wagate: PathBuf,
        sandbox: PathBuf,
        log_dir: PathBuf,
    ) -> Self {
        Self {
            args,
            postgres,
            wagate,
            sandbox,
            log_dir,
            databases: AtomicUsize::new(0),
        }
    }

    /// Runs scenario `name`, adding its figures to `rows` as it measures them.
    pub async fn run(&self, name: &str, rows: &mut Vec<Row>) -> Result<()> {
        match name {
            "warm" => warm::run(self, rows).await,
            "cold" => cold::run(self, rows).await,
            "storm" => storm::run(self, rows).await,
            "restore" => restore::run(self, rows).await,
            "webhooks" => webhooks::run(self, rows).await,
            "memory" => memory::run(self, rows).await,
            other => bail!("no scenario `{other}`"),
        }
    }

    /// A fresh database, sandbox and gateway for one scenario; `label` names the database and
    /// log files.
    pub async fn stack(&self, label: &str) -> Result<Stack> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let database = format!("bench_{n}_{label}");
        let database_url = self
            .postgres
            .create_database(&database)
            .await
            .with_context(|| format!("creating the database for {label}"))?;
        let sandbox = SandboxProc::start(
            &self.sandbox,
            &self.log_dir.join(format!("{n}-{label}-sandbox.log")),
        )
        .await
        .context("starting the sandbox")?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let webhook_ca_file = self.log_dir.join("webhook-ca.pem");
        std::fs::write(&webhook_ca_file, TEST_CA_PEM)
            .with_context(|| format!("writing {}", webhook_ca_file.display()))?;
        let spec = GatewaySpec {
            binary: self.wagate.clone(),
            database_url: database_url.clone(),
            whatsapp_url: sandbox.ws_url.clone(),
            basic_auth: format!("bench:{password}"),
            log: self.log_dir.join(format!("{n}-{label}-gateway.log")),
            webhook_ca_file,
        };
        let gateway = GatewayProc::start(&spec)
            .await
            .context("starting the gateway")?;
        let api = Api::new(&gateway.base, "bench", &password)?;
        let control = SandboxControl::new(&sandbox.control_url);
        Ok(Stack {
            database_url,
            spec,
            gateway,
            sandbox,
            api,
            control,
        })
    }
}

/// One scenario's processes; dropping it kills them, the gateway first (fields drop in order),
/// so its devices do not spend its last moments reconnecting to a sandbox that is gone.
pub struct Stack {
    /// The scenario's database.
    pub database_url: String,
    /// How the gateway was started, to start it again.
    pub spec: GatewaySpec,
    /// The gateway.
    pub gateway: GatewayProc,
    /// The sandbox.
    pub sandbox: SandboxProc,
    /// The default tenant on the gateway.
    pub api: Api,
    /// The sandbox's control API.
    pub control: SandboxControl,
}

impl Stack {
    /// Stops the gateway with SIGTERM; how long it took to exit.
    pub async fn stop_gateway(&mut self) -> Result<Duration> {
        let (took, status) = self.gateway.proc.terminate().await?;
        if !status.success() {
            bail!(
                "the gateway exited with {status} on SIGTERM; its log: {}",
                self.gateway.proc.log.display()
            );
        }
        Ok(took)
    }

    /// Starts a new gateway on the same database and sandbox (the old one must be stopped).
    pub async fn start_gateway(&mut self) -> Result<()> {
        self.gateway = GatewayProc::start(&self.spec)
            .await
            .context("starting the gateway again")?;
        self.api = self.api.at(&self.gateway.base);
        Ok(())
    }

    /// Fails if a child died on its own.
    pub fn check_alive(&mut self) -> Result<()> {
        self.sandbox.proc.check_alive()?;
        self.gateway.proc.check_alive()
    }
}

/// Links devices `{prefix}-{i}` for every `i` of `range` as a person would, `concurrency` at a
/// time: create, `GET …/login` for the QR code, a sandbox phone scans it; then waits until the
/// gateway lists `range.end` devices of the prefix as `logged_in` (those linked before `range`
/// stay so). Returns how long it all took.
pub async fn link_devices(
    api: &Api,
    prefix: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<Duration> {
    let (first, n) = (range.start, range.end);
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "    … {} of {n} scanned after {:.0} s",
                    first + done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let results: Vec<Result<()>> = futures_util::stream::iter(range.clone())
        .map(|i| {
            let done = Arc::clone(&done);
            async move {
                let id = format!("{prefix}-{i}");
                api.create_device(&id).await?;
                link_one(api, &id).await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.abort();
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} devices could not be linked; first: {:#}",
            failed.len(),
            range.len(),
            failed[0]
        );
    }
    // Logged in is the gateway's word: the scan returns once the phone linked, the session
    // records `logged_in` a moment later.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ours = format!("{prefix}-");
    loop {
        let states = api.device_states().await?;
        let logged_in = states
            .iter()
            .filter(|(id, state)| id.starts_with(&ours) && state == "logged_in")
            .count();
        if logged_in >= n {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("only {logged_in} of {n} linked devices logged in within 60 s of the last scan");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shows device `id`'s QR code and scans it; a scan that fails (the code ran out on the way on
/// a loaded machine) is tried again with the next code, as a person would.
async fn link_one(api: &Api, id: &str) -> Result<()> {
    let mut last = anyhow!("no scan tried");
    for _ in 0..3 {
        api.login_qr(id).await?;
        match api.scan(id).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last.context(format!("linking {id}")))
}

/// Creates devices `{prefix}-0` … `{prefix}-{n-1}`, `concurrency` at a time.
pub async fn create_devices(api: &Api, prefix: &str, n: usize, concurrency: usize) -> Result<()> {
    let results: Vec<Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| async move { api.create_device(&format!("{prefix}-{i}")).await })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
