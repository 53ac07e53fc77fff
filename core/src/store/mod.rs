//! The PostgreSQL store: tenants and their credentials, device slots and their keys, QR images,
//! webhook endpoints, events and their deliveries.
//!
//! Tenant data is reached only through [`Store::tenant`]: the [`TenantStore`] it returns holds
//! the tenant, and its methods are the only operations on a tenant's devices, device events,
//! keys, QR images, link tokens, webhook endpoints and deliveries and credentials. Each of them
//! selects its rows by that tenant (or by a row it first found to be the tenant's, as a key
//! store is bound to one device's row), so a caller cannot leave the tenant out. The operations
//! deliberately not scoped to one tenant are [`Store`]'s own methods, all in `cross_tenant.rs`
//! (the nodes' leases in `leases.rs`), whose module docs say why each one is.

mod cross_tenant;
mod device_cache;
mod devices;
mod event_log;
pub mod keys;
mod leases;
mod link_tokens;
mod migrate;
mod outbox;
mod qr_images;
pub(crate) mod secrets;
mod tenants;
mod webhooks;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use crate::domain::{DeviceId, TenantId};

pub use cross_tenant::{PendingDeliveries, RecordedRange};
pub use device_cache::DeviceCacheKeeper;
pub use devices::{DeviceChange, Link};
pub use event_log::{EventFilter, Resumption, TENANT_REWIND, TenantResumption};
pub use leases::{
    AcquiredDevice, HeldLease, Lease, LeaseHolder, NODE_LOCK_CLASS, NodeLink, NodeRecord,
    OrphanedDevice,
};
pub use link_tokens::LinkToken;
pub use outbox::{ClaimedDelivery, DeliveryOutcome, OutboxListener, OutboxWake};
pub use qr_images::QrImage;
pub use tenants::{Credential, TenantSummary};
pub use webhooks::{
    DeliveryPage, DeliveryRecord, DeliveryStatus, DeviceFilterChange, Endpoint, EndpointPatch,
    NewEndpoint, RetryRefusal,
};

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 16;

/// A handle on the database; cheap to clone, all clones share one pool.
///
/// Its own methods are the operations not scoped to one tenant (start-up, the admin API,
/// authentication, public QR images, the webhook dispatcher); everything else goes through
/// [`Store::tenant`].
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// For connections outside the pool (the outbox listener).
    config: Arc<tokio_postgres::Config>,
    verified: Arc<secrets::VerifiedCache>,
    /// Device rows read, kept while [`Store::keep_device_rows`] runs.
    devices: Arc<device_cache::DeviceCache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// The connection pool's state, as `deadpool` reports it, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: usize,
    /// Of those, the ones idle.
    pub available: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
}

/// What went wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The connection string did not parse.
    #[error(
        "the database URL is not a valid PostgreSQL connection string: {}: use e.g. postgres://user:password@host:5432/wagate",
        describe(.0)
    )]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error(
        "could not get a database connection: {}: check that PostgreSQL is running and reachable",
        describe_pool(.0)
    )]
    Pool(#[source] PoolError),
    /// A statement failed.
    #[error("could not {doing}: {}", describe(.source))]
    Database {
        /// What was being done, e.g. "list devices of tenant …".
        doing: String,
        /// The database's answer.
        source: tokio_postgres::Error,
    },
    /// A migration failed; its transaction was rolled back.
    #[error(
        "could not apply migration {version:04}_{name}: {}: the schema is unchanged; fix the cause and start again",
        describe(.source)
    )]
    Migration {
        /// The migration's number.
        version: i32,
        /// The migration's name.
        name: &'static str,
        /// The database's answer.
        source: tokio_postgres::Error,
    },
    /// The database was migrated by a newer wagate.
    #[error(
        "the database schema is at version {found}, newer than this wagate knows ({known}): run a newer wagate or point it at another database"
    )]
    SchemaTooNew {
        /// The highest migration applied to the database.
        found: i32,
        /// The highest migration this build carries.
        known: i32,
    },
    /// A key store was used after its session let go of it (a stopped client's late task).
    #[error(
        "the key store of device row {0} is closed: its client was stopped, so nothing more is written through it"
    )]
    KeyStoreClosed(i64),
    /// Another node acquired the device's lease: this node's session of it writes nothing
    /// more and stops.
    #[error(
        "device `{device_id}` of tenant {tenant} is now owned by another node: this node no longer writes for it"
    )]
    LeaseLost {
        /// The tenant.
        tenant: TenantId,
        /// The device.
        device_id: DeviceId,
    },
    /// The key store's lease epoch is no longer the device's: another node owns it now.
    #[error("the key store of device row {0} is fenced: another node acquired the device's lease")]
    KeyStoreFenced(i64),
    /// A tenant of that name exists.
    #[error("a tenant named `{0}` already exists: choose another name")]
    TenantExists(String),
    /// The tenant is gone (deleted while its request ran).
    #[error("tenant {0} does not exist: it may have been deleted")]
    TenantNotFound(TenantId),
    /// The tenant already has a device with that id.
    #[error(
        "device `{device_id}` already exists in tenant {tenant}: choose another device_id or delete the existing device first"
    )]
    DeviceExists {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        device_id: DeviceId,
    },
    /// The tenant has no webhook endpoint with that id.
    #[error("webhook endpoint {endpoint} does not exist in tenant {tenant}")]
    EndpointNotFound {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        endpoint: uuid::Uuid,
    },
    /// The tenant has no device with that id.
    #[error("device `{device_id}` does not exist in tenant {tenant}: create it first")]
    DeviceNotFound {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        device_id: DeviceId,
    },
    /// The tenant has no credential with that username.
    #[error("tenant {tenant} has no credential `{username}`: it may have been revoked already")]
    CredentialNotFound {
        /// The tenant.
        tenant: TenantId,
        /// The username asked for.
        username: String,
    },
    /// The username belongs to another tenant.
    #[error("username `{0}` already belongs to another tenant: choose another username")]
    UsernameTaken(String),
    /// A stored value is not one wagate writes: the database was edited by hand.
    #[error("{0}: the database was changed outside wagate; fix or delete the row")]
    Corrupt(String),
    /// The blocking task that hashes secrets did not finish.
    #[error("could not hash a secret: {0}: the server may be shutting down")]
    Hashing(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// A failed statement, with what was being done. Every statement error passes here, so
    /// this is where `wagate_db_query_errors_total` counts them.
    fn db(doing: impl Into<String>, source: tokio_postgres::Error) -> Self {
        crate::metrics::count_db_query_error();
        Self::Database {
            doing: doing.into(),
            source,
        }
    }

    /// Whether PostgreSQL aborted the statement to break a deadlock it was part of.
    fn is_deadlock(&self) -> bool {
        matches!(self, Self::Database { source, .. }
            if source.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
    }

    /// `self`, or what `name` makes of a failed statement's answer when it has a better name
    /// for it (a taken name, a missing tenant); the few callers that expect such answers use
    /// this, every other failure stays [`StoreError::Database`].
    fn refine(self, name: impl FnOnce(&tokio_postgres::Error) -> Option<StoreError>) -> Self {
        if let Self::Database { source, .. } = &self
            && let Some(named) = name(source)
        {
            return named;
        }
        self
    }
}

/// tokio-postgres's `Display` names only the kind of error ("db error"); the server's message is
/// in the source. The embedded cluster's errors use it too.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Whether `e` is a violation of the named unique constraint.
fn violates(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
    })
}

/// How many times [`Store::execute_through_deadlocks`] runs a statement at most. A deadlock
/// aborts one statement of the cycle and lets the others finish, so a second attempt usually
/// succeeds; a third covers a new cycle with another batch.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Whether `e` is a foreign-key violation, i.e. the referenced row is gone.
fn is_missing_reference(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

impl Store {
    /// Connects to the database at `url` (e.g. `postgres://user:pass@host:5432/db`), checks one
    /// connection and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(StoreError::InvalidUrl)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            // Bounded so that an unreachable server fails requests instead of hanging them.
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .build()
            .expect("a pool with a runtime accepts timeouts");
        let store = Store {
            pool,
            config: Arc::new(config),
            verified: Arc::default(),
            devices: Arc::default(),
        };
        let mut client = store.client().await?;
        migrate::migrate(&mut client).await?;
        Ok(store)
    }

    /// How many of the migrations this build carries the database lacks: 0 once
    /// [`Store::connect`] applied them, unless the schema was changed behind wagate's back. One
    /// statement on a pooled connection, so it also tells whether the database answers; for
    /// the readiness check, which bounds how long it waits.
    pub async fn missing_migrations(&self) -> Result<usize, StoreError> {
        migrate::missing(&self.client().await?).await
    }

    /// The pool's connections and waiters now; no connection is taken to tell.
    pub fn pool_status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(StoreError::Pool)
    }

    /// A connection of its own, outside the pool, listening on `channel`: every notification's
    /// payload goes to `heard`; the task driving the connection (returned with it) ends when
    /// the connection is lost, saying so as `what`. Locks taken on it last as long as it does.
    async fn listening(
        &self,
        channel: &str,
        what: &'static str,
        mut heard: impl FnMut(&str) + Send + 'static,
        doing: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        use futures_util::StreamExt as _;
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => heard(n.payload()),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("{what}: its database connection was lost: {e}");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(|e| StoreError::db(doing, e))?;
        Ok((client, driver))
    }

    /// The operations on `tenant`'s data, every one scoped to it.
    pub fn tenant(&self, tenant: TenantId) -> TenantStore<'_> {
        TenantStore {
            store: self,
            tenant,
        }
    }

    /// Runs one statement on a pooled connection and returns the rows it changed; a failure
    /// says it was `doing` this.
    async fn execute(
        &self,
        doing: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<u64, StoreError> {
        self.run_prepared(doing, sql, async |client, statement| {
            client.execute(statement, params).await
        })
        .await
    }

    /// Runs `run` with `sql` prepared on a pooled connection (see [`prepared`]); a failure says
    /// it was `doing` this.
    async fn run_prepared<T>(
        &self,
        doing: &str,
        sql: &str,
        run: impl AsyncFnOnce(
            &deadpool_postgres::Client,
            &Statement,
        ) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = self.client().await?;
        let ran = async {
            let statement = prepared(&client.statement_cache, client.prepare_cached(sql)).await?;
            run(&client, &statement).await
        };
        ran.await.map_err(|e| StoreError::db(doing, e))
    }

    /// [`Store::execute`] for a statement that locks many rows another statement may lock in
    /// another order (a cascading delete against the dispatcher's batch updates): when
    /// PostgreSQL aborts it to break a deadlock, nothing it did remains, so it runs again, up
    /// to [`DEADLOCK_ATTEMPTS`] times in all.
    async fn execute_through_deadlocks(
        &self,
        doing: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<u64, StoreError> {
        let mut attempt = 1;
        loop {
            match self.execute(doing, sql, params).await {
                Err(e) if e.is_deadlock() && attempt < DEADLOCK_ATTEMPTS => {
                    tracing::debug!(attempt, "{e}: running it again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Runs one query on a pooled connection and returns its rows.
    async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        self.run_prepared(doing, sql, async |client, statement| {
            client.query(statement, params).await
        })
        .await
    }

    /// Runs one query that yields at most one row.
    async fn query_opt(
        &self,
        doing: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        self.run_prepared(doing, sql, async |client, statement| {
            client.query_opt(statement, params).await
        })
        .await
    }

    /// Runs one query that yields exactly one row.
    async fn query_one(
        &self,
        doing: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Row, StoreError> {
        self.run_prepared(doing, sql, async |client, statement| {
            client.query_one(statement, params).await
        })
        .await
    }
}

/// A statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Statements a pooled connection keeps prepared at most. The store's statements are fixed
/// texts, a few dozen in all; the bound only keeps a statement built from varying text from
/// growing the cache for as long as the connection lives.
const PREPARED_PER_CONNECTION: usize = 256;

/// The statement `preparing` gives: prepared on first use on a connection, then taken from
/// `cache`, so PostgreSQL parses and plans each statement once per connection and running it
/// takes one round trip instead of two. A full cache is emptied first.
async fn prepared(
    cache: &deadpool_postgres::StatementCache,
    preparing: impl std::future::Future<Output = Result<Statement, tokio_postgres::Error>>,
) -> Result<Statement, tokio_postgres::Error> {
    if cache.size() >= PREPARED_PER_CONNECTION {
        cache.clear();
    }
    preparing.await
}

/// A transaction that names what it is doing in every failure.
struct Tx<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    doing: String,
}

impl<'c> Tx<'c> {
    /// Opens a transaction on `client` for `doing`.
    async fn begin(
        client: &'c mut deadpool_postgres::Client,
        doing: String,
    ) -> Result<Tx<'c>, StoreError> {
        match client.transaction().await {
            Ok(tx) => Ok(Tx { tx, doing }),
            Err(e) => Err(StoreError::db(doing, e)),
        }
    }

    fn fail(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::db(self.doing.clone(), e)
    }

    /// `sql` prepared on the transaction's connection, once per connection.
    async fn prepare(&self, sql: &str) -> Result<Statement, StoreError> {
        prepared(&self.tx.statement_cache, self.tx.prepare_cached(sql))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs one statement and returns the rows it changed.
    async fn execute(&self, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
        let statement = self.prepare(sql).await?;
        self.tx
            .execute(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs one query and returns its rows.
    async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepare(sql).await?;
        self.tx
            .query(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs one query that yields at most one row.
    async fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        let statement = self.prepare(sql).await?;
        self.tx
            .query_opt(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs one query that yields exactly one row.
    async fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row, StoreError> {
        let statement = self.prepare(sql).await?;
        self.tx
            .query_one(&statement, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs `first`, then the query `then`, sent together: one round trip where two would be
    /// awaited in turn. PostgreSQL runs them in the order sent, so `then` sees what `first`
    /// wrote; when `first` fails, `then` fails with it (the transaction is aborted) and the
    /// error is `first`'s.
    async fn execute_then_query(
        &self,
        (first, first_params): (&str, &Params<'_>),
        (then, then_params): (&str, &Params<'_>),
    ) -> Result<(u64, Vec<Row>), StoreError> {
        // Both prepared before either is sent: a statement not yet prepared on this connection
        // takes a round trip of its own, which could let the second be sent first.
        let first = self.prepare(first).await?;
        let then = self.prepare(then).await?;
        // Each sends its statement when first polled; `biased` polls them in the order written.
        let (changed, rows) = tokio::join!(
            biased;
            self.tx.execute(&first, first_params),
            self.tx.query(&then, then_params)
        );
        let changed = changed.map_err(|e| self.fail(e))?;
        Ok((changed, rows.map_err(|e| self.fail(e))?))
    }

    /// Commits; dropping a `Tx` without this rolls it back.
    async fn commit(self) -> Result<(), StoreError> {
        let doing = self.doing;
        self.tx.commit().await.map_err(|e| StoreError::db(doing, e))
    }
}

/// The store seen from one tenant: the operations on its devices and their keys and events,
/// QR images, webhook endpoints and deliveries, and credentials, each scoped to the tenant.
///
/// Get one with [`Store::tenant`]; it is a borrow, as cheap to make as to copy.
#[derive(Debug, Clone, Copy)]
pub struct TenantStore<'a> {
    store: &'a Store,
    tenant: TenantId,
}
