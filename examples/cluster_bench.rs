//! Measures a cluster of three `wagate serve` processes on one PostgreSQL database with N linked
//! devices (default 1000), all talking to one sandbox in this process:
//!
//! - failover: one node killed with `kill -9`; the time until every device is logged in again
//!   under a lease of a live node, as the database and as WhatsApp (the sandbox) see it;
//! - rolling restart: each node in turn stopped with SIGTERM (it hands its devices over) and
//!   replaced by a new one (which takes its share); per move of a device, how long it was offline
//!   as WhatsApp saw it, from its old connection closing to its next one logging in;
//! - forwarding: `GET /devices/{id}/status` at the node that runs the device and at another one,
//!   which forwards it; what the extra hop adds.
//!
//! It prints the figures against their targets and asserts nothing about time. The nodes are the
//! release binary beside this example (`target/release/wagate`, or `WAGATE_BIN`), which cargo
//! does not build for an example, hence the first command:
//!
//! `cargo build --release --features sandbox && cargo run --release --features sandbox --example cluster_bench -- 1000`
//!
//! After the device count: `--heartbeat S` and `--lease-expiry S` for the nodes (their own
//! defaults, 5 s and 15 s, otherwise). Each node's output (`RUST_LOG=warn,wagate=info`) is kept
//! in a directory the bench names when it starts.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use wagate_sandbox::{ConnectionRecord, Sandbox, SandboxConfig};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

/// Nodes in the cluster.
const NODES: usize = 3;
/// The default tenant's credential, given to every node with `--basic-auth`.
const USER: &str = "admin";
const PASS: &str = "secret";
/// What the nodes sign forwarded requests with; the same on every node.
const SECRET: &str = "cluster-bench-secret-0123456789";
/// The sandbox's and the nodes' clients' timer speed-up, as in the other benchmarks.
const TIME_SCALE: u32 = 10;
/// Logins in flight at once while linking.
const LINKING: usize = 32;
/// How often the database and the sandbox are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);
/// How long any one wait may take before the bench gives up: long enough that a slow figure is
/// still printed, short enough that a stuck cluster does not hang it.
const PATIENCE: Duration = Duration::from_secs(600);
/// How often a wait says where it stands, so a long one is not mistaken for a hang.
const PROGRESS: Duration = Duration::from_secs(10);
/// A node's share of the devices, in percent, that counts as balanced.
const BALANCED: std::ops::RangeInclusive<usize> = 20..=45;
/// Requests per node in the forwarding measurement, and those before them that warm up.
const SAMPLES: usize = 2000;
const WARM_UP: usize = 200;

/// What the bench is asked to do.
struct Settings {
    devices: usize,
    heartbeat: u64,
    lease_expiry: u64,
}

impl Settings {
    fn from_args() -> Self {
        let mut settings = Settings {
            devices: 1000,
            heartbeat: 5,
            lease_expiry: 15,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut seconds = |flag: &str| -> u64 {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{flag} takes a number of seconds"))
            };
            match arg.as_str() {
                "--heartbeat" => settings.heartbeat = seconds("--heartbeat"),
                "--lease-expiry" => settings.lease_expiry = seconds("--lease-expiry"),
                n => {
                    settings.devices = n.parse().unwrap_or_else(|_| {
                        panic!("usage: cluster_bench [DEVICES] [--heartbeat S] [--lease-expiry S]")
                    })
                }
            }
        }
        settings
    }

    /// How long ownership must stay unchanged before the cluster counts as settled: a node
    /// moves devices when it is notified and at every heartbeat, so a full heartbeat without a
    /// move means none is pending.
    fn quiet(&self) -> Duration {
        Duration::from_secs(self.heartbeat + 1)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// The `wagate` binary: `WAGATE_BIN`, else the one cargo built beside this example.
fn wagate_binary() -> PathBuf {
    let binary = match std::env::var_os("WAGATE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let example = std::env::current_exe().expect("the bench knows its own path");
            // target/release/examples/cluster_bench → target/release/wagate
            example
                .parent()
                .and_then(|examples| examples.parent())
                .expect("the example lives in target/<profile>/examples")
                .join("wagate")
        }
    };
    if !binary.is_file() {
        panic!(
            "no wagate binary at {}: run `cargo build --release --features sandbox` first \
             (or set WAGATE_BIN)",
            binary.display()
        );
    }
    binary
}

/// `line` without its terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An escape runs to its final letter (`m` for colours).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a node's log, for a failure message.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(plain).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` warnings and errors of a node's log: its info lines are mostly device events,
/// which say little about why the cluster is stuck.
fn complaints(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(plain)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `wagate serve` process; killed when dropped, so no node outlives the bench, a panic
/// included.
struct Node {
    /// Its id in the `nodes` table.
    id: i32,
    /// `http://127.0.0.1:PORT`: where it serves, and where the others forward to it.
    base: String,
    child: Child,
    /// Its stdout and stderr.
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// SIGTERM, then waits for the process to end (the handover happens before it does).
    async fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered to node {}", self.id);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Polled rather than waited on: a blocking wait would hold one of the two workers
            // that also run the sandbox.
            if let Some(status) = self.child.try_wait().expect("the node's status") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} did not exit within {PATIENCE:?} of SIGTERM; its log ({}) ends:\n{}",
                    self.id,
                    self.log.display(),
                    tail(&self.log, 30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9`: no handover, no cleanup; its database connection, and its lock, go with it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let _ = self.child.wait();
    }
}

/// A device as the database has it.
struct DeviceRow {
    name: String,
    state: String,
    /// The holder of an unexpired lease.
    owner: Option<i32>,
    jid: Option<String>,
}

/// The nodes, their database and where their devices connect.
struct Cluster {
    settings: Settings,
    binary: PathBuf,
    database_url: String,
    ws_url: String,
    logs: PathBuf,
    /// The running nodes, in the order they started.
    nodes: Vec<Node>,
    /// Nodes started so far, to name their logs.
    started: usize,
    sql: tokio_postgres::Client,
}

impl Cluster {
    /// Starts one more node and waits until it serves; returns its index in `nodes`.
    async fn start_node(&mut self) -> usize {
        let log = self.logs.join(format!("node{}.log", self.started));
        self.started += 1;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the node's log opens");
        let child = Command::new(&self.binary)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--basic-auth", &format!("{USER}:{PASS}")])
            .args(["--whatsapp-url", &self.ws_url])
            .args(["--sandbox-time-scale", &TIME_SCALE.to_string()])
            .env("DATABASE_URL", &self.database_url)
            .env("WAGATE_CLUSTER_SECRET", SECRET)
            .env("WAGATE_NODE_HEARTBEAT", self.settings.heartbeat.to_string())
            .env(
                "WAGATE_LEASE_EXPIRY",
                self.settings.lease_expiry.to_string(),
            )
            .env("RUST_LOG", "warn,wagate=info")
            // Every node is reached at its own listen address and hands out its own links.
            .env_remove("WAGATE_NODE_ADDRESS")
            .env_remove("WAGATE_PUBLIC_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file.try_clone().expect("the log's handle is shared"))
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.binary.display()));
        let mut node = Node {
            id: 0,
            base: String::new(),
            child,
            log,
        };
        let stdout = node.child.stdout.take().expect("stdout is piped");
        let (listening, base) = tokio::sync::oneshot::channel();
        // Read to the end on a thread of its own: a full pipe would stall the node, and its
        // first line says where it serves.
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("listening on ")
                    && let Some(listening) = listening.take()
                {
                    let _ = listening.send(base.trim().to_string());
                }
                let _ = writeln!(file, "{line}");
            }
        });
        node.base = match tokio::time::timeout(PATIENCE, base).await {
            Ok(Ok(base)) => base,
            _ => panic!(
                "node {} never said where it listens (is {} a build with `--features \
                 sandbox`?); its log ({}) ends:\n{}",
                self.started - 1,
                self.binary.display(),
                node.log.display(),
                tail(&node.log, 30)
            ),
        };
        // A port may come back to a later node: the newest registration under it is this one.
        node.id = self
            .sql
            .query_one(
                "SELECT id FROM nodes WHERE address = $1 ORDER BY id DESC LIMIT 1",
                &[&node.base],
            )
            .await
            .expect("the node registered itself under its address")
            .get(0);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn live(&self) -> HashSet<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    async fn devices(&self) -> Vec<DeviceRow> {
        self.sql
            .query(
                "SELECT device_id, state, CASE WHEN lease_expires_at > now() THEN lease_node END,
                        jid
                 FROM devices",
                &[],
            )
            .await
            .expect("the devices are read")
            .iter()
            .map(|row| DeviceRow {
                name: row.get(0),
                state: row.get(1),
                owner: row.get(2),
                jid: row.get(3),
            })
            .collect()
    }

    async fn owners(&self) -> HashMap<String, Option<i32>> {
        self.devices()
            .await
            .into_iter()
            .map(|d| (d.name, d.owner))
            .collect()
    }

    /// Waits until every device is logged in under a lease of a running node, each node holds
    /// a balanced share, WhatsApp sees every device online, and no device has changed hands
    /// for [`Settings::quiet`]: nothing is moving any more. Returns when that last change was.
    async fn settle(&self, sandbox: &Sandbox, what: &str) -> Duration {
        let began = Instant::now();
        let mut progress = Instant::now();
        let mut unchanged: Option<(HashMap<String, Option<i32>>, Instant)> = None;
        loop {
            let devices = self.devices().await;
            let view = View::of(&devices, &self.live(), sandbox);
            let owners: HashMap<String, Option<i32>> =
                devices.into_iter().map(|d| (d.name, d.owner)).collect();
            let settled = view.logged_in == self.settings.devices
                && view.balanced(self.settings.devices)
                && view.online == self.settings.devices;
            unchanged = match unchanged {
                Some((seen, since)) if settled && seen == owners => Some((seen, since)),
                _ if settled => Some((owners, Instant::now())),
                _ => None,
            };
            if let Some((_, since)) = &unchanged
                && since.elapsed() >= self.settings.quiet()
            {
                return since.duration_since(began);
            }
            if began.elapsed() > PATIENCE {
                self.give_up(what, &view).await;
            }
            if progress.elapsed() >= PROGRESS {
                progress = Instant::now();
                let membership = self.membership().await;
                eprintln!(
                    "  … {what}: {}; {}",
                    view.describe(self.settings.devices),
                    membership.text
                );
                if !membership.dead.is_empty() {
                    self.give_up(what, &view).await;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The running nodes as the others see them: how long ago each renewed its heartbeat and
    /// whether it holds its lock. A node that has done neither for a lease's expiry is dead to
    /// the cluster whether or not its process runs: it gets no devices, so waiting for balance
    /// is pointless.
    async fn membership(&self) -> Membership {
        let ids = self.ids();
        let rows = self
            .sql
            .query(
                // $2: the class of the lock a node holds while it lives.
                "SELECT n.id, extract(epoch FROM now() - n.heartbeat_at)::float8,
                        EXISTS (SELECT 1 FROM pg_locks l
                                WHERE l.locktype = 'advisory' AND l.classid = $2::int::oid
                                  AND l.objid = n.id::oid AND l.objsubid = 2 AND l.granted
                                  AND l.database = (SELECT oid FROM pg_database
                                                    WHERE datname = current_database()))
                 FROM nodes n WHERE n.id = ANY($1) ORDER BY n.id",
                &[&ids, &wagate_core::store::NODE_LOCK_CLASS],
            )
            .await
            .expect("the nodes are read");
        let mut nodes = Vec::new();
        let mut dead = Vec::new();
        for row in &rows {
            let (id, age, locked): (i32, f64, bool) = (row.get(0), row.get(1), row.get(2));
            let lock = if locked { "holds its lock" } else { "NO LOCK" };
            nodes.push(format!("node {id}: heartbeat {age:.1} s ago, {lock}"));
            if !locked && age > self.settings.lease_expiry as f64 {
                dead.push(id);
            }
        }
        Membership {
            text: nodes.join(", "),
            dead,
        }
    }

    async fn give_up(&self, what: &str, view: &View) -> ! {
        let membership = self.membership().await;
        let verdict = if membership.dead.is_empty() {
            format!("not done within {PATIENCE:?}")
        } else {
            format!(
                "given up: node(s) {:?} run but hold no lock and renew no heartbeat, so the \
                 cluster counts them dead and gives them no devices",
                membership.dead
            )
        };
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "node {} ({}), its last warnings:\n{}\nand its last lines:\n{}",
                    n.id,
                    n.log.display(),
                    complaints(&n.log, 10),
                    tail(&n.log, 3)
                )
            })
            .collect();
        panic!(
            "{what}: {verdict}; {}; {}\n{}",
            view.describe(self.settings.devices),
            membership.text,
            logs.join("\n")
        )
    }
}

/// The running nodes as the database sees them.
struct Membership {
    /// Each one's heartbeat and lock, to print.
    text: String,
    /// Those the cluster counts dead although their process runs.
    dead: Vec<i32>,
}

/// Where the devices stand, from the database and the sandbox.
struct View {
    /// Devices logged in under a lease of a running node.
    logged_in: usize,
    /// Devices each running node holds.
    shares: HashMap<i32, usize>,
    /// Devices WhatsApp sees on an open, logged-in connection.
    online: usize,
}

impl View {
    fn of(devices: &[DeviceRow], live: &HashSet<i32>, sandbox: &Sandbox) -> Self {
        let mut shares: HashMap<i32, usize> = live.iter().map(|id| (*id, 0)).collect();
        let mut logged_in = 0;
        for device in devices {
            if let Some(share) = device.owner.and_then(|o| shares.get_mut(&o)) {
                *share += 1;
                if device.state == "logged_in" {
                    logged_in += 1;
                }
            }
        }
        let online: HashSet<String> = sandbox
            .history()
            .into_iter()
            .filter(|r| r.logged_in_at_ms.is_some() && r.closed_at_ms.is_none())
            .filter_map(|r| r.jid)
            .collect();
        View {
            logged_in,
            shares,
            online: online.len(),
        }
    }

    fn balanced(&self, total: usize) -> bool {
        self.shares
            .values()
            .all(|share| BALANCED.contains(&(share * 100 / total.max(1))))
    }

    fn describe(&self, total: usize) -> String {
        let mut shares: Vec<_> = self.shares.iter().collect();
        shares.sort();
        format!(
            "{}/{total} logged in on running nodes, {}/{total} online at WhatsApp, shares by \
             node {shares:?}",
            self.logged_in, self.online
        )
    }
}

/// Every connection WhatsApp saw that logged in, by device JID, oldest first.
fn logins_by_jid(sandbox: &Sandbox) -> HashMap<String, Vec<ConnectionRecord>> {
    let mut by_jid: HashMap<String, Vec<ConnectionRecord>> = HashMap::new();
    for record in sandbox.history() {
        if let (Some(jid), Some(_)) = (record.jid.clone(), record.logged_in_at_ms) {
            by_jid.entry(jid).or_default().push(record);
        }
    }
    for records in by_jid.values_mut() {
        records.sort_by_key(|r| r.connection);
    }
    by_jid
}

/// A device connecting again: the new connection logged in within the window looked at.
struct Move {
    jid: String,
    /// When the new connection logged in.
    at_ms: u64,
    /// From the old connection closing to the new one logging in; 0 when they overlapped.
    gap_ms: u64,
    /// The old connection was still open when the new one logged in, and the sandbox closed
    /// it as replaced: for a moment WhatsApp had the device twice.
    replaced: bool,
}

/// Every login in `[from_ms, to_ms)` that followed an earlier one of the same device.
fn moves(by_jid: &HashMap<String, Vec<ConnectionRecord>>, from_ms: u64, to_ms: u64) -> Vec<Move> {
    let mut found = Vec::new();
    for (jid, records) in by_jid {
        for pair in records.windows(2) {
            let (old, new) = (&pair[0], &pair[1]);
            let at_ms = new.logged_in_at_ms.unwrap_or_default();
            if !(from_ms..to_ms).contains(&at_ms) {
                continue;
            }
            let closed = old.closed_at_ms.unwrap_or(u64::MAX);
            found.push(Move {
                jid: jid.clone(),
                at_ms,
                gap_ms: at_ms.saturating_sub(closed),
                replaced: old.replaced || closed > at_ms,
            });
        }
    }
    found.sort_by_key(|m| m.at_ms);
    found
}

/// The first move of each of `jids` among `moves`: the one a node's departure caused.
fn first_moves<'a>(moves: &'a [Move], jids: &HashSet<String>) -> Vec<&'a Move> {
    let mut seen = HashSet::new();
    moves
        .iter()
        .filter(|m| jids.contains(&m.jid) && seen.insert(m.jid.clone()))
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// "p50 …, p99 …, max … over N moves" of gaps in milliseconds.
fn gap_summary(gaps: &[u64]) -> String {
    if gaps.is_empty() {
        return "no moves".into();
    }
    let mut sorted = gaps.to_vec();
    sorted.sort_unstable();
    format!(
        "p50 {} ms, p99 {} ms, max {} ms over {} moves",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
        sorted.len()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends a request, waiting out `503 DEVICE_MOVING` as a client is told to; the answer and how
/// many times it had to wait.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value, usize) {
    let mut waited = 0;
    loop {
        let mut request = http
            .request(method.clone(), url)
            .basic_auth(USER, Some(PASS));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let body_bytes = response.bytes().await.expect("the answer's body");
        let answer: Value = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
        if status == StatusCode::SERVICE_UNAVAILABLE && waited < 30 {
            waited += 1;
            tokio::time::sleep(Duration::from_secs(retry_after)).await;
            continue;
        }
        return (status, answer, waited);
    }
}

/// Creates `name` through the node at `base`, shows its QR code and lets a new sandbox phone
/// scan it through the gateway's sandbox route (forwarded to the device's node like any
/// device request); the 503s it waited out.
async fn link(http: &reqwest::Client, base: &str, name: &str) -> usize {
    let steps = [
        (
            reqwest::Method::POST,
            format!("{base}/devices"),
            Some(serde_json::json!({ "device_id": name })),
        ),
        (
            reqwest::Method::GET,
            format!("{base}/devices/{name}/login"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/sandbox/devices/{name}/scan"),
            None,
        ),
    ];
    let mut waited = 0;
    for (method, url, body) in steps {
        let (status, answer, retries) = call(http, method.clone(), &url, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {url}: {answer}");
        waited += retries;
    }
    waited
}

/// Sequential `GET` latencies of `local` and `forwarded`, taken in turns so that both see the
/// same load from whatever else runs on the machine; each URL has a client, and so a kept-alive
/// connection, of its own. The first [`WARM_UP`] of each are left out.
async fn latencies(local: &str, forwarded: &str) -> (Vec<Duration>, Vec<Duration>) {
    let clients = [reqwest::Client::new(), reqwest::Client::new()];
    let mut samples = [Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES)];
    for i in 0..WARM_UP + SAMPLES {
        for (which, url) in [local, forwarded].into_iter().enumerate() {
            let began = Instant::now();
            let response = clients[which]
                .get(url)
                .basic_auth(USER, Some(PASS))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status();
            let body = response.bytes().await.expect("the answer's body");
            let took = began.elapsed();
            assert_eq!(status, StatusCode::OK, "GET {url}: {body:?}");
            if i >= WARM_UP {
                samples[which].push(took);
            }
        }
    }
    let [mut local, mut forwarded] = samples;
    local.sort_unstable();
    forwarded.sort_unstable();
    (local, forwarded)
}

/// One row of the final table.
struct Figure {
    name: String,
    measured: String,
    target: &'static str,
    met: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = Settings::from_args();
    let n = settings.devices;
    let binary = wagate_binary();
    let logs = std::env::temp_dir().join(format!("wagate-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("the log directory is made");
    println!(
        "cluster bench: {n} devices, {NODES} nodes of {} (heartbeat {} s, lease expiry {} s), \
         sandbox time scale {TIME_SCALE}; node logs in {}",
        binary.display(),
        settings.heartbeat,
        settings.lease_expiry,
        logs.display()
    );

    let sandbox = Sandbox::start_with(SandboxConfig {
        time_scale: TIME_SCALE,
        ..SandboxConfig::default()
    })
    .await
    .expect("the sandbox starts");
    let database_url = support::pg::fresh_database_url().await;
    let sql = support::pg::sql(&database_url).await;
    let mut cluster = Cluster {
        settings,
        binary,
        database_url,
        ws_url: sandbox.ws_url(),
        logs,
        nodes: Vec::new(),
        started: 0,
        sql,
    };
    // One at a time: each registers before the next starts, as an operator brings them up.
    for _ in 0..NODES {
        cluster.start_node().await;
    }
    println!("nodes {:?} serving", cluster.ids());

    // Linking, round robin over the nodes: most logins are forwarded to the device's node.
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:05}")).collect();
    let http = reqwest::Client::new();
    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.base.clone()).collect();
    let waited = AtomicUsize::new(0);
    let linking = Instant::now();
    futures_util::stream::iter(names.iter().enumerate())
        .for_each_concurrent(LINKING, |(i, name)| {
            let (http, base, waited) = (&http, &bases[i % bases.len()], &waited);
            async move {
                waited.fetch_add(link(http, base, name).await, Ordering::Relaxed);
            }
        })
        .await;
    let scanned = linking.elapsed();
    let settled = scanned + cluster.settle(&sandbox, "linking").await;
    println!(
        "linked {n} devices: all logged in and balanced after {:.1} s (scans done after \
         {:.1} s; {} answers were 503 and retried)",
        settled.as_secs_f64(),
        scanned.as_secs_f64(),
        waited.load(Ordering::Relaxed)
    );
    let jids: HashMap<String, String> = cluster
        .devices()
        .await
        .into_iter()
        .filter_map(|d| Some((d.name, d.jid?)))
        .collect();
    let replaced_before = sandbox.replaced_total();

    // Failover: the first node dies without a word.
    let owners = cluster.owners().await;
    let victim = cluster.nodes.remove(0);
    let victim_id = victim.id;
    let moving: HashSet<String> = owners
        .iter()
        .filter(|(_, owner)| **owner == Some(victim_id))
        .filter_map(|(name, _)| jids.get(name).cloned())
        .collect();
    let killed_ms = now_ms();
    let killed = Instant::now();
    victim.kill();
    let live = cluster.live();
    let (mut in_database, mut at_whatsapp) = (None, None);
    let mut progress = Instant::now();
    loop {
        let devices = cluster.devices().await;
        let view = View::of(&devices, &live, &sandbox);
        // Taking a lease leaves the stored state as the dead node left it (`logged_in`) until
        // the new session writes `connecting`, so the database alone may say done too early:
        // WhatsApp's side is watched too, each moved device logging in again after the kill.
        let db_done = view.logged_in == n;
        let by_jid = logins_by_jid(&sandbox);
        let back = moving
            .iter()
            .filter(|jid| {
                by_jid.get(*jid).is_some_and(|records| {
                    records
                        .iter()
                        .any(|r| r.logged_in_at_ms.is_some_and(|at| at >= killed_ms))
                })
            })
            .count();
        in_database = match in_database {
            Some(at) if db_done => Some(at),
            _ if db_done => Some(killed.elapsed()),
            _ => None,
        };
        if back == moving.len() && at_whatsapp.is_none() {
            at_whatsapp = Some(killed.elapsed());
        }
        if let (Some(_), Some(_)) = (in_database, at_whatsapp) {
            break;
        }
        if killed.elapsed() > PATIENCE {
            cluster.give_up("failover", &view).await;
        }
        if progress.elapsed() >= PROGRESS {
            progress = Instant::now();
            let membership = cluster.membership().await;
            eprintln!(
                "  … failover: {}; {back}/{} moved devices back at WhatsApp; {}",
                view.describe(n),
                moving.len(),
                membership.text
            );
            if !membership.dead.is_empty() {
                cluster.give_up("failover", &view).await;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let (in_database, at_whatsapp) = (
        in_database.expect("the loop ends with both"),
        at_whatsapp.expect("the loop ends with both"),
    );
    let failover_done_ms = now_ms();
    let owners_after = cluster.owners().await;
    let moved = owners
        .iter()
        .filter(|(name, owner)| owners_after.get(*name) != Some(*owner))
        .count();
    let failover_moves = moves(&logins_by_jid(&sandbox), killed_ms, failover_done_ms);
    let failover_gaps: Vec<u64> = first_moves(&failover_moves, &moving)
        .iter()
        .map(|m| m.gap_ms)
        .collect();
    let failover = in_database.max(at_whatsapp);
    println!(
        "failover: kill -9 of node {victim_id} ({} of its devices, {moved} devices changed \
         node): every device logged in on a live node after {:.2} s in the database, every \
         moved device logged in again at WhatsApp after {:.2} s; offline per device: {}",
        moving.len(),
        in_database.as_secs_f64(),
        at_whatsapp.as_secs_f64(),
        gap_summary(&failover_gaps)
    );

    // A replacement joins and takes its share.
    let joined_ms = now_ms();
    let index = cluster.start_node().await;
    let newcomer = cluster.nodes[index].id;
    let took = cluster
        .settle(&sandbox, "the replacement taking its share")
        .await;
    let joined_moves = moves(&logins_by_jid(&sandbox), joined_ms, now_ms());
    let joined_gaps: Vec<u64> = joined_moves.iter().map(|m| m.gap_ms).collect();
    println!(
        "replacement node {newcomer} joined: balanced after {:.1} s, devices moved to it: {}",
        took.as_secs_f64(),
        gap_summary(&joined_gaps)
    );

    // Rolling restart: each of the three nodes in turn stops with SIGTERM and a new one starts.
    let replaced_at_restart = sandbox.replaced_total();
    let mut handover_gaps = Vec::new();
    let mut all_gaps = Vec::new();
    let mut overlapped = 0;
    for _ in 0..NODES {
        let owners = cluster.owners().await;
        let leaving = cluster.nodes.remove(0);
        let leaving_id = leaving.id;
        let handed: HashSet<String> = owners
            .iter()
            .filter(|(_, owner)| **owner == Some(leaving_id))
            .filter_map(|(name, _)| jids.get(name).cloned())
            .collect();
        let stopped_ms = now_ms();
        let stopping = Instant::now();
        let status = leaving.terminate().await;
        let exited = stopping.elapsed();
        let index = cluster.start_node().await;
        let joined = cluster.nodes[index].id;
        cluster
            .settle(&sandbox, &format!("the restart of node {leaving_id}"))
            .await;
        let step = moves(&logins_by_jid(&sandbox), stopped_ms, now_ms());
        let handover: Vec<u64> = first_moves(&step, &handed)
            .iter()
            .map(|m| m.gap_ms)
            .collect();
        let step_gaps: Vec<u64> = step.iter().map(|m| m.gap_ms).collect();
        overlapped += step.iter().filter(|m| m.replaced).count();
        println!(
            "restart of node {leaving_id} → node {joined}: SIGTERM to exit {:.2} s ({status}), \
             {} of its devices handed over ({}); all moves of the step: {}",
            exited.as_secs_f64(),
            handed.len(),
            gap_summary(&handover),
            gap_summary(&step_gaps)
        );
        handover_gaps.extend(handover);
        all_gaps.extend(step_gaps);
    }
    println!(
        "rolling restart: handovers at SIGTERM: {}; every move (handovers and the new nodes' \
         shares): {}; {overlapped} moves overlapping the old connection; replaced_total {} \
         during the restart, {} since linking, {} in all",
        gap_summary(&handover_gaps),
        gap_summary(&all_gaps),
        sandbox.replaced_total() - replaced_at_restart,
        sandbox.replaced_total() - replaced_before,
        sandbox.replaced_total()
    );

    // Forwarding: the same read at the device's node and at another, which forwards it.
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let owners = cluster.owners().await;
    let mut owned: Vec<&String> = owners
        .iter()
        .filter(|(_, owner)| **owner == Some(a.id))
        .map(|(name, _)| name)
        .collect();
    owned.sort();
    let device = owned.first().expect("the first node owns devices");
    let path = format!("/devices/{device}/status");
    let (local, forwarded) =
        latencies(&format!("{}{path}", a.base), &format!("{}{path}", b.base)).await;
    let added = ms(percentile(&forwarded, 0.5)) - ms(percentile(&local, 0.5));
    println!(
        "forwarding: GET {path} ({SAMPLES} each, sequential, in turns, after {WARM_UP} \
         warm-up, kept alive): \
         at node {} (local) p50 {:.3} ms p99 {:.3} ms; at node {} (forwarded) p50 {:.3} ms \
         p99 {:.3} ms; added at p50 {added:.3} ms",
        a.id,
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.99)),
        b.id,
        ms(percentile(&forwarded, 0.5)),
        ms(percentile(&forwarded, 0.99)),
    );

    let restart_max = all_gaps.iter().copied().max().unwrap_or(0);
    let figures = [
        Figure {
            name: format!("failover of {n} devices, kill -9 ({} moved)", moving.len()),
            measured: format!("{:.2} s", failover.as_secs_f64()),
            target: "≤ 30 s",
            met: failover <= Duration::from_secs(30),
        },
        Figure {
            name: format!("rolling-restart gap per device, max of {}", all_gaps.len()),
            measured: format!(
                "{restart_max} ms (p99 {} ms)",
                if all_gaps.is_empty() {
                    0
                } else {
                    let mut sorted = all_gaps.clone();
                    sorted.sort_unstable();
                    percentile(&sorted, 0.99)
                }
            ),
            target: "≤ 2 s",
            met: restart_max <= 2000,
        },
        Figure {
            name: "forwarding, added at p50".into(),
            measured: format!("{added:.3} ms"),
            target: "≤ 1 ms",
            met: added <= 1.0,
        },
    ];
    println!();
    println!("{:<48} {:>24} {:>8}", "figure", "measured", "target");
    for figure in &figures {
        println!(
            "{:<48} {:>24} {:>8}  {}",
            figure.name,
            figure.measured,
            figure.target,
            if figure.met { "met" } else { "MISSED" }
        );
    }
}
