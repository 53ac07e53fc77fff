//! whatsapp-rust's storage [`Backend`] on PostgreSQL: one [`PgBackend`] per device.
//!
//! The library's store traits take no device id, so a backend is bound to one device's
//! `devices.internal_id` and every statement is scoped by it. The tables are those of
//! `migrations/0002_device_keys.sql`; they all cascade away with their device.
//!
//! The semantics (what a miss returns, what an overwrite keeps, batch behaviour) follow the
//! library's in-memory reference backend, with two deliberate differences: the sent-message
//! store is not capped at a fixed count, because the rows live in the database, not in process
//! memory (the client's keep-alive sweep prunes them by age); and a pre-key's `uploaded` flag is
//! stored, which the reference ignores.
//!
//! [`Backend`]: whatsapp_rust::wacore::store::traits::Backend

mod app_sync;
mod device;
mod msg_secret;
mod protocol;
mod signal;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Pool, PoolError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use whatsapp_rust::wacore::store::error::StoreError as WaStoreError;

use super::{StoreError, TenantStore, Tx};
use crate::domain::DeviceId;

/// The library's result type, which every trait method returns.
type WaResult<T> = Result<T, WaStoreError>;

/// Every table holding a device's key material; [`delete_key_rows`] empties them all.
const TABLES: &[&str] = &[
    "wa_identities",
    "wa_sessions",
    "wa_prekeys",
    "wa_signed_prekeys",
    "wa_sender_keys",
    "wa_app_state_keys",
    "wa_app_state_versions",
    "wa_app_state_mutation_macs",
    "wa_sender_key_devices",
    "wa_lid_mappings",
    "wa_base_keys",
    "wa_device_lists",
    "wa_group_metadata",
    "wa_tc_tokens",
    "wa_sent_messages",
    "wa_pending_inbound",
    "wa_msg_secrets",
    "wa_device",
];

/// Holds the device row while a fenced write runs, if its lease still has the writer's epoch.
const FENCE: &str = "SELECT 1 FROM devices WHERE internal_id = $1 AND lease_epoch = $2 FOR SHARE";

/// whatsapp-rust's storage backend for one device, on the shared PostgreSQL pool.
///
/// Cheap to clone; clones share the pool and address the same device. Get one with
/// [`TenantStore::key_store`].
#[derive(Clone)]
pub struct PgBackend {
    pool: Pool,
    device: i64,
    fence: Arc<Fence>,
    /// The lease epoch of the session that uses it: every write checks it, in its transaction,
    /// against the device's, under a share lock that a takeover's update waits for. `None`
    /// writes unfenced (the conformance tests, which hold no lease).
    epoch: Option<i64>,
}

/// Closes a backend to its client's stragglers.
///
/// Invariant: once [`PgBackend::close`] returned, no statement of this backend reaches the
/// database. whatsapp-rust's background tasks (a pre-key upload, an app-state sync) can outlive
/// the client's shutdown; without the fence their writes would land after the link ended and
/// leave key rows behind the `Link::End` that deleted them.
#[derive(Default)]
struct Fence {
    closed: AtomicBool,
    /// Held shared by every running statement, exclusively by `close` while it waits for them.
    statements: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// The `devices.internal_id` this backend reads and writes.
    pub fn device_internal_id(&self) -> i64 {
        self.device
    }

    /// Refuses every statement from now on and waits (at most `grace`) for those running; see
    /// [`Fence`]. The session calls it when it stops the client, before it may end the link.
    pub async fn close(&self, grace: std::time::Duration) {
        self.fence.closed.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(grace, self.fence.statements.write()).await;
    }

    /// A pass for one statement, held while it runs; refused once the backend is closed.
    async fn admit(&self) -> WaResult<tokio::sync::RwLockReadGuard<'_, ()>> {
        let pass = self.fence.statements.read().await;
        if self.fence.closed.load(Ordering::SeqCst) {
            return Err(WaStoreError::Connection(Box::new(
                StoreError::KeyStoreClosed(self.device),
            )));
        }
        Ok(pass)
    }

    /// A failed statement, as the library's error, naming the operation and the device.
    fn db_error(&self, doing: &str, e: tokio_postgres::Error) -> WaStoreError {
        WaStoreError::Database(Box::new(StoreError::db(
            format!("{doing} (device {})", self.device),
            e,
        )))
    }

    /// A stored value that does not decode, as the library's error.
    fn corrupt(&self, what: &str, detail: impl std::fmt::Display) -> WaStoreError {
        WaStoreError::Serialization(Box::new(StoreError::Corrupt(format!(
            "{what} of device {} does not decode: {detail}",
            self.device
        ))))
    }

    async fn client(&self) -> WaResult<deadpool_postgres::Client> {
        self.pool
            .get()
            .await
            .map_err(|e: PoolError| WaStoreError::Connection(Box::new(StoreError::Pool(e))))
    }

    /// A pooled connection and `sql` prepared on it (once per connection).
    async fn prepared(
        &self,
        doing: &str,
        sql: &str,
    ) -> WaResult<(deadpool_postgres::Client, tokio_postgres::Statement)> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.db_error(doing, e))?;
        Ok((client, statement))
    }

    /// Runs one statement (prepared once per connection) and returns the rows it changed; with
    /// an epoch, only while the device's lease still has it (every write of the backend comes
    /// here).
    async fn execute(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> WaResult<u64> {
        let _pass = self.admit().await?;
        let (mut client, statement) = self.prepared(doing, sql).await?;
        let Some(epoch) = self.epoch else {
            return client
                .execute(&statement, params)
                .await
                .map_err(|e| self.db_error(doing, e));
        };
        let fence = client
            .prepare_cached(FENCE)
            .await
            .map_err(|e| self.db_error(doing, e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.db_error(doing, e))?;
        // Sent together, in this order (`biased`): the write is rolled back when the fence
        // finds another epoch.
        let fence_params: [&(dyn ToSql + Sync); 2] = [&self.device, &epoch];
        let (holds, changed) = tokio::join!(
            biased;
            tx.query_opt(&fence, &fence_params),
            tx.execute(&statement, params)
        );
        if holds.map_err(|e| self.db_error(doing, e))?.is_none() {
            return Err(WaStoreError::Connection(Box::new(
                StoreError::KeyStoreFenced(self.device),
            )));
        }
        let changed = changed.map_err(|e| self.db_error(doing, e))?;
        tx.commit().await.map_err(|e| self.db_error(doing, e))?;
        Ok(changed)
    }

    /// Runs one query and returns its rows.
    async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> WaResult<Vec<Row>> {
        let _pass = self.admit().await?;
        let (client, statement) = self.prepared(doing, sql).await?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.db_error(doing, e))
    }

    /// Runs one query that yields at most one row.
    async fn query_opt(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> WaResult<Option<Row>> {
        let _pass = self.admit().await?;
        let (client, statement) = self.prepared(doing, sql).await?;
        client
            .query_opt(&statement, params)
            .await
            .map_err(|e| self.db_error(doing, e))
    }

    /// A stored bigint id back to the library's `u32`.
    fn stored_u32(&self, what: &str, value: i64) -> WaResult<u32> {
        u32::try_from(value).map_err(|_| self.corrupt(what, format!("id {value} is not a u32")))
    }
}

/// A count of deleted rows as the `u32` the library reports; saturates rather than wraps.
fn deleted_count(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

/// `items` with one entry per key, the last value written winning, in first-seen key order.
///
/// One `INSERT … ON CONFLICT DO UPDATE` may not touch a row twice, while the library's batches
/// may repeat a key (the in-memory backend keeps the last write); deduplicating first gives the
/// same result in one statement.
fn last_wins<K: Eq + Hash + Clone, V>(items: impl IntoIterator<Item = (K, V)>) -> Vec<(K, V)> {
    merge_duplicates(items, |_, later| later)
}

/// `items` with one entry per key, repeated keys combined with `merge(earlier, later)`, in
/// first-seen key order.
fn merge_duplicates<K: Eq + Hash + Clone, V>(
    items: impl IntoIterator<Item = (K, V)>,
    mut merge: impl FnMut(V, V) -> V,
) -> Vec<(K, V)> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<(K, Option<V>)> = Vec::new();
    for (key, value) in items {
        if let Some(&i) = index.get(&key) {
            let slot = &mut out[i].1;
            *slot = Some(match slot.take() {
                Some(earlier) => merge(earlier, value),
                None => value,
            });
        } else {
            index.insert(key.clone(), out.len());
            out.push((key, Some(value)));
        }
    }
    out.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

impl TenantStore<'_> {
    /// whatsapp-rust's storage backend for the tenant's device `id`, its writes fenced by
    /// `lease` when given; `None` if the tenant has no such device (or, with a lease, if the
    /// device is not the row leased: it was deleted and created again since).
    ///
    /// The backend stays bound to the device's row: once the device is deleted its key rows are
    /// gone with it and writes through the backend fail; once another node acquired the
    /// device's lease, they fail too.
    pub async fn key_store(
        &self,
        id: &DeviceId,
        lease: Option<super::Lease>,
    ) -> Result<Option<PgBackend>, StoreError> {
        let row = self.device_internal_id(id).await?;
        Ok(row
            .filter(|row| lease.is_none_or(|l| l.row == *row))
            .map(|device| PgBackend {
                pool: self.store.pool.clone(),
                device,
                fence: Arc::default(),
                epoch: lease.map(|l| l.epoch),
            }))
    }
}

/// Deletes every key row of device `device` (Signal keys and sessions, app-state keys, protocol
/// bookkeeping, message secrets, the device blob), keeping the device slot itself: a link ended
/// and the next login starts from a fresh identity. Inside the caller's transaction, so a
/// failure leaves the keys whole rather than half gone.
pub(super) async fn delete_key_rows(tx: &Tx<'_>, device: i64) -> Result<(), StoreError> {
    for table in TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE device_internal_id = $1"),
            &[&device],
        )
        .await?;
    }
    Ok(())
}
