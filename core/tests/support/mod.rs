//! Shared helpers: one throwaway PostgreSQL server per test binary (or the one named by
//! `WAGATE_TEST_DATABASE_URL`) and a fresh database on it per test, so tests run in parallel.

use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use uuid::Uuid;
use wagate_core::cluster::{APP_ROLE, Cluster, ClusterOptions};
use wagate_core::domain::{DeviceId, Tenant, TenantId};
use wagate_core::store::Store;

/// The server the tests' databases live on.
struct Server {
    /// A URL of a database on it from which others can be created.
    admin_url: String,
    /// The URL tests connect with (its database name replaced), and the role that must own
    /// their databases for it: the embedded cluster's gateway role, as in production.
    app_url: String,
    owner: Option<&'static str>,
    /// Kept for the binary's lifetime; its watchdog stops it and deletes its directory when the
    /// process exits.
    _cluster: Option<Cluster>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("WAGATE_TEST_DATABASE_URL") {
                return Server {
                    admin_url: url.clone(),
                    app_url: url,
                    owner: None,
                    _cluster: None,
                };
            }
            let dir = std::env::temp_dir().join(format!("wagate-test-pg-{}", Uuid::new_v4()));
            let cluster = Cluster::start(&dir, throwaway_options())
                .await
                .expect("the test PostgreSQL cluster starts");
            Server {
                admin_url: cluster.superuser_url(),
                app_url: cluster.url(),
                owner: Some(APP_ROLE),
                _cluster: Some(cluster),
            }
        })
        .await
}

/// Options for a test cluster: fast, and gone with the process.
pub fn throwaway_options() -> ClusterOptions {
    ClusterOptions {
        fsync: false,
        throwaway: true,
    }
}

/// The URL of a new, empty database of its own.
pub async fn fresh_database_url() -> String {
    let server = server().await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&server.admin_url, NoTls)
        .await
        .expect("the test server accepts connections");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&match server.owner {
            Some(owner) => format!("CREATE DATABASE {name} OWNER {owner}"),
            None => format!("CREATE DATABASE {name}"),
        })
        .await
        .expect("a test database can be created");
    drop(client);
    let _ = connection.await;
    with_database(&server.app_url, &name)
}

/// A direct connection to the database at `url`, to look behind the store; it closes when the
/// client is dropped.
// Each test binary compiles this module on its own, and not every one looks behind the store.
#[allow(dead_code)]
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("the test database accepts connections");
    tokio::spawn(connection);
    client
}

/// A store on a new database of its own, migrated.
pub async fn store() -> Store {
    Store::connect(&fresh_database_url().await)
        .await
        .expect("the store connects to its test database")
}

#[allow(unused_imports)]
pub use wagate_core::cluster::with_database;

/// A new tenant on `store`.
pub async fn tenant(store: &Store) -> Tenant {
    let name = format!("tenant-{}", Uuid::new_v4().simple());
    store.create_tenant(&name).await.expect("tenant created").0
}

/// Creates device `id` of `tenant`, unnamed.
pub async fn add_device(store: &Store, tenant: TenantId, id: &DeviceId) {
    store
        .tenant(tenant)
        .create_device(id, None)
        .await
        .expect("the device is created");
}

/// Polls `probe` every 20 ms for up to 10 s until it finds something.
#[allow(dead_code)]
pub async fn eventually_some<T, F: std::future::Future<Output = Option<T>>>(
    mut probe: impl FnMut() -> F,
) -> T {
    for _ in 0..500 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("nothing found within 10 s")
}

/// A device id from a literal known to be valid.
pub fn device_id(raw: &str) -> DeviceId {
    DeviceId::parse(raw).expect("a valid device id")
}
