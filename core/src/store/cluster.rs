//! A private PostgreSQL cluster run from the system's server binaries: the embedded default
//! when no database URL is given, and the throwaway database of tests.
//!
//! PostgreSQL refuses to run as root, so as root the server binaries run as the `postgres` system
//! user through `runuser`. The server never outlives the process that started it: a small
//! watchdog shell, whose stdin is a pipe from this process, asks it to shut down when that pipe
//! closes, which also happens on `kill -9`.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_postgres::NoTls;

/// The superuser the cluster is made with, and the database [`Cluster::url`] names.
const USER: &str = "wagate";
const DATABASE: &str = "wagate";
/// Our settings, rewritten at every start and included from `postgresql.conf`.
const CONF_FILE: &str = "wagate.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'wagate.conf'";
const LOG_FILE: &str = "postgresql.log";
const PID_FILE: &str = "postmaster.pid";
/// Where distribution packages put the server binaries, one directory per major version.
const PACKAGE_DIR: &str = "/usr/lib/postgresql";
/// How long a start may keep retrying while the previous server's processes wind down.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// How to run a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Whether the server makes writes durable. Off (tests) also turns off synchronous commit
    /// and full-page writes: a crash may then lose or corrupt data.
    pub fsync: bool,
    /// Deletes the data directory once the server stopped, also when this process dies first.
    pub throwaway: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            port: None,
            fsync: true,
            throwaway: false,
        }
    }
}

/// Why a [`Cluster`] could not start or stop.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// No PostgreSQL server is installed.
    #[error(
        "no PostgreSQL server binaries found in {PACKAGE_DIR}/*/bin: install the `postgresql` package or set DATABASE_URL to an existing database"
    )]
    NoBinaries,
    /// `WAGATE_PG_BIN` names a directory without the server binaries.
    #[error(
        "WAGATE_PG_BIN={0} holds no initdb and pg_ctl: point it at a PostgreSQL bin directory, e.g. {PACKAGE_DIR}/16/bin, or unset it"
    )]
    NoBinariesIn(PathBuf),
    /// Running as root without a `postgres` user to run the server as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as: install the `postgresql` package, run wagate as another user, or set DATABASE_URL"
    )]
    NoPostgresUser,
    /// Running as root without `runuser`.
    #[error(
        "running PostgreSQL as the `postgres` user from root needs `runuser`: install util-linux, run wagate as another user, or set DATABASE_URL"
    )]
    NoRunuser,
    /// Another server runs on the data directory.
    #[error(
        "a PostgreSQL server (pid {pid}) is already running on {}: stop the other wagate using it or choose another data directory",
        .dir.display()
    )]
    AlreadyRunning {
        /// The data directory.
        dir: PathBuf,
        /// The running postmaster.
        pid: u32,
    },
    /// A file or process operation failed.
    #[error("could not {doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// The operating system's answer.
        source: io::Error,
    },
    /// `initdb` failed.
    #[error(
        "initdb failed in {}:\n{output}\nremove the directory if it is a half-made cluster, or choose another data directory",
        .dir.display()
    )]
    Initdb {
        /// The data directory.
        dir: PathBuf,
        /// What initdb printed.
        output: String,
    },
    /// The server did not start.
    #[error(
        "PostgreSQL did not start on {}:\n{log}\nthe whole log is in {LOG_FILE} there",
        .dir.display()
    )]
    Start {
        /// The data directory.
        dir: PathBuf,
        /// The end of the server log.
        log: String,
    },
    /// The server did not stop.
    #[error("PostgreSQL did not stop on {}: {output}", .dir.display())]
    Stop {
        /// The data directory.
        dir: PathBuf,
        /// What pg_ctl printed.
        output: String,
    },
    /// The `wagate` database could not be made.
    #[error(
        "could not create database `{DATABASE}` on the cluster at {}: {}",
        .dir.display(),
        super::describe(.source)
    )]
    CreateDatabase {
        /// The data directory.
        dir: PathBuf,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
    /// The blocking task running the server binaries did not finish.
    #[error("the task running PostgreSQL's binaries failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

fn io_error(doing: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let doing = doing.into();
    move |source| ClusterError::Io { doing, source }
}

/// A running private PostgreSQL server. Dropping it stops the server, blocking until it is
/// down; [`Cluster::stop`] does the same without blocking the async runtime.
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    port: u16,
    binaries: Binaries,
    watchdog: Option<Child>,
    throwaway: bool,
    running: bool,
}

/// How the server binaries are run.
#[derive(Debug)]
struct Binaries {
    dir: PathBuf,
    /// Set when running as root: the server runs as this user instead.
    as_user: Option<SystemUser>,
}

#[derive(Debug)]
struct SystemUser {
    uid: u32,
    gid: u32,
    runuser: PathBuf,
}

impl Cluster {
    /// Starts a server on `data_dir`, creating the cluster (superuser `wagate`, trust
    /// authentication, listening on 127.0.0.1 only) and the `wagate` database if missing.
    ///
    /// Takes about a second when the directory is new and fsync is off. A server left by a
    /// process that was killed is recovered from.
    pub async fn start(data_dir: &Path, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let data_dir = data_dir.to_path_buf();
        let cluster = tokio::task::spawn_blocking(move || Cluster::boot(data_dir, options))
            .await
            .map_err(ClusterError::Task)??;
        if let Err(e) = cluster.create_database().await {
            // A failed stop would only hide the cause.
            let _ = cluster.stop().await;
            return Err(e);
        }
        Ok(cluster)
    }

    /// `postgres://wagate@127.0.0.1:PORT/wagate`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Shuts the server down (fast: open sessions are ended) and waits until it is down.
    pub async fn stop(self) -> Result<(), ClusterError> {
        let mut cluster = self;
        tokio::task::spawn_blocking(move || cluster.shutdown())
            .await
            .map_err(ClusterError::Task)?
    }

    fn boot(data_dir: PathBuf, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let binaries = Binaries::find()?;
        fs::create_dir_all(&data_dir).map_err(io_error(format!(
            "create data directory {}",
            data_dir.display()
        )))?;
        let data_dir = data_dir.canonicalize().map_err(io_error(format!(
            "resolve data directory {}",
            data_dir.display()
        )))?;
        if let Some(user) = &binaries.as_user {
            user.take_over(&data_dir)?;
        }
        let mut cluster = Cluster {
            data_dir,
            port: 0,
            binaries,
            watchdog: None,
            throwaway: false,
            running: false,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb(options.fsync)?;
        }
        if let Some(pid) = cluster.postmaster() {
            return Err(ClusterError::AlreadyRunning {
                dir: cluster.data_dir.clone(),
                pid,
            });
        }
        cluster.remove_stale_locks()?;
        // Only now is the directory known to be no other server's to delete.
        cluster.throwaway = options.throwaway;
        cluster.start_server(&options)?;
        cluster.running = true;
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        Ok(cluster)
    }

    fn initdb(&self, fsync: bool) -> Result<(), ClusterError> {
        let mut args: Vec<&OsStr> = vec![
            "-D".as_ref(),
            self.data_dir.as_os_str(),
            "-U".as_ref(),
            USER.as_ref(),
            "--auth=trust".as_ref(),
            "--locale=C".as_ref(),
            "--encoding=UTF8".as_ref(),
        ];
        if !fsync {
            args.push("--no-sync".as_ref());
        }
        let output = self.run("initdb", &args)?;
        if !output.status.success() {
            return Err(ClusterError::Initdb {
                dir: self.data_dir.clone(),
                output: printed(&output),
            });
        }
        let conf = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| writeln!(f, "\n{INCLUDE_LINE}"))
            .map_err(io_error(format!("extend {}", conf.display())))
    }

    /// Starts the server, retrying while a killed predecessor's processes still hold shared
    /// memory, or on another port when the one picked was taken meanwhile.
    fn start_server(&mut self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            self.port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            self.write_settings(options.fsync)?;
            let log_path = self.data_dir.join(LOG_FILE);
            let log_start = fs::metadata(&log_path).map_or(0, |m| m.len());
            let args: [&OsStr; 9] = [
                "start".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                log_path.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-s".as_ref(),
            ];
            let output = self.run("pg_ctl", &args)?;
            if output.status.success() {
                return Ok(());
            }
            let log = log_since(&log_path, log_start);
            let transient = log.contains("is still in use")
                || (options.port.is_none() && log.contains("Address already in use"));
            if !transient || Instant::now() > deadline {
                let log = if log.trim().is_empty() {
                    printed(&output)
                } else {
                    log
                };
                return Err(ClusterError::Start {
                    dir: self.data_dir.clone(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn write_settings(&self, fsync: bool) -> Result<(), ClusterError> {
        // Unix socket paths are limited to about 100 bytes and are awkward to quote: the socket
        // is a convenience for psql, so it is left out when the path does not fit.
        let socket_dir = self
            .data_dir
            .to_str()
            .filter(|dir| dir.len() < 80 && !dir.contains(['\'', '"', ',', '\\']))
            .unwrap_or("");
        let mut settings = format!(
            "# Written by wagate at every start: edits here are lost.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{socket_dir}'\n",
            self.port
        );
        if !fsync {
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let path = self.data_dir.join(CONF_FILE);
        fs::write(&path, settings).map_err(io_error(format!("write {}", path.display())))?;
        if let Some(user) = &self.binaries.as_user {
            user.own(&path)?;
        }
        Ok(())
    }

    /// The live server on this data directory, if any: the pid in its pid file, when that
    /// process works in this directory (a dead or zombie pid, or one reused by another program,
    /// does not).
    fn postmaster(&self) -> Option<u32> {
        let contents = fs::read_to_string(self.data_dir.join(PID_FILE)).ok()?;
        let pid = contents.lines().next()?.trim().parse().ok()?;
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        (cwd == self.data_dir).then_some(pid)
    }

    /// Removes the lock files of a server that is gone. PostgreSQL would refuse to start while
    /// their pid exists, and in a container a killed server's pid lingers as a zombie or is
    /// reused. Old processes still attached to the shared memory are caught by PostgreSQL's own
    /// check, which does not need these files.
    fn remove_stale_locks(&self) -> Result<(), ClusterError> {
        let entries = fs::read_dir(&self.data_dir)
            .map_err(io_error(format!("list {}", self.data_dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == PID_FILE || name.starts_with(".s.PGSQL.") {
                tracing::info!(file = %entry.path().display(), "removing a lock file of a server that is gone");
                fs::remove_file(entry.path())
                    .map_err(io_error(format!("remove {}", entry.path().display())))?;
            }
        }
        Ok(())
    }

    /// A shell that waits for EOF on its stdin, a pipe held by this process, then shuts the
    /// server down and, for a throwaway cluster, deletes the data directory.
    fn spawn_watchdog(&self) -> Result<Child, ClusterError> {
        const SCRIPT: &str = r#"
trap '' INT TERM HUP
read -r _
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd")" = "$1" ]; then kill -INT "$pid"; fi
if [ "$2" = throwaway ]; then
    i=0
    while [ -e "$1/postmaster.pid" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    rm -rf -- "$1"
fi
"#;
        let mode = if self.throwaway { "throwaway" } else { "keep" };
        Command::new("/bin/sh")
            .args(["-c", SCRIPT, "wagate-postgres-watchdog"])
            .arg(&self.data_dir)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("start the PostgreSQL watchdog shell"))
    }

    async fn create_database(&self) -> Result<(), ClusterError> {
        let failed = |source| ClusterError::CreateDatabase {
            dir: self.data_dir.clone(),
            source,
        };
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={USER} dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .await
        .map_err(failed)?;
        let connection = tokio::spawn(connection);
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)",
                &[&DATABASE],
            )
            .await
            .map_err(failed)?
            .get(0);
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await
                .map_err(failed)?;
        }
        drop(client);
        // The connection ends once its client is gone; its outcome no longer matters.
        let _ = connection.await;
        Ok(())
    }

    /// Stops the watchdog, then the server, then deletes a throwaway data directory. Safe to
    /// call twice.
    fn shutdown(&mut self) -> Result<(), ClusterError> {
        if let Some(mut watchdog) = self.watchdog.take() {
            // Killing it closes nothing of the server; it only must not act after we did.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if std::mem::take(&mut self.running) && self.postmaster().is_some() {
            let args: [&OsStr; 8] = [
                "stop".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
            ];
            let output = self.run("pg_ctl", &args)?;
            if !output.status.success() {
                return Err(ClusterError::Stop {
                    dir: self.data_dir.clone(),
                    output: printed(&output),
                });
            }
        }
        if std::mem::take(&mut self.throwaway) {
            match fs::remove_dir_all(&self.data_dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error(format!(
                        "delete throwaway data directory {}",
                        self.data_dir.display()
                    ))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs a server binary to completion, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Output, ClusterError> {
        let exe = self.binaries.dir.join(program);
        let mut command = match &self.binaries.as_user {
            Some(user) => {
                let mut c = Command::new(&user.runuser);
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // The caller's directory may be one the postgres user cannot enter.
        command
            .args(args)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(format!("run {}", exe.display())))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("{e}");
        }
    }
}

impl Binaries {
    /// `$WAGATE_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
    fn find() -> Result<Binaries, ClusterError> {
        let has_binaries =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        let dir = match std::env::var_os("WAGATE_PG_BIN") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !has_binaries(&dir) {
                    return Err(ClusterError::NoBinariesIn(dir));
                }
                dir
            }
            None => fs::read_dir(PACKAGE_DIR)
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let version: Vec<u32> = entry
                        .file_name()
                        .to_str()?
                        .split('.')
                        .map(|part| part.parse().ok())
                        .collect::<Option<_>>()?;
                    let bin = entry.path().join("bin");
                    has_binaries(&bin).then_some((version, bin))
                })
                .max()
                .map(|(_, bin)| bin)
                .ok_or(ClusterError::NoBinaries)?,
        };
        let as_user = if effective_uid() == Some(0) {
            Some(SystemUser::postgres()?)
        } else {
            None
        };
        Ok(Binaries { dir, as_user })
    }
}

impl SystemUser {
    fn postgres() -> Result<SystemUser, ClusterError> {
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let (uid, gid) = passwd
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                if fields.next()? != "postgres" {
                    return None;
                }
                let uid = fields.nth(1)?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some((uid, gid))
            })
            .ok_or(ClusterError::NoPostgresUser)?;
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .ok_or(ClusterError::NoRunuser)?;
        Ok(SystemUser { uid, gid, runuser })
    }

    /// Gives the user the data directory and a way to reach it.
    fn take_over(&self, data_dir: &Path) -> Result<(), ClusterError> {
        self.own(data_dir)?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("restrict {}", data_dir.display())))?;
        for dir in data_dir.ancestors().skip(1) {
            let meta = fs::metadata(dir).map_err(io_error(format!("inspect {}", dir.display())))?;
            let mode = meta.mode();
            let search_bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if mode & search_bit == 0 {
                // Search permission only: others may pass through, not list.
                fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o001))
                    .map_err(io_error(format!("make {} traversable", dir.display())))?;
                tracing::warn!(
                    "made {} traversable by other users (o+x) so that the postgres user reaches its data directory",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    fn own(&self, path: &Path) -> Result<(), ClusterError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(io_error(format!(
            "give {} to the postgres user",
            path.display()
        )))
    }
}

/// Our effective user id, from `/proc` (`None` where there is no `/proc`).
fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A port free on 127.0.0.1 right now; the server may still lose it to a race, then we retry.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("find a free port on 127.0.0.1"))
}

/// What a command printed, for an error message.
fn printed(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    text.trim().to_string()
}

/// The last lines the server logged since the log was `offset` bytes long.
fn log_since(path: &Path, offset: u64) -> String {
    let log = fs::read(path).unwrap_or_default();
    let new = String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default());
    let lines: Vec<&str> = new.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
