//! The children of a run: one throwaway PostgreSQL cluster, and per scenario a standalone
//! sandbox and one or more `wagate serve` processes. Every child is killed when its guard is
//! dropped, so a failed or panicking scenario leaves nothing running.

use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::oneshot;
use tokio_postgres::NoTls;
use uuid::Uuid;
use wagate_core::cluster::{APP_ROLE, Cluster, ClusterOptions, with_database};

/// How long a child may take to say where it listens before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM may take before the child is killed and the stop counts as failed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process, killed and reaped when dropped.
pub struct Proc {
    name: String,
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout piped (the caller reads it, see [`Proc::first_line`]) and
    /// stderr appended to `log`.
    fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening the log file {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first stdout line `find` accepts, and keeps reading stdout afterwards so
    /// the child never writes into a full pipe; every line is appended to the log file.
    async fn first_line<T: Send + 'static>(
        &mut self,
        find: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> Result<T> {
        let stdout = self.child.stdout.take().context("stdout was not piped")?;
        // The gateway logs to stdout: every line goes to the log file beside stderr's.
        let mut log = File::options()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening the log file {}", self.log.display()))?;
        let (found, wanted) = oneshot::channel();
        // A blocking read on a thread of its own: the pipe stays drained for the child's life.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(value) = find(&line)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send(value);
                }
            }
        });
        match tokio::time::timeout(START_TIMEOUT, wanted).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => bail!(
                "{} ended without saying where it listens; its log: {}",
                self.name,
                self.log.display()
            ),
            Err(_) => bail!(
                "{} did not say where it listens within {} s; its log: {}",
                self.name,
                START_TIMEOUT.as_secs(),
                self.log.display()
            ),
        }
    }

    /// SIGTERM, then waits for the child to end; how long that took and how it ended.
    pub async fn terminate(&mut self) -> Result<(Duration, ExitStatus)> {
        let started = Instant::now();
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid of a child we have not reaped yet, so it cannot be reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending SIGTERM to {}", self.name));
        }
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                return Ok((started.elapsed(), status));
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not stop within {} s of SIGTERM: killed",
                    self.name,
                    STOP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether it still runs (a child that died on its own is an error worth naming).
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log: {}",
                self.name,
                self.log.display()
            ),
            Err(e) => Err(e).with_context(|| format!("waiting for {}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server of the run, and a way to make a database per scenario on it.
pub struct Postgres {
    /// Kept for the run; its drop (and its watchdog, should the bench die) stops the server
    /// and deletes its directory.
    cluster: Cluster,
}

impl Postgres {
    /// Starts a throwaway cluster in the temporary directory from the system's PostgreSQL.
    pub async fn start(fsync: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("wagate-bench-pg-{}", Uuid::new_v4()));
        let cluster = Cluster::start(
            &dir,
            ClusterOptions {
                fsync,
                throwaway: true,
            },
        )
        .await
        .with_context(|| format!("starting PostgreSQL in {}", dir.display()))?;
        Ok(Self { cluster })
    }

    /// Creates database `name`, owned by the gateway's role, and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let admin = self.cluster.superuser_url();
        let (client, connection) = tokio_postgres::connect(&admin, NoTls)
            .await
            .context("connecting to PostgreSQL as its superuser")?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {APP_ROLE}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        drop(client);
        let _ = connection.await;
        Ok(with_database(&self.cluster.url(), name))
    }
}

/// A standalone `wagate-sandbox`: "WhatsApp" and its simulated phones.
pub struct SandboxProc {
    /// The process.
    pub proc: Proc,
    /// `ws://127.0.0.1:PORT/ws/chat`, what the gateway connects its devices to.
    pub ws_url: String,
    /// `http://127.0.0.1:PORT`, its control API.
    pub control_url: String,
}

impl SandboxProc {
    /// Starts `binary` on a free loopback port.
    pub async fn start(binary: &Path, log: &Path) -> Result<Self> {
        let mut command = Command::new(binary);
        command
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        let mut proc = Proc::spawn("wagate-sandbox", command, log)?;
        // It prints its websocket URL, and nothing else, on stdout.
        let ws_url = proc
            .first_line(|line| line.starts_with("ws://").then(|| line.trim().to_string()))
            .await?;
        let control_url = ws_url
            .strip_suffix("/ws/chat")
            .map(|base| base.replacen("ws://", "http://", 1))
            .with_context(|| format!("the sandbox printed an unexpected URL: {ws_url}"))?;
        Ok(Self {
            proc,
            ws_url,
            control_url,
        })
    }
}

/// How to start a gateway: everything but the moment.
#[derive(Clone)]
pub struct GatewaySpec {
    /// The `wagate` binary (built with the `sandbox` feature).
    pub binary: PathBuf,
    /// Its database.
    pub database_url: String,
    /// The sandbox's websocket URL.
    pub whatsapp_url: String,
    /// `user:password` of the default tenant.
    pub basic_auth: String,
    /// Where its stderr goes (appended, so a restart adds to the same file).
    pub log: PathBuf,
    /// Certificate authorities trusted for HTTPS webhook receivers: the bench receiver's.
    pub webhook_ca_file: PathBuf,
}

/// A running `wagate serve`.
pub struct GatewayProc {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The moment just before it was spawned.
    pub spawned_at: Instant,
}

impl GatewayProc {
    /// Spawns it on a free loopback port and waits until it says where it listens.
    pub async fn start(spec: &GatewaySpec) -> Result<Self> {
        let mut command = Command::new(&spec.binary);
        command
            .arg("serve")
            .args(["--database-url", &spec.database_url])
            .args(["--whatsapp-url", &spec.whatsapp_url])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--basic-auth", &spec.basic_auth])
            // The bench's webhook receiver listens on loopback.
            .arg("--webhook-allow-private")
            .arg("--webhook-ca-file")
            .arg(&spec.webhook_ca_file)
            .env("RUST_LOG", "warn")
            // Its log goes to a file: no colour codes.
            .env("NO_COLOR", "1");
        let spawned_at = Instant::now();
        let mut proc = Proc::spawn("wagate serve", command, &spec.log)?;
        let base = proc
            .first_line(|line| line.strip_prefix("listening on ").map(str::to_string))
            .await?;
        Ok(Self {
            proc,
            base,
            spawned_at,
        })
    }
}

/// Raises this process's open-file limit to its hard limit, so that it and the children it
/// starts (which inherit it) can hold a connection per device; returns the new soft limit.
pub fn raise_open_files_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we own; raising the soft limit to the hard one is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(limit.rlim_cur)
}

/// A process's resident set size in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS line in {path}"))?;
    Ok(kib * 1024)
}

/// The CPU time a process used so far, user and system (`utime + stime` of `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the
    // last `)`. utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}: {stat}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}: {stat}"))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}
