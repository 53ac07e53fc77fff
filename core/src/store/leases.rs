//! Nodes and the leases by which they own devices: every `wagate serve` on one database is a
//! node; a device's live session runs on the node holding its lease.
//!
//! These operations work on every tenant's devices (a node owns devices of many tenants), so
//! they are [`Store`]'s own methods, deliberately: they read and move leases, identified by
//! the device's internal id, and return (tenant, device) pairs that the engine then works on
//! through the tenant. The one tenant-scoped look-up, a device's lease for routing a request,
//! is [`TenantStore::lease`].
//!
//! Invariants kept here:
//! - A node is alive while it holds its advisory lock (on its own connection, so a dead
//!   process loses it at once) and its heartbeat is younger than the lease expiry (so a paused
//!   process loses it too). Only leases of nodes that are not alive, expired leases and free
//!   ones can be acquired ([`ORPHANED`]), and every acquisition raises the device's epoch.
//! - Every write a session makes is fenced by the epoch it acquired (`record_events`, the key
//!   store): once another node acquired the device, the old owner writes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::devices::{stored_id, stored_state};
use super::{Store, StoreError, TenantStore};
use crate::domain::{DeviceId, DeviceState, TenantId};

/// First key of the advisory lock every node holds while it lives ("nd" in ASCII, 28260); the
/// second key is the node's id. A node is alive to the others while it holds it.
pub const NODE_LOCK_CLASS: i32 = 0x6e64;

/// The channel nodes notify when the cluster changes: a node joined, drains or left, or
/// leases were released for others to take.
const NODES_CHANNEL: &str = "wagate_nodes";

/// The ids of the nodes alive now (`$1`: the lease expiry in milliseconds): holding their lock
/// (class 28260 is [`NODE_LOCK_CLASS`]), with a fresh heartbeat.
const ALIVE: &str = "SELECT n.id FROM nodes n
     JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = 28260::oid
      AND l.objid = n.id::oid AND l.objsubid = 2 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     WHERE n.heartbeat_at > now() - make_interval(secs => $1::float8 / 1000)";

/// The condition on `devices` under which its lease may be taken: free, expired, or held by a
/// node that is not alive.
const ORPHANED: &str =
    "(lease_node IS NULL OR lease_expires_at < now() OR lease_node NOT IN (ALIVE))";

fn orphaned() -> String {
    ORPHANED.replace("ALIVE", ALIVE)
}

/// A node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its id, unique in the database for as long as it is registered.
    pub id: i32,
    /// Where requests for its devices are forwarded; `None` when it gave none.
    pub address: Option<String>,
    /// The base of the links it hands out.
    pub public_url: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// It is handing its devices over (shutting down).
    pub draining: bool,
    /// It holds its lock and its heartbeat is fresh.
    pub alive: bool,
    /// The devices whose lease it holds.
    pub devices: i64,
}

/// What a session's writes are fenced by: the device row it acquired and the epoch of that
/// acquisition. The row matters: a device deleted and created again under the same id is
/// another row, whose epochs start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The device's internal id.
    pub row: i64,
    /// The epoch of the acquisition.
    pub epoch: i64,
}

/// A lease a node holds: the device and the lease its writes are fenced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// The row and epoch of the acquisition.
    pub lease: Lease,
}

/// A device whose lease a node just acquired, with what it must do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquiredDevice {
    /// The lease.
    pub lease: HeldLease,
    /// The device's state as stored.
    pub state: DeviceState,
    /// It has a JID: it is linked and reconnects from its keys.
    pub linked: bool,
}

/// A device whose lease is up for taking, for the engine's placement to choose from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedDevice {
    /// Its internal id, what placement hashes and acquisition names.
    pub internal_id: i64,
    /// Its tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
}

/// Who holds a device's lease, for routing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The device's internal id.
    pub internal_id: i64,
    /// The node holding the lease, if it has not expired.
    pub node: Option<i32>,
    /// The epoch of the last acquisition.
    pub epoch: i64,
}

/// A node's own connection, outside the pool: it holds the node's advisory lock (the node is
/// alive while it lasts) and hears the cluster's notifications.
pub struct NodeLink {
    id: i32,
    wakeups: mpsc::Receiver<()>,
    driver: JoinHandle<()>,
    client: tokio_postgres::Client,
}

impl Drop for NodeLink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink").field("id", &self.id).finish()
    }
}

impl NodeLink {
    /// The node's id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Waits for the next notification on [`NODES_CHANNEL`]; `false` once the connection is
    /// gone (the node is then dead to the others: it must stop its sessions).
    pub async fn notified(&mut self) -> bool {
        self.wakeups.recv().await.is_some()
    }

    /// Whether the connection (and with it the node's lock) is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Renews the node's heartbeat and every lease it holds for `expiry`, on the node's own
    /// connection (a busy pool does not delay it); returns the leases it still holds, so the
    /// engine stops the sessions of those another node took.
    pub async fn heartbeat(&self, expiry: Duration) -> Result<Vec<HeldLease>, StoreError> {
        let doing = || format!("renew the heartbeat and leases of node {}", self.id);
        let ms = expiry.as_millis() as f64;
        self.client
            .execute(
                "UPDATE nodes SET heartbeat_at = now() WHERE id = $1",
                &[&self.id],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        let rows = self
            .client
            .query(
                "UPDATE devices SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
                 WHERE lease_node = $1
                 RETURNING tenant_id, device_id, internal_id, lease_epoch",
                &[&self.id, &ms],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        rows.iter()
            .map(|row| {
                let tenant = TenantId(row.get(0));
                Ok(HeldLease {
                    tenant,
                    device: stored_id(tenant, row.get(1))?,
                    lease: Lease {
                        row: row.get(2),
                        epoch: row.get(3),
                    },
                })
            })
            .collect()
    }

    /// Marks the node as draining and tells the others, which stop placing devices on it.
    pub async fn drain(&self) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE nodes SET draining = true WHERE id = $1",
                &[&self.id],
            )
            .await
            .map_err(|e| StoreError::db(format!("mark node {} draining", self.id), e))?;
        notify(&self.client, "drain").await
    }

    /// Removes the node's row and releases whatever it still holds, as a clean exit does.
    pub async fn leave(self) -> Result<(), StoreError> {
        let doing = || format!("remove node {}", self.id);
        self.client
            .execute(
                "UPDATE devices SET lease_node = NULL, lease_expires_at = NULL WHERE lease_node = $1",
                &[&self.id],
            )
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        self.client
            .execute("DELETE FROM nodes WHERE id = $1", &[&self.id])
            .await
            .map_err(|e| StoreError::db(doing(), e))?;
        notify(&self.client, "leave").await
    }
}

async fn notify(client: &tokio_postgres::Client, what: &str) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&NODES_CHANNEL, &what])
        .await
        .map(|_| ())
        .map_err(|e| StoreError::db(format!("notify the other nodes ({what})"), e))
}

impl Store {
    /// Registers this process as a node reachable at `address` (if any), handing out links
    /// under `public_url`: its row, its lock and its notifications, on a connection of its own.
    /// Rows of nodes long dead are removed on the way.
    pub async fn register_node(
        &self,
        address: Option<&str>,
        public_url: &str,
    ) -> Result<NodeLink, StoreError> {
        let doing = "register this node";
        // Bounded at one: a wake-up that finds one pending already has nothing to add.
        let (tx, wakeups) = mpsc::channel(1);
        let wake = move |_: &str| {
            let _ = tx.try_send(());
        };
        let (client, driver) = self
            .listening(NODES_CHANNEL, "this node's own connection", wake, doing)
            .await?;
        let id: i32 = client
            .query_one(
                "INSERT INTO nodes (address, public_url) VALUES ($1, $2) RETURNING id",
                &[&address, &public_url],
            )
            .await
            .map_err(|e| StoreError::db(doing, e))?
            .get(0);
        client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&NODE_LOCK_CLASS, &id])
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        // Rows of nodes dead for a day say nothing any more; their leases are orphaned anyway.
        client
            .execute(
                &format!(
                    "DELETE FROM nodes WHERE heartbeat_at < now() - interval '1 day'
                       AND id NOT IN ({})",
                    ALIVE.replace("$1::float8", "86400000::float8")
                ),
                &[],
            )
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        notify(&client, "join").await?;
        Ok(NodeLink {
            id,
            wakeups,
            driver,
            client,
        })
    }

    /// Every registered node, alive or not (by `expiry`), with the devices it holds; oldest
    /// first.
    pub async fn nodes(&self, expiry: Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let ms = expiry.as_millis() as f64;
        let rows = self
            .query(
                "list the nodes",
                &format!(
                    "SELECT n.id, n.address, n.public_url, n.started_at, n.heartbeat_at,
                            n.draining, n.id IN ({ALIVE}),
                            (SELECT count(*) FROM devices d WHERE d.lease_node = n.id)
                     FROM nodes n ORDER BY n.id"
                ),
                &[&ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| NodeRecord {
                id: row.get(0),
                address: row.get(1),
                public_url: row.get(2),
                started_at: row.get(3),
                heartbeat_at: row.get(4),
                draining: row.get(5),
                alive: row.get(6),
                devices: row.get(7),
            })
            .collect())
    }

    /// The devices that need an owner and have none that is alive: linked ones (to reconnect)
    /// and unlinked ones a dead node left in the middle of a login (to fail as interrupted).
    pub async fn orphaned_devices(
        &self,
        expiry: Duration,
    ) -> Result<Vec<OrphanedDevice>, StoreError> {
        let ms = expiry.as_millis() as f64;
        let rows = self
            .query(
                "list the devices without a live owner",
                &format!(
                    "SELECT internal_id, tenant_id, device_id FROM devices
                     WHERE (jid IS NOT NULL OR state <> 'disconnected') AND {}
                     ORDER BY internal_id",
                    orphaned()
                ),
                &[&ms],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let tenant = TenantId(row.get(1));
                Ok(OrphanedDevice {
                    internal_id: row.get(0),
                    tenant,
                    device: stored_id(tenant, row.get(2))?,
                })
            })
            .collect()
    }

    /// Acquires for `node` the leases of those of `devices` still orphaned, for `expiry`, each
    /// under a new epoch.
    pub async fn acquire_devices(
        &self,
        node: i32,
        devices: &[i64],
        expiry: Duration,
    ) -> Result<Vec<AcquiredDevice>, StoreError> {
        let ms = expiry.as_millis() as f64;
        let rows = self
            .query(
                &format!("acquire {} device leases for node {node}", devices.len()),
                &format!(
                    "UPDATE devices SET lease_node = $2, lease_epoch = lease_epoch + 1,
                        lease_expires_at = now() + make_interval(secs => $1::float8 / 1000)
                     WHERE internal_id = ANY($3) AND {}
                     RETURNING tenant_id, device_id, lease_epoch, state, jid IS NOT NULL,
                               internal_id",
                    orphaned()
                ),
                &[&ms, &node, &devices],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let tenant = TenantId(row.get(0));
                let device = stored_id(tenant, row.get(1))?;
                let state = stored_state(tenant, &device, row.get(3))?;
                Ok(AcquiredDevice {
                    lease: HeldLease {
                        tenant,
                        device,
                        lease: Lease {
                            row: row.get(5),
                            epoch: row.get(2),
                        },
                    },
                    state,
                    linked: row.get(4),
                })
            })
            .collect()
    }

    /// Gives up `node`'s leases of `devices` (their sessions stopped), each only under the
    /// epoch it was held by (a session started since holds a newer one), and tells the other
    /// nodes, which take them at once.
    pub async fn release_devices(
        &self,
        node: i32,
        devices: &[HeldLease],
    ) -> Result<(), StoreError> {
        if devices.is_empty() {
            return Ok(());
        }
        let tenants: Vec<_> = devices.iter().map(|l| l.tenant.0).collect();
        let ids: Vec<&str> = devices.iter().map(|l| l.device.as_str()).collect();
        let epochs: Vec<i64> = devices.iter().map(|l| l.lease.epoch).collect();
        let client = self.client().await?;
        let doing = format!("release {} device leases of node {node}", devices.len());
        client
            .execute(
                "UPDATE devices d SET lease_node = NULL, lease_expires_at = NULL
                 FROM unnest($2::uuid[], $3::text[], $4::bigint[]) AS r(tenant_id, device_id, epoch)
                 WHERE d.tenant_id = r.tenant_id AND d.device_id = r.device_id
                   AND d.lease_node = $1 AND d.lease_epoch = r.epoch",
                &[&node, &tenants, &ids, &epochs],
            )
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        notify(&client, "release").await
    }
}

impl TenantStore<'_> {
    /// Who holds the lease of the tenant's device `id` now; `None` when there is no such
    /// device.
    pub async fn lease(&self, id: &DeviceId) -> Result<Option<LeaseHolder>, StoreError> {
        let row = self
            .store
            .query_opt(
                &format!("find the owner of device `{id}` of tenant {}", self.tenant),
                "SELECT internal_id, CASE WHEN lease_expires_at > now() THEN lease_node END,
                        lease_epoch
                 FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&self.tenant.0, &id.as_str()],
            )
            .await?;
        Ok(row.map(|row| LeaseHolder {
            internal_id: row.get(0),
            node: row.get(1),
            epoch: row.get(2),
        }))
    }

    /// Acquires the lease of the tenant's device `id` for `node` unless a live node holds it
    /// (this one included: its epoch grows, so a session of its own that ran before writes
    /// nothing more). `Ok(None)` when another live node holds it or there is no such device.
    pub async fn acquire_lease(
        &self,
        node: i32,
        id: &DeviceId,
        expiry: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let ms = expiry.as_millis() as f64;
        let row = self
            .store
            .query_opt(
                &format!(
                    "acquire the lease of device `{id}` of tenant {} for node {node}",
                    self.tenant
                ),
                &format!(
                    "UPDATE devices SET lease_node = $2, lease_epoch = lease_epoch + 1,
                        lease_expires_at = now() + make_interval(secs => $1::float8 / 1000)
                     WHERE tenant_id = $3 AND device_id = $4
                       AND (lease_node = $2 OR {})
                     RETURNING internal_id, lease_epoch",
                    orphaned()
                ),
                &[&ms, &node, &self.tenant.0, &id.as_str()],
            )
            .await?;
        Ok(row.map(|row| Lease {
            row: row.get(0),
            epoch: row.get(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_liveness_query_names_the_node_lock_class() {
        assert!(ALIVE.contains(&format!("l.classid = {NODE_LOCK_CLASS}::oid")));
    }
}
