//! A private PostgreSQL cluster run from the system's server binaries: the embedded default
//! when no database URL is given, and the throwaway database of tests.
//!
//! Only the user that owns the data directory reaches the server: it listens on no TCP port,
//! only on a Unix socket in a directory no one else may enter (the data directory itself, or a
//! private directory under the temporary directory when that path is too long for a socket).
//! The gateway connects as [`APP_ROLE`], which owns wagate's database and nothing else; the
//! superuser is left for administration through the same socket. A data directory made before
//! this rule (TCP with trust, everything owned by the superuser) is brought under it at start.
//!
//! PostgreSQL refuses to run as root, so as root the server binaries run as the `postgres` system
//! user through `runuser`. The server never outlives the process that started it:
//! - a small watchdog shell, started before the server, whose stdin is a pipe from this process,
//!   asks it to shut down when that pipe closes, which also happens on `kill -9`;
//! - the process holds an exclusive lock on `DATA_DIR.lock` (beside the data directory) while it
//!   runs the server, so the next start knows a server it finds running belongs to a dead
//!   wagate, and stops it.

mod binaries;
mod process;
mod system_user;
mod watchdog;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_postgres::NoTls;

use crate::store::describe;
use crate::store::secrets::random_alphanumeric;
use binaries::{Binaries, PACKAGE_DIR};
use process::stop_processes_using;
use watchdog::Watchdog;

/// The superuser: the one clusters were made with, kept for administration over the socket.
const SUPERUSER: &str = "wagate";
/// The role the gateway connects as: no superuser, it owns [`DATABASE`] and what is in it.
pub const APP_ROLE: &str = "wagate_app";
const DATABASE: &str = "wagate";
/// The port number only names the socket file (`.s.PGSQL.5432`): nothing listens on TCP.
const PORT: u16 = 5432;
/// Our settings, rewritten at every start and included from `postgresql.conf`.
const CONF_FILE: &str = "wagate.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'wagate.conf'";
/// A token naming the start that runs the server, for its watchdog.
const OWNER_FILE: &str = "wagate.owner";
const LOG_FILE: &str = "postgresql.log";
const PID_FILE: &str = "postmaster.pid";
/// How long a start may keep retrying while the previous server's processes wind down, and how
/// long a process that shares the cluster waits for the one starting it.
const START_PATIENCE: Duration = Duration::from_secs(10);
/// Longest socket directory: a socket path (directory, `/.s.PGSQL.5432`) must fit in 107 bytes.
const MAX_SOCKET_DIR: usize = 90;

/// Only the server's user may connect, and only through the socket. Rewritten at every start, so
/// that a data directory from before this rule is closed before its server starts.
const HBA: &str = "# Written by wagate at every start: edits here are lost.\n\
# Only the socket, in a directory only the server's user may enter; no TCP.\n\
local all all trust\n";

/// How to run a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Whether the server makes writes durable. Off (tests) also turns off synchronous commit
    /// and full-page writes: a crash may then lose or corrupt data.
    pub fsync: bool,
    /// Deletes the data directory once the server stopped, also when this process dies first.
    pub throwaway: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
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
    /// Another live wagate runs a server on the data directory.
    #[error(
        "another wagate runs PostgreSQL (pid {pid}) on {}: stop it or choose another data directory",
        .dir.display()
    )]
    AlreadyRunning {
        /// The data directory.
        dir: PathBuf,
        /// The running postmaster.
        pid: u32,
    },
    /// Another live wagate is starting a server on the data directory and did not finish.
    #[error(
        "another wagate is starting PostgreSQL on {} and did not finish within {}s: try again once it serves",
        .0.display(),
        START_PATIENCE.as_secs()
    )]
    StillStarting(PathBuf),
    /// A server runs on the data directory that no wagate started: it is left alone.
    #[error(
        "a PostgreSQL server (pid {pid}) that wagate did not start runs on {}: stop it (pg_ctl stop -D {}) or choose another data directory",
        .dir.display(),
        .dir.display()
    )]
    ForeignServer {
        /// The data directory.
        dir: PathBuf,
        /// The running postmaster.
        pid: u32,
    },
    /// The socket directory exists but others could enter it, or it is not ours.
    #[error(
        "the socket directory {} is not private to the server's user (it must be a directory of that user with mode 0700): remove it",
        .0.display()
    )]
    UnsafeSocketDir(PathBuf),
    /// A file or process operation failed.
    #[error("could not {doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// The operating system's answer.
        source: io::Error,
    },
    /// The data directory holds files but no cluster.
    #[error(
        "{} holds files but no PostgreSQL cluster: move them away or choose another data directory",
        .0.display()
    )]
    NotACluster(PathBuf),
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
    /// The `wagate` database or its role could not be set up.
    #[error(
        "could not set up database `{DATABASE}` and role `{APP_ROLE}` on the cluster at {}: {}",
        .dir.display(),
        describe(.source)
    )]
    Setup {
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

/// A private PostgreSQL server: one this process started (dropping it stops the server,
/// blocking until it is down; [`Cluster::stop`] does the same without blocking the async
/// runtime), or, from [`Cluster::open`], one another live wagate runs (left running).
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    binaries: Binaries,
    /// Held while this process runs the server: a live owner's lock tells the next start that
    /// the server is not an orphan.
    lock: Option<File>,
    watchdog: Option<Watchdog>,
    throwaway: bool,
    /// Whether this process started the server, and so stops it.
    owned: bool,
}

/// What [`Cluster::boot`] does when another live wagate runs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    Refuse,
    Attach,
}

impl Cluster {
    /// Starts a server on `data_dir`, creating the cluster and the `wagate` database if missing
    /// and bringing an existing one under the access rule of this module.
    ///
    /// Takes about a second when the directory is new and fsync is off. A server left by a
    /// wagate that was killed is stopped first; one that a live wagate runs is
    /// [`ClusterError::AlreadyRunning`].
    pub async fn start(data_dir: &Path, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        Self::boot_async(data_dir, options, Sharing::Refuse).await
    }

    /// Like [`Cluster::start`], but when another live wagate runs the server on `data_dir`,
    /// connects to that one instead (and leaves it running): for one-off commands beside
    /// `serve`.
    pub async fn open(data_dir: &Path, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        Self::boot_async(data_dir, options, Sharing::Attach).await
    }

    async fn boot_async(
        data_dir: &Path,
        options: ClusterOptions,
        sharing: Sharing,
    ) -> Result<Cluster, ClusterError> {
        let data_dir = data_dir.to_path_buf();
        let cluster =
            tokio::task::spawn_blocking(move || Cluster::boot(data_dir, options, sharing))
                .await
                .map_err(ClusterError::Task)??;
        if cluster.owned
            && let Err(e) = cluster.set_up_database().await
        {
            // A failed stop would only hide the cause.
            let _ = cluster.stop().await;
            return Err(e);
        }
        Ok(cluster)
    }

    /// The gateway's connection: role [`APP_ROLE`] on database `wagate`, through the socket.
    pub fn url(&self) -> String {
        self.url_as(APP_ROLE, DATABASE)
    }

    /// The superuser on database `postgres`, through the socket: for administration and tests.
    pub fn superuser_url(&self) -> String {
        self.url_as(SUPERUSER, "postgres")
    }

    fn url_as(&self, role: &str, database: &str) -> String {
        format!(
            "postgres://{role}@{}:{PORT}/{database}",
            percent_encode(&self.socket_dir.to_string_lossy())
        )
    }

    /// The directory holding the server's socket (`psql -h DIR`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Shuts the server down (fast: open sessions are ended) and waits until it is down; a
    /// server another process runs is left running.
    pub async fn stop(self) -> Result<(), ClusterError> {
        let mut cluster = self;
        tokio::task::spawn_blocking(move || cluster.shutdown())
            .await
            .map_err(ClusterError::Task)?
    }

    fn boot(
        data_dir: PathBuf,
        options: ClusterOptions,
        sharing: Sharing,
    ) -> Result<Cluster, ClusterError> {
        let binaries = Binaries::find()?;
        let data_dir = resolve(&data_dir)?;
        let mut cluster = Cluster {
            socket_dir: data_dir.clone(),
            data_dir,
            binaries,
            lock: None,
            watchdog: None,
            throwaway: false,
            owned: false,
        };
        let deadline = Instant::now() + START_PATIENCE;
        let lock = loop {
            match cluster.try_lock()? {
                Some(lock) => break lock,
                None if sharing == Sharing::Refuse => {
                    if let Some(pid) = cluster.postmaster() {
                        return Err(ClusterError::AlreadyRunning {
                            dir: cluster.data_dir.clone(),
                            pid,
                        });
                    }
                    // No server: another wagate is starting one, or the lock's holder is going
                    // (a dead wagate's watchdog still exiting, or a child of this process
                    // between its fork and its exec); either settles within the patience.
                    if Instant::now() > deadline {
                        return Err(ClusterError::StillStarting(cluster.data_dir.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => {
                    if let Some(socket_dir) = cluster.serving_socket_dir() {
                        cluster.socket_dir = socket_dir;
                        return Ok(cluster);
                    }
                    if Instant::now() > deadline {
                        return Err(ClusterError::StillStarting(cluster.data_dir.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        cluster.lock = Some(lock);
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.create(options.fsync)?;
        }
        if let Some(user) = &cluster.binaries.as_user {
            user.take_over(&cluster.data_dir)?;
        }
        cluster.stop_orphan()?;
        cluster.socket_dir = cluster.prepare_socket_dir()?;
        remove_stale_locks(&cluster.data_dir)?;
        remove_stale_locks(&cluster.socket_dir)?;
        // Names this start to its watchdog, which must not act once another start took over.
        let token = format!("{}-{}", std::process::id(), random_alphanumeric(16));
        cluster.write_settings(options.fsync, &token)?;
        // Only now is the directory known to be no other server's to delete.
        cluster.throwaway = options.throwaway;
        // Before the server: a death from here on leaves it to the watchdog.
        cluster.watchdog = Some(Watchdog::start(
            &cluster.data_dir,
            cluster.throwaway,
            &token,
        )?);
        cluster.owned = true;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// `DATA_DIR.lock`, beside the data directory: it exists before the cluster does.
    fn lock_path(&self) -> PathBuf {
        let mut name = self.data_dir.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The exclusive lock on the data directory, or `None` while a live process holds it.
    fn try_lock(&self) -> Result<Option<File>, ClusterError> {
        let path = self.lock_path();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("open {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_error(format!("lock {}", path.display()))(e)),
        }
    }

    /// The socket directory of the server running here, once it accepts connections.
    fn serving_socket_dir(&self) -> Option<PathBuf> {
        self.postmaster()?;
        let contents = fs::read_to_string(self.data_dir.join(PID_FILE)).ok()?;
        // Line 5 is the first socket directory; line 8 the status, `ready` once it serves.
        let lines: Vec<&str> = contents.lines().collect();
        let dir = lines.get(4).filter(|dir| !dir.is_empty())?;
        (lines.get(7).map(|s| s.trim()) == Some("ready")).then(|| PathBuf::from(dir))
    }

    /// Stops a server found running while we hold the lock: its wagate died without stopping
    /// it (say, killed while the server was starting). Only a server of ours is stopped: one
    /// without our settings file was started by someone else and is refused.
    fn stop_orphan(&self) -> Result<(), ClusterError> {
        let Some(pid) = self.postmaster() else {
            return Ok(());
        };
        if !self.data_dir.join(OWNER_FILE).exists() {
            return Err(ClusterError::ForeignServer {
                dir: self.data_dir.clone(),
                pid,
            });
        }
        tracing::warn!(
            pid,
            dir = %self.data_dir.display(),
            "stopping the PostgreSQL server a wagate that died left running"
        );
        self.stop_server()
    }

    /// Makes the cluster in a directory of its own beside the data directory, then renames it
    /// into place: a start killed meanwhile (its `initdb` may even go on) leaves no half-made
    /// cluster where the next start looks, only a leftover that start removes.
    fn create(&self, fsync: bool) -> Result<(), ClusterError> {
        let parent = self.data_dir.parent().unwrap_or(Path::new("/"));
        let name = self
            .data_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let leftover_prefix = format!(".{name}.initdb-");
        for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&leftover_prefix)
            {
                tracing::info!(dir = %entry.path().display(), "removing a cluster a killed start left half-made");
                // The killed start's initdb may still be writing there; it is stopped first, or
                // it would leave the directory behind again.
                stop_processes_using(&entry.path());
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let fresh = parent.join(format!("{leftover_prefix}{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(io_error(format!("create {}", fresh.display())))?;
        if let Some(user) = &self.binaries.as_user {
            user.take_over(&fresh)?;
        }
        let mut args: Vec<&OsStr> = vec![
            "-D".as_ref(),
            fresh.as_os_str(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "--auth=trust".as_ref(),
            "--locale=C".as_ref(),
            "--encoding=UTF8".as_ref(),
        ];
        if !fsync {
            args.push("--no-sync".as_ref());
        }
        let output = self.binaries.run_in(parent, "initdb", &args)?;
        if !output.status.success() {
            let _ = fs::remove_dir_all(&fresh);
            return Err(ClusterError::Initdb {
                dir: self.data_dir.clone(),
                output: printed(&output),
            });
        }
        let conf = fresh.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| writeln!(f, "\n{INCLUDE_LINE}"))
            .map_err(io_error(format!("extend {}", conf.display())))?;
        // An empty directory (made by hand, or by an earlier wagate) gives way; anything else in
        // it is someone's and stays.
        match fs::remove_dir(&self.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = fs::remove_dir_all(&fresh);
                return Err(ClusterError::NotACluster(self.data_dir.clone()));
            }
        }
        fs::rename(&fresh, &self.data_dir).map_err(io_error(format!(
            "move the new cluster into {}",
            self.data_dir.display()
        )))
    }

    /// The data directory when a socket path in it fits, else a private directory of the
    /// server's user under the temporary directory, named for the data directory.
    fn prepare_socket_dir(&self) -> Result<PathBuf, ClusterError> {
        let usable = |dir: &Path| {
            dir.to_str()
                .is_some_and(|dir| dir.len() <= MAX_SOCKET_DIR && !dir.contains([',', '\'', '\\']))
        };
        if usable(&self.data_dir) {
            return Ok(self.data_dir.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "wagate-pg-{:016x}",
            fnv1a(self.data_dir.as_os_str().as_encoded_bytes())
        ));
        if !usable(&dir) {
            return Err(ClusterError::UnsafeSocketDir(dir));
        }
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                if let Some(user) = &self.binaries.as_user {
                    user.own(&dir)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(format!("create {}", dir.display()))(e)),
        }
        // Someone else may have made it first: only a private directory of the server's user
        // will do.
        let meta =
            fs::symlink_metadata(&dir).map_err(io_error(format!("inspect {}", dir.display())))?;
        let server_uid = fs::metadata(&self.data_dir)
            .map_err(io_error(format!("inspect {}", self.data_dir.display())))?
            .uid();
        if !meta.is_dir() || meta.uid() != server_uid || meta.mode() & 0o077 != 0 {
            return Err(ClusterError::UnsafeSocketDir(dir));
        }
        Ok(dir)
    }

    /// Starts the server, retrying while a killed predecessor's processes still hold shared
    /// memory, or stopping the predecessor itself when it came up meanwhile.
    fn start_server(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
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
            if Instant::now() > deadline {
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
            if log.contains("is still in use") {
                std::thread::sleep(Duration::from_millis(200));
            } else if self.postmaster().is_some() {
                // A dead wagate's pg_ctl started its server after we looked: ours could not.
                self.stop_orphan()?;
            } else {
                return Err(ClusterError::Start {
                    dir: self.data_dir.clone(),
                    log: if log.trim().is_empty() {
                        printed(&output)
                    } else {
                        log
                    },
                });
            }
        }
    }

    fn write_settings(&self, fsync: bool, token: &str) -> Result<(), ClusterError> {
        let mut settings = format!(
            "# Written by wagate at every start: edits here are lost.\n\
             listen_addresses = ''\n\
             port = {PORT}\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\n\
             hba_file = 'pg_hba.conf'\n",
            self.socket_dir.display()
        );
        if !fsync {
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        self.write_file(CONF_FILE, &settings)?;
        self.write_file("pg_hba.conf", HBA)?;
        self.write_file(OWNER_FILE, &format!("{token}\n"))
    }

    /// Writes a file of the data directory, owned by the server's user.
    fn write_file(&self, name: &str, contents: &str) -> Result<(), ClusterError> {
        let path = self.data_dir.join(name);
        fs::write(&path, contents).map_err(io_error(format!("write {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(io_error(format!("restrict {}", path.display())))?;
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
        (process::working_dir(pid)? == self.data_dir).then_some(pid)
    }

    /// Makes [`APP_ROLE`] (login, nothing more) and gives it the `wagate` database and every
    /// table in it; a cluster from before the role existed had them all owned by the superuser.
    async fn set_up_database(&self) -> Result<(), ClusterError> {
        let failed = |source| ClusterError::Setup {
            dir: self.data_dir.clone(),
            source,
        };
        let admin = connect(&self.superuser_url()).await.map_err(failed)?;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN
                     IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                         CREATE ROLE {APP_ROLE} LOGIN;
                     END IF;
                 END $$;
                 ALTER ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;"
            ))
            .await
            .map_err(failed)?;
        let exists: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)",
                &[&DATABASE],
            )
            .await
            .map_err(failed)?
            .get(0);
        let database = if exists {
            format!("ALTER DATABASE {DATABASE} OWNER TO {APP_ROLE}")
        } else {
            format!("CREATE DATABASE {DATABASE} OWNER {APP_ROLE}")
        };
        admin.batch_execute(&database).await.map_err(failed)?;
        drop(admin);

        let url = self.url_as(SUPERUSER, DATABASE);
        let admin = connect(&url).await.map_err(failed)?;
        // Altering a table's owner takes its indexes and the sequences of its columns along.
        admin
            .batch_execute(&format!(
                "ALTER SCHEMA public OWNER TO {APP_ROLE};
                 DO $$
                 DECLARE
                     object record;
                 BEGIN
                     FOR object IN
                         SELECT c.oid::regclass AS name FROM pg_class c
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                           AND c.relowner <> '{APP_ROLE}'::regrole
                     LOOP
                         EXECUTE format('ALTER TABLE %s OWNER TO {APP_ROLE}', object.name);
                     END LOOP;
                     FOR object IN
                         SELECT c.oid::regclass AS name FROM pg_class c
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'public' AND c.relkind = 'S'
                           AND c.relowner <> '{APP_ROLE}'::regrole
                           AND NOT EXISTS (
                               SELECT FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                 AND d.deptype IN ('a', 'i'))
                     LOOP
                         EXECUTE format('ALTER SEQUENCE %s OWNER TO {APP_ROLE}', object.name);
                     END LOOP;
                 END $$;"
            ))
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Stops the watchdog, then the server, then deletes a throwaway data directory. Safe to
    /// call twice; does nothing to a server another process runs.
    fn shutdown(&mut self) -> Result<(), ClusterError> {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stop();
        }
        if std::mem::take(&mut self.owned) && self.postmaster().is_some() {
            self.stop_server()?;
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
            // Nobody waits on a throwaway directory's lock; a socket directory of its own is
            // empty once the server is down.
            let _ = fs::remove_file(self.lock_path());
            if self.socket_dir != self.data_dir {
                let _ = fs::remove_dir(&self.socket_dir);
            }
        }
        self.lock = None;
        Ok(())
    }

    /// `pg_ctl stop -m fast`, waiting until the server is down.
    fn stop_server(&self) -> Result<(), ClusterError> {
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
        if !output.status.success() && self.postmaster().is_some() {
            return Err(ClusterError::Stop {
                dir: self.data_dir.clone(),
                output: printed(&output),
            });
        }
        Ok(())
    }

    /// Runs a server binary to completion in the data directory, as the `postgres` user when
    /// we are root.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Output, ClusterError> {
        self.binaries.run_in(&self.data_dir, program, args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("{e}");
        }
    }
}

/// Removes the lock files of a server that is gone from `dir` (the data or socket directory).
/// PostgreSQL would refuse to start while their pid exists, and in a container a killed
/// server's pid lingers as a zombie or is reused. Old processes still attached to the shared
/// memory are caught by PostgreSQL's own check, which does not need these files.
fn remove_stale_locks(dir: &Path) -> Result<(), ClusterError> {
    let entries = fs::read_dir(dir).map_err(io_error(format!("list {}", dir.display())))?;
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

/// `data_dir` made absolute through its existing parent, which is created if missing; the
/// data directory itself may not exist yet.
fn resolve(data_dir: &Path) -> Result<PathBuf, ClusterError> {
    // The server's working directory is the resolved path, which `postmaster` compares with.
    if let Ok(resolved) = data_dir.canonicalize() {
        return Ok(resolved);
    }
    let name = data_dir.file_name().ok_or_else(|| ClusterError::Io {
        doing: format!("use {} as a data directory", data_dir.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "it names no directory"),
    })?;
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(io_error(format!("create {}", parent.display())))?;
    let parent = parent
        .canonicalize()
        .map_err(io_error(format!("resolve {}", parent.display())))?;
    Ok(parent.join(name))
}

/// A connection whose driver runs until the client is dropped.
async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    // The connection ends once its client is gone; its outcome no longer matters then.
    tokio::spawn(connection);
    Ok(client)
}

/// The PostgreSQL URL `url` with its database name replaced by `database`: the same server,
/// role and options, another database (the benchmarks and tests give each run its own).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{database}{query}", &base[..path])
}

/// `text` as a URL host: a socket directory's slashes and everything else outside the
/// unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// FNV-1a: a stable name for a data directory's socket directory, the same in every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn another_database_keeps_the_server_role_and_options() {
        assert_eq!(
            with_database(
                "postgres://app@%2Ftmp%2Fs:5432/wagate?sslmode=disable",
                "t_1"
            ),
            "postgres://app@%2Ftmp%2Fs:5432/t_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://app@localhost", "t_2"),
            "postgres://app@localhost/t_2"
        );
    }
}
