//! This node's part in the cluster, as one task: the heartbeat that renews its leases (and stops
//! the sessions of those another node took), failover (taking the devices no live node owns),
//! balance (handing devices to the node they belong on), the handover on shutdown, and joining
//! again when the node's own connection was lost.
//!
//! Invariant: a device's session runs only on the node holding its lease. A session acquires
//! the lease before it starts a client; a node stops its session before it releases the lease;
//! and a node that cannot renew its leases within their expiry stops every session, since the
//! others may take the devices from then on.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::session::Command;
use super::{DeviceKey, DeviceManager, SessionHandle};
use crate::domain::{DeviceId, DeviceState, TenantId};
use crate::events::{EngineEventKind, LoginFailure, NewEvent};
use crate::store::{AcquiredDevice, DeviceChange, HeldLease, Lease, NodeLink, StoreError};

/// Sessions stopped at once when devices move (a handover, a rebalance).
const MOVE_BATCH: usize = 64;

/// How often a node looks for devices without a live owner besides its heartbeats and the
/// notifications: a process that dies notifies no one, and its lock is gone at once.
const ORPHAN_WATCH: Duration = Duration::from_secs(1);

/// How long a node whose own connection was lost waits between attempts to join again.
const REJOIN_BACKOFF: Duration = Duration::from_secs(1);

/// What the manager asks of its membership task.
enum Control {
    /// Hand every device to the other nodes (shutdown).
    HandOver(oneshot::Sender<()>),
    /// Leave the cluster: release what is left and remove the node's row.
    Leave(oneshot::Sender<()>),
}

/// The membership task and the way to it; the task is aborted with the manager.
pub(super) struct MembershipHandle {
    control: mpsc::Sender<Control>,
    /// The receiving end, until the task starts with it.
    requests: Mutex<Option<mpsc::Receiver<Control>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl MembershipHandle {
    /// The handle of a task not started yet: it needs the manager, which holds the handle.
    pub(super) fn new() -> Self {
        let (control, requests) = mpsc::channel(4);
        Self {
            control,
            requests: Mutex::new(Some(requests)),
            task: Mutex::new(None),
        }
    }

    /// Starts the task for `manager`, once it is built: a task started while the manager is
    /// being built could not reach it, and the node would never beat.
    pub(super) fn start(&self, manager: Weak<DeviceManager>, link: NodeLink, public_url: String) {
        let Some(requests) = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let task = tokio::spawn(run(manager, link, public_url, requests));
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    async fn ask(&self, request: impl FnOnce(oneshot::Sender<()>) -> Control) {
        let (reply, done) = oneshot::channel();
        if self.control.send(request(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    pub(super) fn abort(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

async fn run(
    manager: Weak<DeviceManager>,
    mut link: NodeLink,
    public_url: String,
    mut control: mpsc::Receiver<Control>,
) {
    let Some(config) = manager.upgrade().map(|m| m.ctx.node.config.clone()) else {
        return;
    };
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(ORPHAN_WATCH.min(config.heartbeat));
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    let mut draining = false;
    loop {
        let heartbeat = tokio::select! {
            _ = ticker.tick() => true,
            _ = watch.tick() => false,
            alive = link.notified() => {
                if !alive {
                    let Some(m) = manager.upgrade() else { return };
                    link = rejoin(&m, &public_url).await;
                }
                false
            }
            request = control.recv() => {
                let Some(m) = manager.upgrade() else { return };
                match request {
                    Some(Control::HandOver(reply)) => {
                        draining = true;
                        m.hand_over_all(&link).await;
                        let _ = reply.send(());
                    }
                    Some(Control::Leave(reply)) => {
                        if let Err(e) = link.leave().await {
                            tracing::warn!("leaving the cluster: {e}");
                        }
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                }
                continue;
            }
        };
        let Some(manager) = manager.upgrade() else {
            return;
        };
        if heartbeat {
            let started = Instant::now();
            match link.heartbeat(config.lease_expiry).await {
                Ok(held) => {
                    renewed = started;
                    manager.stop_lost_sessions(&held, started).await;
                }
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    if renewed.elapsed() >= config.lease_expiry {
                        // Others may take every device from now on: none may run here.
                        tracing::error!(
                            "the leases of this node lapsed without renewal: stopping its sessions"
                        );
                        manager.stop_sessions(|_, _| true).await;
                    }
                }
            }
        }
        if let Err(e) = manager.refresh_view().await {
            tracing::warn!("could not read the cluster's nodes: {e}");
            continue;
        }
        if draining || !manager.restoring.progress().finished {
            continue;
        }
        if let Err(e) = manager.take_orphans(None).await {
            tracing::warn!("could not take over the devices without an owner: {e}");
        }
        manager.rebalance().await;
    }
}

/// The node's own connection is gone, and with it its lock: to the others it is dead and its
/// devices are theirs to take. Its sessions stop at once, then it joins again as a new node.
async fn rejoin(manager: &DeviceManager, public_url: &str) -> NodeLink {
    tracing::error!("this node's own database connection was lost: stopping its sessions");
    manager.stop_sessions(|_, _| true).await;
    loop {
        match manager
            .ctx
            .store
            .register_node(manager.ctx.node.config.address.as_deref(), public_url)
            .await
        {
            Ok(link) => {
                manager.ctx.node.set_id(link.id());
                tracing::info!(node = link.id(), "joined the cluster again");
                return link;
            }
            Err(e) => {
                tracing::warn!("could not join the cluster again: {e}");
                tokio::time::sleep(REJOIN_BACKOFF).await;
            }
        }
    }
}

impl DeviceManager {
    /// This node's id in the cluster.
    pub fn node_id(&self) -> i32 {
        self.ctx.node.id()
    }

    /// Every node registered on the database, alive or not, with the devices each holds.
    pub async fn nodes(&self) -> Result<Vec<crate::store::NodeRecord>, StoreError> {
        self.ctx
            .store
            .nodes(self.ctx.node.config.lease_expiry)
            .await
    }

    /// Where a request for the tenant's `device` is answered: here when this node runs its
    /// session, holds its lease or is the node it belongs on (or there is no such device);
    /// else the node that holds its lease, or the one it belongs on.
    pub async fn placement(
        &self,
        tenant: TenantId,
        device: &DeviceId,
    ) -> Result<super::Placement, StoreError> {
        use super::Placement;
        let node = &self.ctx.node;
        if node.alone() || self.runs(tenant, device) {
            return Ok(Placement::Local);
        }
        let Some(holder) = self.ctx.store.tenant(tenant).lease(device).await? else {
            return Ok(Placement::Local);
        };
        if let Some(placement) = holder.node.and_then(|n| node.peer(n)) {
            return Ok(placement);
        }
        Ok(node
            .owner_of(tenant, device)
            .and_then(|n| node.peer(n))
            .unwrap_or(Placement::Local))
    }

    /// Hands every device to the other nodes before this one stops: it stops taking devices,
    /// then each session stops and its lease is released, a batch at a time, and the node
    /// each belongs on connects it at once. Requests keep being answered meanwhile (forwarded
    /// once a device moved).
    pub async fn hand_over(&self) {
        self.membership.ask(Control::HandOver).await;
    }

    /// Leaves the cluster: whatever lease is left is released and the node's row removed.
    /// Last in a shutdown, after [`DeviceManager::shutdown`].
    pub async fn leave(&self) {
        self.membership.ask(Control::Leave).await;
    }

    /// Whether a session of the tenant's device `device` (its id as stored) runs here, so its
    /// events are published on this node's bus by the session itself.
    pub fn runs_here(&self, tenant: TenantId, device: &str) -> bool {
        DeviceId::parse_stored(device).is_ok_and(|device| self.runs(tenant, &device))
    }

    /// Whether a session of the device runs here.
    fn runs(&self, tenant: TenantId, device: &DeviceId) -> bool {
        let key = DeviceKey {
            tenant,
            device: device.clone(),
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|h| !h.task.is_finished())
    }

    pub(super) async fn refresh_view(&self) -> Result<(), StoreError> {
        let nodes = self.nodes().await?;
        self.ctx.node.saw(nodes);
        Ok(())
    }

    /// The devices no live node owns that belong on this node, acquired: those left in the
    /// middle of a login get `login_failed` (`interrupted`) and are released again; the linked
    /// ones are returned, their leases held, for the caller to resume.
    pub(super) async fn acquire_orphans(
        &self,
        limit: Option<usize>,
    ) -> Result<Vec<AcquiredDevice>, StoreError> {
        let node = &self.ctx.node;
        let me = node.id();
        let mut mine: Vec<i64> = self
            .ctx
            .store
            .orphaned_devices(node.config.lease_expiry)
            .await?
            .into_iter()
            .filter(|d| node.owner_of(d.tenant, &d.device) == Some(me))
            .map(|d| d.internal_id)
            .collect();
        if let Some(limit) = limit {
            mine.truncate(limit);
        }
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let acquired = self
            .ctx
            .store
            .acquire_devices(me, &mine, node.config.lease_expiry)
            .await?;
        let (linked, interrupted): (Vec<_>, Vec<_>) = acquired.into_iter().partition(|d| d.linked);
        let mut released = Vec::new();
        for device in interrupted {
            self.fail_interrupted_login(&device).await?;
            released.push(device.lease);
        }
        self.ctx.store.release_devices(me, &released).await?;
        Ok(linked)
    }

    /// Takes over the devices no live node owns that belong here, as [`Self::acquire_orphans`]
    /// does, and reconnects the linked ones without waiting for them; the number resumed.
    pub(super) async fn take_orphans(&self, limit: Option<usize>) -> Result<usize, StoreError> {
        let linked = self.acquire_orphans(limit).await?;
        let resumed = linked.len();
        for device in linked {
            let (settled, _) = oneshot::channel();
            self.resume_under(&device.lease, settled).await;
        }
        if resumed > 0 {
            tracing::info!(devices = resumed, "took over devices without a live owner");
        }
        Ok(resumed)
    }

    /// Reconnects a linked device under `lease`, just acquired, telling `settled` the state it
    /// settles in. A session of the device still running here under an older lease (this node
    /// was paused and the device came back to it) is stopped first: it writes nothing more.
    pub(super) async fn resume_under(
        &self,
        lease: &HeldLease,
        settled: oneshot::Sender<DeviceState>,
    ) -> bool {
        let key = DeviceKey {
            tenant: lease.tenant,
            device: lease.device.clone(),
        };
        let stale = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let older = sessions
                .get(&key)
                .is_some_and(|h| !h.task.is_finished() && h.lease.lease() != Some(lease.lease));
            if older { sessions.remove(&key) } else { None }
        };
        if let Some(stale) = stale {
            stale.stop().await;
        }
        let session = self.session(
            lease.tenant,
            &lease.device,
            DeviceState::LoggedIn,
            Some(lease.lease),
        );
        session.send(Command::Resume(settled)).await.is_ok()
    }

    /// Ends a login a node left pending when it died or handed the device over: `login_failed`
    /// (`interrupted`) and `state_changed` to `disconnected`, through the outbox, fenced by the
    /// lease just acquired; a device that moved meanwhile is left alone.
    async fn fail_interrupted_login(&self, device: &AcquiredDevice) -> Result<(), StoreError> {
        let kinds = [
            EngineEventKind::LoginFailed {
                reason: LoginFailure::Interrupted,
            },
            EngineEventKind::StateChanged {
                from: device.state,
                to: DeviceState::Disconnected,
            },
        ];
        let events = kinds.iter().map(NewEvent::from_kind).collect();
        let change = DeviceChange {
            state: Some(DeviceState::Disconnected),
            only_from: Some(device.state),
            fence: Some(device.lease.lease),
            ..DeviceChange::default()
        };
        match self
            .ctx
            .store
            .tenant(device.lease.tenant)
            .record_events(&device.lease.device, change, events)
            .await
        {
            Ok(recorded) => {
                self.ctx.config.metrics.recorded(&kinds, &mut None);
                for event in recorded {
                    self.ctx.bus.publish(event);
                }
                Ok(())
            }
            Err(StoreError::DeviceNotFound { .. } | StoreError::LeaseLost { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stops the sessions whose lease the heartbeat that began at `renewal` no longer found
    /// under their epoch: another node took their devices. Sessions that acquired after the
    /// renewal began are not judged by it.
    async fn stop_lost_sessions(&self, held: &[HeldLease], renewal: Instant) {
        let held: HashMap<(TenantId, &DeviceId), i64> = held
            .iter()
            .map(|l| ((l.tenant, &l.device), l.lease.epoch))
            .collect();
        let lost = |key: &DeviceKey, handle: &SessionHandle| {
            handle
                .lease
                .acquired_before(renewal)
                .is_some_and(|lease| held.get(&(key.tenant, &key.device)) != Some(&lease.epoch))
        };
        let stopped = self.stop_sessions(lost).await;
        if stopped > 0 {
            tracing::warn!(
                devices = stopped,
                "other nodes took over devices whose leases this node had not renewed in time; their sessions here stopped"
            );
        }
    }

    /// Stops (leaving the devices linked) every session `which` picks, and forgets ended ones;
    /// how many it stopped.
    async fn stop_sessions(&self, which: impl Fn(&DeviceKey, &SessionHandle) -> bool) -> usize {
        let handles: Vec<SessionHandle> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.retain(|_, h| !h.task.is_finished());
            let keys: Vec<DeviceKey> = sessions
                .iter()
                .filter(|(k, h)| which(k, h))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| sessions.remove(k)).collect()
        };
        let stopped = handles.len();
        futures_util::stream::iter(handles)
            .for_each_concurrent(MOVE_BATCH, SessionHandle::stop)
            .await;
        stopped
    }

    /// Hands to the node they belong on (when it is alive and takes devices) up to a batch of
    /// this node's devices that are not in the middle of a login; releasing them wakes the
    /// others, and with them this node for the next batch.
    async fn rebalance(&self) {
        let node = &self.ctx.node;
        let me = node.id();
        let moving: Vec<(DeviceKey, mpsc::Sender<Command>, Lease)> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions
                .iter()
                .filter(|(_, h)| !h.task.is_finished())
                .filter(|(k, _)| {
                    node.owner_of(k.tenant, &k.device)
                        .is_some_and(|n| n != me && node.takes_devices(n))
                })
                .filter_map(|(k, h)| {
                    let lease = h.lease.lease()?;
                    Some((k.clone(), h.commands.clone(), lease))
                })
                .take(MOVE_BATCH)
                .collect()
        };
        if moving.is_empty() {
            return;
        }
        let released: Vec<HeldLease> = futures_util::stream::iter(moving)
            .map(|(key, commands, lease)| async move {
                let (reply, answer) = oneshot::channel();
                if commands.send(Command::Release(reply)).await.is_err() {
                    return None;
                }
                answer.await.ok().filter(|ended| *ended).map(|_| HeldLease {
                    tenant: key.tenant,
                    device: key.device,
                    lease,
                })
            })
            .buffer_unordered(MOVE_BATCH)
            .filter_map(std::future::ready)
            .collect()
            .await;
        self.forget_ended();
        if released.is_empty() {
            return;
        }
        tracing::info!(
            devices = released.len(),
            "handing devices to the nodes they belong on"
        );
        if let Err(e) = self.ctx.store.release_devices(me, &released).await {
            tracing::warn!("released devices' leases not given up (they lapse instead): {e}");
        }
    }

    /// Forgets the sessions that ended.
    fn forget_ended(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, h| !h.task.is_finished());
    }

    /// The handover: marks the node draining, then stops every session and releases its lease
    /// a batch at a time.
    async fn hand_over_all(&self, link: &NodeLink) {
        if let Err(e) = link.drain().await {
            tracing::warn!("could not tell the other nodes this one drains: {e}");
        }
        let me = self.ctx.node.id();
        loop {
            let batch: Vec<(DeviceKey, SessionHandle)> = {
                let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                let keys: Vec<DeviceKey> = sessions.keys().take(MOVE_BATCH).cloned().collect();
                keys.into_iter()
                    .filter_map(|k| sessions.remove(&k).map(|h| (k, h)))
                    .collect()
            };
            if batch.is_empty() {
                break;
            }
            let released: Vec<HeldLease> = futures_util::stream::iter(batch)
                .map(|(key, handle)| async move {
                    let lease = handle.lease.lease();
                    handle.stop().await;
                    lease.map(|lease| HeldLease {
                        tenant: key.tenant,
                        device: key.device,
                        lease,
                    })
                })
                .buffer_unordered(MOVE_BATCH)
                .filter_map(std::future::ready)
                .collect()
                .await;
            if let Err(e) = self.ctx.store.release_devices(me, &released).await {
                tracing::warn!(
                    "handed-over devices' leases not released (they lapse instead): {e}"
                );
            }
        }
        tracing::info!("handed every device over");
    }
}
