//! Device rows kept in memory: a device's status and every command to its session read its row,
//! and those reads outnumber its changes by far.
//!
//! Invariant: a kept row is never older than the last change this node knows of. It holds
//! because
//! - a row is kept only while the node hears every change: [`DeviceCache`] is live only while
//!   [`DeviceCacheKeeper`]'s connection listens on `wagate_devices` (migration 9's triggers say
//!   there which device any commit changed or deleted, on any node). When that connection is
//!   lost, everything kept is dropped and nothing is kept until it listens again;
//! - this node's own writes drop the row as soon as they commit, before the write returns, so a
//!   caller reads its own change at once; other nodes' changes drop it when their notification
//!   arrives (a commit is heard within milliseconds);
//! - a read that raced a change is not kept: every drop advances a generation, and a row read
//!   from the database is kept only if the generation has not moved since the read began.
//!
//! Absence is never kept: a device created on another node is found at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Store;
use crate::domain::{Device, DeviceId, TenantId};

/// Rows kept at most; past that everything is dropped and kept again as it is read. Far above
/// what one node serves (a kept row is a few hundred bytes).
const CAPACITY: usize = 200_000;

/// How long the keeper waits before listening again after its connection was lost.
const RECONNECT: Duration = Duration::from_secs(1);

/// The device rows of every tenant this node has read, while it hears every change.
#[derive(Default)]
pub(super) struct DeviceCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rows: HashMap<TenantId, HashMap<DeviceId, Device>>,
    len: usize,
    /// Advanced by every drop: a read begun under an older generation may have missed it.
    generation: u64,
    /// Whether every change is heard now; nothing is kept or served while it is not.
    live: bool,
}

/// A read of the database begun under this generation; see [`DeviceCache::keep`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadBegun(Option<u64>);

impl DeviceCache {
    /// The kept row of the tenant's device `id`, if one is kept.
    pub(super) fn get(&self, tenant: TenantId, id: &DeviceId) -> Option<Device> {
        let inner = self.read();
        if !inner.live {
            return None;
        }
        inner.rows.get(&tenant)?.get(id).cloned()
    }

    /// Marks the start of a database read whose row may be kept.
    pub(super) fn begin_read(&self) -> ReadBegun {
        let inner = self.read();
        ReadBegun(inner.live.then_some(inner.generation))
    }

    /// Keeps `device` as read by the read `begun`, unless a change was dropped meanwhile.
    pub(super) fn keep(&self, begun: ReadBegun, device: &Device) {
        let mut inner = self.write();
        if !inner.live || begun.0 != Some(inner.generation) {
            return;
        }
        if inner.len >= CAPACITY {
            inner.rows.clear();
            inner.len = 0;
        }
        let previous = inner
            .rows
            .entry(device.tenant)
            .or_default()
            .insert(device.id.clone(), device.clone());
        if previous.is_none() {
            inner.len += 1;
        }
    }

    /// Drops the row of the tenant's device `id`: it changed or is gone.
    pub(super) fn forget(&self, tenant: TenantId, id: &DeviceId) {
        let mut inner = self.write();
        inner.generation += 1;
        let Some(devices) = inner.rows.get_mut(&tenant) else {
            return;
        };
        if devices.remove(id).is_some() {
            if devices.is_empty() {
                inner.rows.remove(&tenant);
            }
            inner.len -= 1;
        }
    }

    /// Drops the row of the tenant's device `id` when the returned guard goes: after a write to
    /// the row has committed, failed or been cancelled, whichever ends it.
    pub(super) fn forget_after(&self, tenant: TenantId, id: &DeviceId) -> ForgetAfter<'_> {
        ForgetAfter {
            cache: self,
            tenant,
            id: id.clone(),
        }
    }

    /// Drops every row of `tenant`: it is gone.
    pub(super) fn forget_tenant(&self, tenant: TenantId) {
        let mut inner = self.write();
        inner.generation += 1;
        if let Some(devices) = inner.rows.remove(&tenant) {
            inner.len -= devices.len();
        }
    }

    /// Starts or stops keeping rows as the node starts or stops hearing every change; either
    /// way what was kept is dropped, as changes may have gone unheard.
    fn set_live(&self, live: bool) {
        let mut inner = self.write();
        inner.generation += 1;
        inner.rows.clear();
        inner.len = 0;
        inner.live = live;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`DeviceCache::forget_after`].
pub(super) struct ForgetAfter<'a> {
    cache: &'a DeviceCache,
    tenant: TenantId,
    id: DeviceId,
}

impl Drop for ForgetAfter<'_> {
    fn drop(&mut self) {
        self.cache.forget(self.tenant, &self.id);
    }
}

/// Parses a `wagate_devices` payload: "tenant device".
fn parse_change(payload: &str) -> Option<(TenantId, DeviceId)> {
    let (tenant, device) = payload.split_once(' ')?;
    Some((
        TenantId(tenant.parse().ok()?),
        DeviceId::parse_stored(device).ok()?,
    ))
}

/// The task that keeps [`Store`]'s device rows in step with every node's changes; rows are
/// kept only while it runs and listens. Dropping it stops it and what was kept is dropped.
pub struct DeviceCacheKeeper {
    cache: Arc<DeviceCache>,
    task: JoinHandle<()>,
}

impl DeviceCacheKeeper {
    /// Whether it hears every change now, so that rows read are kept.
    pub fn listening(&self) -> bool {
        self.cache.read().live
    }

    /// How many rows are kept now.
    pub fn kept(&self) -> usize {
        self.cache.read().len
    }
}

impl Drop for DeviceCacheKeeper {
    fn drop(&mut self) {
        self.task.abort();
        self.cache.set_live(false);
    }
}

impl Store {
    /// Starts keeping the device rows this node reads, in step with the changes of every
    /// node. Until the returned keeper first listens, and whenever its connection is lost,
    /// every read goes to the database.
    pub fn keep_device_rows(&self) -> DeviceCacheKeeper {
        let cache = Arc::clone(&self.devices);
        let store = self.clone();
        let task = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move {
                loop {
                    let heard = {
                        let cache = Arc::clone(&cache);
                        move |payload: &str| match parse_change(payload) {
                            Some((tenant, id)) => cache.forget(tenant, &id),
                            None => tracing::warn!(payload, "unreadable device notification"),
                        }
                    };
                    match store
                        .listening(
                            "wagate_devices",
                            "the device row cache",
                            heard,
                            "listen for the device changes of every node",
                        )
                        .await
                    {
                        Ok((_client, driver)) => {
                            cache.set_live(true);
                            // The client is kept so that the connection stays open.
                            let _ = driver.await;
                            cache.set_live(false);
                        }
                        Err(e) => tracing::warn!(
                            "device rows are read from the database each time until this node can listen for their changes: {e}"
                        ),
                    }
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        });
        DeviceCacheKeeper { cache, task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(tenant: TenantId, id: &str, name: &str) -> Device {
        Device {
            tenant,
            id: DeviceId::parse_stored(id).unwrap(),
            display_name: Some(name.to_string()),
            state: crate::domain::DeviceState::Disconnected,
            jid: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn nothing_is_kept_until_every_change_is_heard() {
        let cache = DeviceCache::default();
        let tenant = TenantId(uuid::Uuid::new_v4());
        let row = device(tenant, "a", "one");
        cache.keep(cache.begin_read(), &row);
        assert_eq!(cache.get(tenant, &row.id), None);
        cache.set_live(true);
        cache.keep(cache.begin_read(), &row);
        assert_eq!(cache.get(tenant, &row.id), Some(row.clone()));
        cache.set_live(false);
        assert_eq!(
            cache.get(tenant, &row.id),
            None,
            "dropped when no longer heard"
        );
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = DeviceCache::default();
        cache.set_live(true);
        let tenant = TenantId(uuid::Uuid::new_v4());
        let row = device(tenant, "a", "old");
        let begun = cache.begin_read();
        cache.forget(tenant, &row.id);
        cache.keep(begun, &row);
        assert_eq!(cache.get(tenant, &row.id), None);
    }

    #[test]
    fn a_change_or_a_gone_tenant_drops_the_kept_row() {
        let cache = DeviceCache::default();
        cache.set_live(true);
        let tenant = TenantId(uuid::Uuid::new_v4());
        let (a, b) = (device(tenant, "a", "x"), device(tenant, "b", "y"));
        cache.keep(cache.begin_read(), &a);
        cache.keep(cache.begin_read(), &b);
        cache.forget(tenant, &a.id);
        assert_eq!(cache.get(tenant, &a.id), None);
        assert_eq!(cache.get(tenant, &b.id), Some(b.clone()));
        cache.forget_tenant(tenant);
        assert_eq!(cache.get(tenant, &b.id), None);
        assert_eq!(cache.read().len, 0);
    }

    #[test]
    fn a_notification_names_a_tenant_and_a_device() {
        let tenant = uuid::Uuid::new_v4();
        assert_eq!(
            parse_change(&format!("{tenant} device-1")),
            Some((
                TenantId(tenant),
                DeviceId::parse_stored("device-1").unwrap()
            ))
        );
        assert_eq!(parse_change("not-a-uuid device-1"), None);
        assert_eq!(parse_change(&tenant.to_string()), None);
    }
}
