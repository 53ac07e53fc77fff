//! The plugin host: shared libraries loaded at start (see the `wagate-plugin` crate for the
//! ABI), each fed every event on its own thread through a bounded queue, so a slow or failing
//! plugin never stalls the engine.
//!
//! Invariants:
//! - A plugin is loaded once and never unloaded; only its worker thread calls into it after
//!   `init`.
//! - The engine never waits for a plugin: events are offered to each queue without blocking, and
//!   an event that finds a queue full is dropped and counted.
//! - Every event a plugin gets is the recorded wire JSON, in the order it was recorded.

// Loading and calling a shared library is unsafe by nature: all of it is in this module.
#[allow(unsafe_code)]
mod library;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use wagate_plugin::{ErrorBuf, Status};

use crate::events::EventBus;

/// Events a plugin's queue holds when its configuration names no other size.
pub const DEFAULT_QUEUE: usize = 1024;
/// How often the counters are logged while they change.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A plugin that could not be started; each is a start-up error naming the file.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The file does not exist.
    #[error("plugin {0} not found: check the path in WAGATE_PLUGINS or the plugin config file")]
    NotFound(PathBuf),
    /// The file is not a loadable library.
    #[error("plugin {path} could not be loaded: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The library has no entry symbol.
    #[error(
        "plugin {0} has no `wagate_plugin_entry` symbol: is it a wagate plugin? build it with wagate_plugin::export_plugin!"
    )]
    MissingSymbol(PathBuf),
    /// The plugin was built for another ABI.
    #[error(
        "plugin {path} speaks plugin ABI version {plugin}, this wagate speaks version {host}: rebuild the plugin against a matching wagate-plugin"
    )]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// The plugin's ABI version.
        plugin: u32,
        /// The gateway's ABI version.
        host: u32,
    },
    /// The plugin refused to start.
    #[error("plugin {name} ({path}) did not start: {reason}")]
    Init {
        /// The file.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// What it said.
        reason: String,
    },
    /// The plugin configuration is unusable.
    #[error("the plugin configuration {source_name} is not usable: {reason}")]
    Config {
        /// `WAGATE_PLUGINS` or the config file's path.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin's thread could not be started.
    #[error("the thread of plugin {name} could not be started: {reason}")]
    Thread {
        /// The plugin's name.
        name: String,
        /// What the system said.
        reason: String,
    },
}

/// One plugin to load.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The shared library.
    pub path: PathBuf,
    /// Its configuration, handed to its `init` as JSON.
    #[serde(default = "empty_config")]
    pub config: serde_json::Value,
    /// How many events may wait for it before new ones are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn empty_config() -> serde_json::Value {
    serde_json::json!({})
}

fn default_queue() -> usize {
    DEFAULT_QUEUE
}

impl PluginSpec {
    /// The plugins of `WAGATE_PLUGINS`: comma-separated paths, each with an empty config.
    pub fn from_list(list: &str) -> Vec<PluginSpec> {
        list.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| PluginSpec {
                path: PathBuf::from(p),
                config: empty_config(),
                queue: DEFAULT_QUEUE,
            })
            .collect()
    }

    /// The plugins of a config file: a JSON array of `{"path", "config"?, "queue"?}`.
    pub fn from_file(path: &Path) -> Result<Vec<PluginSpec>, PluginError> {
        let invalid = |reason: String| PluginError::Config {
            source_name: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let specs: Vec<PluginSpec> = serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "{e}: expected a JSON array of {{\"path\": \"…\", \"config\": {{…}}, \"queue\": 1024}}"
            ))
        })?;
        if let Some(zero) = specs.iter().find(|s| s.queue == 0) {
            return Err(invalid(format!(
                "plugin {} has queue 0: use at least 1",
                zero.path.display()
            )));
        }
        Ok(specs)
    }
}

/// A plugin's counters, written by its thread and the feeder, read by anyone.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    dropped: AtomicU64,
}

/// What a plugin is and how it has fared, for logs and `GET /plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStats {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its file.
    pub path: PathBuf,
    /// Events its queue holds at most.
    pub queue: usize,
    /// Events it handled.
    pub delivered: u64,
    /// Events it reported failing.
    pub failed: u64,
    /// Events it panicked on.
    pub panicked: u64,
    /// Events dropped because its queue was full.
    pub dropped: u64,
}

/// What is known of one running plugin; shared with whoever reads the counters.
#[derive(Debug)]
struct PluginInfo {
    name: String,
    version: String,
    path: PathBuf,
    queue: usize,
    counters: Counters,
}

impl PluginInfo {
    fn stats(&self) -> PluginStats {
        let c = &self.counters;
        PluginStats {
            name: self.name.clone(),
            version: self.version.clone(),
            path: self.path.clone(),
            queue: self.queue,
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A read-only view of every plugin's counters (for `GET /plugins`).
#[derive(Debug, Clone, Default)]
pub struct PluginCounters(Arc<Vec<PluginInfo>>);

impl PluginCounters {
    /// Every plugin's counters, in configuration order.
    pub fn stats(&self) -> Vec<PluginStats> {
        self.0.iter().map(PluginInfo::stats).collect()
    }
}

/// The loaded plugins, their threads and the task that feeds them.
pub struct PluginHost {
    info: Arc<Vec<PluginInfo>>,
    queues: Vec<SyncSender<Arc<[u8]>>>,
    threads: Vec<ThreadHandle<()>>,
    feeder: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.counters().stats())
            .finish_non_exhaustive()
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.take() {
            feeder.abort();
        }
    }
}

/// Offers an event to a plugin's queue without waiting; a full queue drops it.
fn offer(queue: &SyncSender<Arc<[u8]>>, info: &PluginInfo, event: &Arc<[u8]>) {
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        queue.try_send(Arc::clone(event))
    {
        info.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl PluginHost {
    /// A host with no plugins.
    pub fn empty() -> Self {
        Self {
            info: Arc::default(),
            queues: Vec::new(),
            threads: Vec::new(),
            feeder: None,
        }
    }

    /// Loads every plugin (blocking: call it off the async workers) and starts their threads;
    /// the first that cannot start is the error.
    pub fn load(specs: &[PluginSpec]) -> Result<Self, PluginError> {
        let mut loaded = Vec::with_capacity(specs.len());
        for spec in specs {
            let plugin = library::load(&spec.path, &spec.config.to_string())?;
            tracing::info!(
                plugin = %plugin.name,
                version = %plugin.version,
                path = %plugin.path.display(),
                "plugin loaded"
            );
            loaded.push((plugin, spec.queue));
        }
        let info: Arc<Vec<PluginInfo>> = Arc::new(
            loaded
                .iter()
                .map(|(p, queue)| PluginInfo {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    path: p.path.clone(),
                    queue: *queue,
                    counters: Counters::default(),
                })
                .collect(),
        );
        let mut queues = Vec::with_capacity(loaded.len());
        let mut threads = Vec::with_capacity(loaded.len());
        for (index, (plugin, queue)) in loaded.into_iter().enumerate() {
            let name = plugin.name.clone();
            let (sender, receiver) = sync_channel::<Arc<[u8]>>(queue);
            let shared = Arc::clone(&info);
            let thread = std::thread::Builder::new()
                .name(format!("plugin-{name}"))
                .spawn(move || work(plugin, receiver, &shared[index].counters))
                .map_err(|e| PluginError::Thread {
                    name,
                    reason: e.to_string(),
                })?;
            queues.push(sender);
            threads.push(thread);
        }
        Ok(Self {
            info,
            queues,
            threads,
            feeder: None,
        })
    }

    /// A view of the counters that outlives borrows of the host.
    pub fn counters(&self) -> PluginCounters {
        PluginCounters(Arc::clone(&self.info))
    }

    /// Feeds every event published on `bus` from now on to every plugin, but those relayed from
    /// other nodes (each node's plugins see the events of its own devices, so a cluster hands
    /// each event to a plugin once).
    pub fn start(&mut self, bus: &EventBus) {
        if self.queues.is_empty() {
            return;
        }
        let mut events = bus.subscribe();
        let info = Arc::clone(&self.info);
        let queues = self.queues.clone();
        self.feeder = Some(tokio::spawn(async move {
            let mut report = tokio::time::interval(REPORT_EVERY);
            let mut reported = Vec::new();
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) if event.relayed => {}
                        Ok(event) => {
                            let json: Arc<[u8]> = Arc::clone(&event.body).into();
                            for (queue, info) in queues.iter().zip(info.iter()) {
                                offer(queue, info, &json);
                            }
                        }
                        // The feeder fell behind the bus: those events are lost to every plugin.
                        Err(RecvError::Lagged(missed)) => {
                            for info in info.iter() {
                                info.counters.dropped.fetch_add(missed, Ordering::Relaxed);
                            }
                        }
                        Err(RecvError::Closed) => break,
                    },
                    _ = report.tick() => {
                        let now: Vec<PluginStats> = info.iter().map(PluginInfo::stats).collect();
                        if now != reported {
                            log_stats(&now);
                            reported = now;
                        }
                    }
                }
            }
        }));
    }

    /// Stops feeding, lets each plugin finish its queue (up to `grace` in all) and logs the
    /// counters. A plugin still busy after that is left to the process exit.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(feeder) = self.feeder.take() {
            feeder.abort();
            let _ = feeder.await;
        }
        // Closing the queues ends each thread after its last queued event.
        self.queues.clear();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(grace, joined).await.is_err() {
            tracing::warn!("a plugin was still busy at shutdown");
        }
        log_stats(&self.counters().stats());
    }
}

fn log_stats(stats: &[PluginStats]) {
    for s in stats {
        tracing::info!(
            plugin = %s.name,
            delivered = s.delivered,
            failed = s.failed,
            panicked = s.panicked,
            dropped = s.dropped,
            "plugin counters"
        );
    }
}

/// A plugin's thread: every queued event in order, until the queue closes.
fn work(
    mut plugin: library::Loaded,
    queue: std::sync::mpsc::Receiver<Arc<[u8]>>,
    counters: &Counters,
) {
    let mut error = ErrorBuf::new();
    while let Ok(event) = queue.recv() {
        match plugin.on_event(&event, &mut error) {
            Status::Ok => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Status::Failed => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %plugin.name, "plugin failed an event: {}", error.message());
            }
            Status::Panicked => {
                counters.panicked.fetch_add(1, Ordering::Relaxed);
                tracing::error!(plugin = %plugin.name, "plugin panicked on an event: {}", error.message());
            }
        }
    }
    plugin.destroy();
}
