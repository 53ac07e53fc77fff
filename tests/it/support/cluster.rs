//! Several real `wagate serve` processes on one PostgreSQL database, all pointed at one sandbox
//! that lives in the test process and outlives them: a cluster of nodes as an operator runs it.
//!
//! One cluster at a time: three gateways and their devices load two cores enough that a second
//! cluster beside them would make lease expiry a matter of luck.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use wagate_sandbox::{ConnectionRecord, Sandbox, SandboxConfig};

use super::pg;
use super::process::Wagate;
use super::{Answer, Api, decode_qr, eventually, fetch};

/// How often nodes renew their leases in the tests, and how long a lease lasts unrenewed.
pub const HEARTBEAT_SECS: u64 = 1;
/// See [`HEARTBEAT_SECS`].
pub const LEASE_EXPIRY_SECS: u64 = 5;

/// The secret every node of a test cluster shares.
const SECRET: &str = "a-cluster-secret-for-the-tests";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of gateway processes; each node keeps its index for the whole test, `None` once
/// it was killed or stopped.
pub struct Cluster {
    /// "WhatsApp", shared by every node.
    pub sandbox: Sandbox,
    /// The database every node works on.
    pub database_url: String,
    nodes: Vec<Option<Node>>,
    /// How often its nodes renew their leases, and how long a lease lasts, in seconds.
    lease_secs: (u64, u64),
    _one: tokio::sync::MutexGuard<'static, ()>,
}

/// One gateway process of the cluster.
pub struct Node {
    /// The process.
    pub process: Wagate,
    /// Its id in the `nodes` table.
    pub id: i32,
}

impl Cluster {
    /// `n` nodes on a fresh database, each registered before the next starts.
    pub async fn start(n: usize) -> Self {
        Self::start_with_leases(n, HEARTBEAT_SECS, LEASE_EXPIRY_SECS).await
    }

    /// As [`Cluster::start`], with nodes that renew every `heartbeat_secs` leases lasting
    /// `expiry_secs`.
    pub async fn start_with_leases(n: usize, heartbeat_secs: u64, expiry_secs: u64) -> Self {
        let one = ONE_AT_A_TIME.lock().await;
        let sandbox = Sandbox::start_with(SandboxConfig {
            time_scale: 10,
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox");
        let mut cluster = Cluster {
            sandbox,
            database_url: pg::fresh_database_url().await,
            nodes: Vec::new(),
            lease_secs: (heartbeat_secs, expiry_secs),
            _one: one,
        };
        for _ in 0..n {
            cluster.start_node().await;
        }
        cluster
    }

    /// Starts one more node; its index.
    pub async fn start_node(&mut self) -> usize {
        let ws = self.sandbox.ws_url();
        let heartbeat = self.lease_secs.0.to_string();
        let expiry = self.lease_secs.1.to_string();
        let process = Wagate::start_with_env(
            &self.database_url,
            &[
                "--whatsapp-url",
                &ws,
                "--sandbox-time-scale",
                "10",
                "--webhook-allow-private",
            ],
            &[
                ("WAGATE_CLUSTER_SECRET", SECRET),
                ("WAGATE_NODE_HEARTBEAT", &heartbeat),
                ("WAGATE_LEASE_EXPIRY", &expiry),
            ],
        );
        let id: i32 = self
            .sql()
            .await
            .query_one(
                "SELECT id FROM nodes WHERE address = $1",
                &[&process.base.as_str()],
            )
            .await
            .expect("the node registered itself under its address")
            .get(0);
        self.nodes.push(Some(Node { process, id }));
        self.nodes.len() - 1
    }

    /// Node `i`, which must still run.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("the node runs")
    }

    /// Takes node `i` out of the cluster's list, to kill, stop or signal it.
    pub fn take(&mut self, i: usize) -> Node {
        self.nodes[i].take().expect("the node runs")
    }

    /// The default tenant's API on node `i`.
    pub fn api(&self, i: usize) -> Api {
        Api::new(&self.node(i).process.base, "admin", "secret")
    }

    /// The indexes of the nodes still running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// The default tenant's API on a running node picked by `n` (round robin).
    pub fn api_by(&self, n: usize) -> Api {
        let running = self.running();
        self.api(running[n % running.len()])
    }

    /// A connection to the cluster's database.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
                .await
                .expect("database");
        tokio::spawn(connection);
        client
    }

    /// Each device's lease holder (`None` when free or expired) and state.
    pub async fn devices(&self) -> HashMap<String, (Option<i32>, String)> {
        self.sql()
            .await
            .query(
                "SELECT device_id, CASE WHEN lease_expires_at > now() THEN lease_node END, state
                 FROM devices",
                &[],
            )
            .await
            .expect("devices")
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect()
    }

    /// Creates `names` and links each through a node picked round robin (so most logins are
    /// forwarded), `concurrency` at a time; every QR code is read off its image and scanned by
    /// the sandbox phone.
    pub async fn link(&self, names: &[String], concurrency: usize) {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(names.iter().enumerate())
            .for_each_concurrent(concurrency, |(n, name)| async move {
                let api = self.api_by(n);
                api.create_device(name).await;
                self.scan(&api, name).await;
            })
            .await;
        self.wait_logged_in_on(names, &self.running_ids()).await;
    }

    /// Lets the sandbox phone scan the QR code `device` shows, as read off its image through
    /// `api`; a code that ran out on the way (the sandbox runs ten times faster than WhatsApp,
    /// and three gateways load two cores) is read again, as a person would scan the next one.
    pub async fn scan(&self, api: &Api, device: &str) {
        let mut last = None;
        for _ in 0..3 {
            let login = api.get(&format!("/devices/{device}/login")).await;
            assert_eq!(login.status, StatusCode::OK, "{device}: {}", login.body);
            let link = login.body["results"]["qr_link"].as_str().expect("qr_link");
            let (_, png) = fetch(link).await;
            match self.sandbox.scan_qr(&decode_qr(&png)).await {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
        }
        panic!("{device} not linked: {last:?}");
    }

    /// The ids of the running nodes.
    pub fn running_ids(&self) -> HashSet<i32> {
        self.nodes.iter().flatten().map(|n| n.id).collect()
    }

    /// Waits up to 30 s until every one of `names` is logged in with its lease held by one of
    /// `owners`.
    pub async fn wait_logged_in_on(&self, names: &[String], owners: &HashSet<i32>) {
        eventually("every device logged in on a running node", || async {
            let devices = self.devices().await;
            let astray: Vec<_> = names
                .iter()
                .filter(|name| {
                    !devices.get(*name).is_some_and(|(owner, state)| {
                        state == "logged_in" && owner.is_some_and(|o| owners.contains(&o))
                    })
                })
                .map(|name| (name.clone(), devices.get(name).cloned()))
                .collect();
            if astray.is_empty() {
                Ok(())
            } else {
                Err(astray.into_iter().take(5).collect::<Vec<_>>())
            }
        })
        .await
    }

    /// How many of `names` each node holds.
    pub async fn shares(&self, names: &[String]) -> HashMap<i32, usize> {
        let devices = self.devices().await;
        let mut shares = HashMap::new();
        for name in names {
            if let Some((Some(owner), _)) = devices.get(name) {
                *shares.entry(*owner).or_default() += 1;
            }
        }
        shares
    }

    /// The sandbox's connections of each device JID, oldest first.
    pub fn connections_by_jid(&self) -> HashMap<String, Vec<ConnectionRecord>> {
        let mut by_jid: HashMap<String, Vec<ConnectionRecord>> = HashMap::new();
        for record in self.sandbox.history() {
            if let Some(jid) = record.jid.clone() {
                by_jid.entry(jid).or_default().push(record);
            }
        }
        by_jid
    }

    /// Asserts the sandbox never had two live connections of one device other than the moment
    /// a replacement takes: each connection's successor logged in after it closed, unless the
    /// sandbox replaced it; and no more replacements than `moved` devices.
    pub fn assert_one_connection_per_device(&self, moved: usize) {
        for (jid, records) in self.connections_by_jid() {
            for pair in records.windows(2) {
                let (old, new) = (&pair[0], &pair[1]);
                let closed = old.closed_at_ms.unwrap_or(u64::MAX);
                let logged_in = new.logged_in_at_ms.unwrap_or(u64::MAX);
                assert!(
                    old.replaced || closed <= logged_in,
                    "{jid}: connection {} logged in while {} was still live: {old:?} {new:?}",
                    new.connection,
                    old.connection
                );
            }
        }
        let replaced = self.sandbox.replaced_total() as usize;
        assert!(
            replaced <= moved,
            "{replaced} connections replaced, more than the {moved} devices that moved"
        );
    }
}

/// `n` device names with `prefix`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Waits `secs` seconds.
pub async fn wait_secs(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// Sends `request` again while it answers 503 `DEVICE_MOVING`, as callers are told to, for up
/// to 30 s: on two loaded cores a lease may lapse and its device pass to another node between
/// looking up its owner and asking it. Any other answer is returned as it is.
pub async fn past_moves<Sent: std::future::Future<Output = Answer>>(
    mut request: impl FnMut() -> Sent,
) -> Answer {
    eventually("an answer other than DEVICE_MOVING", || {
        let sent = request();
        async move {
            let answer = sent.await;
            if answer.status == StatusCode::SERVICE_UNAVAILABLE
                && answer.body["code"] == "DEVICE_MOVING"
            {
                Err(answer.body)
            } else {
                Ok(answer)
            }
        }
    })
    .await
}
