//! Which node runs which device: the node's own identity and its view of the others, the
//! balanced and stable rule that places a device (rendezvous hashing over the nodes that take
//! devices), and where a request for a device is answered.

use std::sync::RwLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use crate::domain::{DeviceId, TenantId};
use crate::store::NodeRecord;

/// How this process takes part in a cluster of nodes sharing one database.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the other nodes reach this one for the devices it owns (`--node-address`, e.g.
    /// `http://10.0.0.5:3000`); a node without one owns devices only while it is alone.
    pub address: Option<String>,
    /// How often the node renews its heartbeat and leases.
    pub heartbeat: Duration,
    /// How long a lease lasts unless renewed: how long a paused node's devices wait before
    /// others take them (a dead process's devices are taken at once).
    pub lease_expiry: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            address: None,
            heartbeat: Duration::from_secs(5),
            lease_expiry: Duration::from_secs(15),
        }
    }
}

/// Another node, where a request for one of its devices goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node: i32,
    /// Its internal address (`--node-address`).
    pub address: String,
    /// The base of the links it hands out.
    pub public_url: String,
}

/// Where a request for a device is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here: the device's session runs (or will run) on this node, or there is no such device.
    Local,
    /// On another node, which owns the device.
    Remote(Peer),
    /// On a node that gave no address, so no request can be forwarded to it.
    Unreachable {
        /// Its id.
        node: i32,
    },
}

/// This node's id and what it last saw of the others.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub config: NodeConfig,
    /// 0 until registered; a new id after the node's own connection was lost and it joined
    /// again.
    id: AtomicI32,
    /// The nodes alive at the last look, this one included once its heartbeat is fresh.
    alive: RwLock<Vec<NodeRecord>>,
}

impl NodeState {
    pub fn new(config: NodeConfig) -> Self {
        Self {
            config,
            id: AtomicI32::new(0),
            alive: RwLock::new(Vec::new()),
        }
    }

    pub fn id(&self) -> i32 {
        self.id.load(Ordering::Acquire)
    }

    pub fn set_id(&self, id: i32) {
        self.id.store(id, Ordering::Release);
    }

    /// Keeps the alive ones of `nodes`.
    pub fn saw(&self, nodes: Vec<NodeRecord>) {
        let alive = nodes.into_iter().filter(|n| n.alive).collect();
        *self.alive.write().unwrap_or_else(|e| e.into_inner()) = alive;
    }

    /// Whether no other node is alive: every device is this one's.
    pub fn alone(&self) -> bool {
        let me = self.id();
        self.alive
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|n| n.id == me)
    }

    /// Where node `node` is answered, if it is alive.
    pub fn peer(&self, node: i32) -> Option<Placement> {
        if node == self.id() {
            return Some(Placement::Local);
        }
        let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
        let record = alive.iter().find(|n| n.id == node)?;
        Some(match &record.address {
            Some(address) => Placement::Remote(Peer {
                node,
                address: address.clone(),
                public_url: record.public_url.clone(),
            }),
            None => Placement::Unreachable { node },
        })
    }

    /// The node the tenant's `device` belongs on: the alive, not draining node that scores it
    /// highest. `None` when there is none (this node is draining and alone).
    pub fn owner_of(&self, tenant: TenantId, device: &DeviceId) -> Option<i32> {
        let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
        rendezvous(
            alive.iter().filter(|n| !n.draining).map(|n| n.id),
            device_hash(tenant, device),
        )
    }

    /// Whether `node` is alive and takes devices.
    pub fn takes_devices(&self, node: i32) -> bool {
        self.alive
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| n.id == node && !n.draining)
    }
}

/// Rendezvous (highest random weight) hashing: each device goes to the node with the highest
/// score for it. A node that joins takes from each other node about its share and a node that
/// leaves spreads its share over the rest; nothing else moves.
fn rendezvous(nodes: impl Iterator<Item = i32>, device: u64) -> Option<i32> {
    nodes.max_by_key(|node| (score(*node, device), *node))
}

/// A device's identity as 64 bits, the same in every process and build (FNV-1a over the
/// tenant's and the device's ids), so every node places it alike.
fn device_hash(tenant: TenantId, device: &DeviceId) -> u64 {
    tenant
        .0
        .as_bytes()
        .iter()
        .chain(device.as_str().as_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// A well-mixed 64-bit score of a (node, device) pair.
fn score(node: i32, device: u64) -> u64 {
    mix(mix(device) ^ (node as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_devices_evenly_over_three_nodes() {
        let mut counts = [0usize; 3];
        for device in 1..=3000 {
            let owner = rendezvous([4, 5, 6].into_iter(), device).unwrap();
            counts[(owner - 4) as usize] += 1;
        }
        for count in counts {
            assert!((850..=1150).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn a_node_joining_takes_devices_only_for_itself() {
        for device in 1..=3000 {
            let before = rendezvous([1, 2, 3].into_iter(), device).unwrap();
            let after = rendezvous([1, 2, 3, 9].into_iter(), device).unwrap();
            assert!(
                after == before || after == 9,
                "device {device} moved {before} → {after}"
            );
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_devices() {
        for device in 1..=3000 {
            let before = rendezvous([1, 2, 3].into_iter(), device).unwrap();
            let after = rendezvous([1, 3].into_iter(), device).unwrap();
            if before != 2 {
                assert_eq!(after, before, "device {device} moved");
            }
        }
    }
}
