//! The PostgreSQL store against a real server: migrations, tenants and credentials, devices
//! scoped to their tenant, QR images, and the private cluster itself.

mod support;

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use chrono::Utc;
use support::{add_device, device_id, eventually_some, store, tenant};
use wagate_core::domain::DeviceState;

use wagate_core::cluster::{APP_ROLE, Cluster, ClusterOptions};
use wagate_core::store::{Store, StoreError};

mod connecting {
    use super::*;

    #[tokio::test]
    async fn a_server_that_is_not_there_is_reported_with_what_to_check() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let url = format!("postgres://wagate:hunter2@127.0.0.1:{port}/wagate");
        let err = Store::connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("check that PostgreSQL is running"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_url_is_rejected_without_echoing_it() {
        let err = Store::connect("postgres://wagate:hunter2@127.0.0.1:notaport/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the database URL is not a valid"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

mod migrations {
    use super::*;

    async fn applied(url: &str) -> Vec<(i32, String)> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT version, name FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    #[tokio::test]
    async fn connecting_migrates_an_empty_database() {
        let url = support::fresh_database_url().await;
        Store::connect(&url).await.unwrap();
        assert_eq!(
            applied(&url).await,
            [
                (1, "init".to_string()),
                (2, "device_keys".to_string()),
                (3, "webhooks".to_string()),
                (4, "passkey_state".to_string()),
                (5, "event_replay".to_string()),
                (6, "link_tokens".to_string()),
                (7, "nodes".to_string()),
                (8, "qr_rendered_on_fetch".to_string()),
                (9, "device_changes".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn connecting_again_applies_nothing_twice() {
        let url = support::fresh_database_url().await;
        Store::connect(&url).await.unwrap();
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(applied(&url).await.len(), 9);
        support::tenant(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_connections_apply_each_migration_once() {
        let url = support::fresh_database_url().await;
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = url.clone();
            connects.spawn(async move { Store::connect(&url).await });
        }
        for result in connects.join_all().await {
            result.unwrap();
        }
        assert_eq!(applied(&url).await.len(), 9);
    }
}

mod tenants {
    use super::*;

    #[tokio::test]
    async fn a_new_tenant_authenticates_with_its_credential() {
        let store = store().await;
        let (tenant, credential) = store.create_tenant("acme").await.unwrap();
        assert_eq!(tenant.name, "acme");
        let found = store
            .authenticate(&credential.username, &credential.secret)
            .await
            .unwrap();
        assert_eq!(found, Some(tenant));
    }

    #[tokio::test]
    async fn generated_credentials_are_long_random_alphanumerics() {
        let store = store().await;
        let (_, a) = store.create_tenant("a").await.unwrap();
        let (_, b) = store.create_tenant("b").await.unwrap();
        let suffix = a.username.strip_prefix("wg_").unwrap();
        assert_eq!(suffix.len(), 16);
        assert_eq!(a.secret.len(), 32);
        assert!(
            (suffix.to_string() + &a.secret)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
        assert_ne!(a.username, b.username);
        assert_ne!(a.secret, b.secret);
    }

    #[tokio::test]
    async fn a_credential_debug_print_hides_the_secret() {
        let store = store().await;
        let (_, credential) = store.create_tenant("acme").await.unwrap();
        let printed = format!("{credential:?}");
        assert!(printed.contains(&credential.username));
        assert!(!printed.contains(&credential.secret));
    }

    #[tokio::test]
    async fn a_wrong_secret_does_not_authenticate() {
        let store = store().await;
        let (_, credential) = store.create_tenant("acme").await.unwrap();
        let found = store
            .authenticate(&credential.username, "not-the-secret")
            .await
            .unwrap();
        assert_eq!(found, None);
    }

    #[tokio::test]
    async fn an_unknown_username_does_not_authenticate() {
        let store = store().await;
        let found = store.authenticate("wg_nobody", "anything").await.unwrap();
        assert_eq!(found, None);
    }

    #[tokio::test]
    async fn tenant_names_are_unique() {
        let store = store().await;
        store.create_tenant("acme").await.unwrap();
        let err = store.create_tenant("acme").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::TenantExists(name) if name == "acme"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ensuring_a_tenant_twice_keeps_it_and_its_credentials() {
        let store = store().await;
        let pairs = [("admin".to_string(), "pw1".to_string())];
        let first = store
            .ensure_tenant_with_credentials("default", &pairs)
            .await
            .unwrap();
        let second = store
            .ensure_tenant_with_credentials("default", &pairs)
            .await
            .unwrap();
        assert_eq!(first, second);
        let found = store.authenticate("admin", "pw1").await.unwrap();
        assert_eq!(found, Some(first));
    }

    #[tokio::test]
    async fn ensuring_a_tenant_updates_a_changed_password() {
        let store = store().await;
        let old = [("admin".to_string(), "old".to_string())];
        let new = [("admin".to_string(), "new".to_string())];
        let tenant = store
            .ensure_tenant_with_credentials("default", &old)
            .await
            .unwrap();
        // Verified once, so the old password sits in the cache too.
        assert!(store.authenticate("admin", "old").await.unwrap().is_some());
        store
            .ensure_tenant_with_credentials("default", &new)
            .await
            .unwrap();
        assert_eq!(store.authenticate("admin", "old").await.unwrap(), None);
        assert_eq!(
            store.authenticate("admin", "new").await.unwrap(),
            Some(tenant)
        );
    }

    #[tokio::test]
    async fn ensuring_a_tenant_removes_credentials_no_longer_listed() {
        let store = store().await;
        let both = [
            ("alice".to_string(), "a".to_string()),
            ("bob".to_string(), "b".to_string()),
        ];
        store
            .ensure_tenant_with_credentials("default", &both)
            .await
            .unwrap();
        assert!(store.authenticate("bob", "b").await.unwrap().is_some());
        store
            .ensure_tenant_with_credentials("default", &both[..1])
            .await
            .unwrap();
        assert_eq!(store.authenticate("bob", "b").await.unwrap(), None);
        assert!(store.authenticate("alice", "a").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_username_of_another_tenant_cannot_be_claimed() {
        let store = store().await;
        let (_, credential) = store.create_tenant("acme").await.unwrap();
        let pairs = [(credential.username.clone(), "mine now".to_string())];
        let err = store
            .ensure_tenant_with_credentials("default", &pairs)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::UsernameTaken(u) if *u == credential.username),
            "{err}"
        );
        let owner = store
            .authenticate(&credential.username, &credential.secret)
            .await
            .unwrap();
        assert_eq!(owner.unwrap().name, "acme");
    }
}

mod devices {
    use super::*;
    use wagate_core::domain::{DeviceId, TenantId};
    use wagate_core::events::{EngineEventKind, NewEvent};
    use wagate_core::store::{DeviceChange, Link, NewEndpoint, OrphanedDevice};
    use whatsapp_rust::wacore::store::traits::{DeviceStore as _, SignalStore as _};

    /// Records `change` on the tenant's device, with no event.
    async fn change(
        store: &Store,
        tenant: TenantId,
        id: &DeviceId,
        change: DeviceChange<'_>,
    ) -> Result<(), StoreError> {
        store
            .tenant(tenant)
            .record_events(id, change, Vec::new())
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_new_device_is_disconnected_and_unlinked() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let device = store
            .tenant(tenant.id)
            .create_device(&device_id("phone-1"), Some("Front desk"))
            .await
            .unwrap();
        assert_eq!(device.tenant, tenant.id);
        assert_eq!(device.id.as_str(), "phone-1");
        assert_eq!(device.display_name.as_deref(), Some("Front desk"));
        assert_eq!(device.state, DeviceState::Disconnected);
        assert_eq!(device.jid, None);
        let found = store
            .tenant(tenant.id)
            .find_device(&device.id)
            .await
            .unwrap();
        assert_eq!(found, Some(device));
    }

    #[tokio::test]
    async fn a_device_id_is_unique_within_its_tenant() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let err = store
            .tenant(tenant.id)
            .create_device(&id, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::DeviceExists { tenant: t, device_id } if *t == tenant.id && *device_id == id),
            "{err}"
        );
    }

    #[tokio::test]
    async fn two_tenants_may_use_the_same_device_id() {
        let store = store().await;
        let (a, b) = (tenant(&store).await, tenant(&store).await);
        let id = device_id("phone-1");
        store
            .tenant(a.id)
            .create_device(&id, Some("a's"))
            .await
            .unwrap();
        store
            .tenant(b.id)
            .create_device(&id, Some("b's"))
            .await
            .unwrap();
        let found = store.tenant(b.id).find_device(&id).await.unwrap().unwrap();
        assert_eq!(found.display_name.as_deref(), Some("b's"));
    }

    #[tokio::test]
    async fn a_tenant_lists_only_its_devices_oldest_first() {
        let store = store().await;
        let (a, b) = (tenant(&store).await, tenant(&store).await);
        for id in ["zulu", "alpha", "mike"] {
            add_device(&store, a.id, &device_id(id)).await;
        }
        add_device(&store, b.id, &device_id("other")).await;
        let listed: Vec<String> = store
            .tenant(a.id)
            .list_devices()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(listed, ["zulu", "alpha", "mike"]);
    }

    #[tokio::test]
    async fn another_tenants_device_is_not_found() {
        let store = store().await;
        let (owner, other) = (tenant(&store).await, tenant(&store).await);
        let id = device_id("phone-1");
        add_device(&store, owner.id, &id).await;
        assert_eq!(store.tenant(other.id).find_device(&id).await.unwrap(), None);
        assert_eq!(
            store
                .tenant(other.id)
                .device_internal_id(&id)
                .await
                .unwrap(),
            None
        );
        let connecting = DeviceChange {
            state: Some(DeviceState::Connecting),
            ..DeviceChange::default()
        };
        let err = change(&store, other.id, &id, connecting).await.unwrap_err();
        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        let untouched = store
            .tenant(owner.id)
            .find_device(&id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.state, DeviceState::Disconnected);
    }

    #[tokio::test]
    async fn another_tenants_device_cannot_be_deleted() {
        let store = store().await;
        let (owner, other) = (tenant(&store).await, tenant(&store).await);
        let id = device_id("phone-1");
        add_device(&store, owner.id, &id).await;
        assert!(!store.tenant(other.id).delete_device(&id).await.unwrap());
        assert!(
            store
                .tenant(owner.id)
                .find_device(&id)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_deleted_device_is_gone() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        assert!(store.tenant(tenant.id).delete_device(&id).await.unwrap());
        assert_eq!(
            store.tenant(tenant.id).find_device(&id).await.unwrap(),
            None
        );
        assert!(!store.tenant(tenant.id).delete_device(&id).await.unwrap());
    }

    #[tokio::test]
    async fn a_state_change_is_stored_and_keeps_the_jid() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let jid = "628912344551:3@s.whatsapp.net";
        let linked = DeviceChange {
            state: Some(DeviceState::LoggedIn),
            link: Link::Set(jid),
            ..DeviceChange::default()
        };
        change(&store, tenant.id, &id, linked).await.unwrap();
        let dropped = DeviceChange {
            state: Some(DeviceState::Disconnected),
            ..DeviceChange::default()
        };
        change(&store, tenant.id, &id, dropped).await.unwrap();
        let device = store
            .tenant(tenant.id)
            .find_device(&id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(device.state, DeviceState::Disconnected);
        assert_eq!(device.jid.as_deref(), Some(jid));
    }

    /// Writes a few key rows for the device (an identity, a session, a pre-key, the device
    /// blob), as a login does.
    async fn write_keys(store: &Store, tenant: TenantId, id: &DeviceId) -> i64 {
        let keys = store
            .tenant(tenant)
            .key_store(id, None)
            .await
            .unwrap()
            .unwrap();
        keys.put_identity("111@s.whatsapp.net", [1; 32])
            .await
            .unwrap();
        keys.put_session("111@s.whatsapp.net", b"session")
            .await
            .unwrap();
        keys.store_prekey(1, b"prekey", false).await.unwrap();
        keys.create().await.unwrap();
        keys.device_internal_id()
    }

    /// Rows of every key table that belong to the device with this internal id.
    async fn key_rows(url: &str, device: i64) -> i64 {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.columns
                 WHERE column_name = 'device_internal_id' AND table_name LIKE 'wa\\_%'",
                &[],
            )
            .await
            .unwrap();
        let mut total = 0;
        for table in tables {
            let table: String = table.get(0);
            let rows: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE device_internal_id = $1"),
                    &[&device],
                )
                .await
                .unwrap()
                .get(0);
            total += rows;
        }
        total
    }

    /// A linked device with key rows, beside another linked one, on a store of its own.
    async fn two_linked() -> (Store, String, TenantId, [(DeviceId, i64); 2]) {
        let url = support::fresh_database_url().await;
        let store = Store::connect(&url).await.unwrap();
        let tenant = tenant(&store).await.id;
        let mut devices = Vec::new();
        for (id, jid) in [("one", "1@s.whatsapp.net"), ("two", "2@s.whatsapp.net")] {
            let id = device_id(id);
            store.tenant(tenant).create_device(&id, None).await.unwrap();
            let row = write_keys(&store, tenant, &id).await;
            let linked = DeviceChange {
                state: Some(DeviceState::LoggedIn),
                link: Link::Set(jid),
                ..DeviceChange::default()
            };
            change(&store, tenant, &id, linked).await.unwrap();
            devices.push((id, row));
        }
        let devices = devices.try_into().unwrap();
        (store, url, tenant, devices)
    }

    fn logged_out() -> NewEvent {
        NewEvent::from_kind(&EngineEventKind::LoggedOut {
            reason: "logout".into(),
        })
    }

    /// The link ending, as a logout records it.
    fn end_link(only_from: Option<DeviceState>) -> DeviceChange<'static> {
        DeviceChange {
            state: Some(DeviceState::Disconnected),
            link: Link::End,
            only_from,
            fence: None,
        }
    }

    #[tokio::test]
    async fn ending_the_link_deletes_the_keys_with_the_jid_and_the_event() {
        let (store, url, tenant, [(one, one_row), (two, two_row)]) = two_linked().await;
        let hook = NewEndpoint {
            url: "http://127.0.0.1:9/hook".into(),
            description: String::new(),
            events: vec!["logged_out".into()],
            device_ids: None,
        };
        let hook = store
            .tenant(tenant)
            .create_endpoint(&hook, "whsec_x")
            .await
            .unwrap();
        assert!(key_rows(&url, one_row).await > 0);

        let recorded = store
            .tenant(tenant)
            .record_events(&one, end_link(None), vec![logged_out()])
            .await
            .unwrap();

        assert_eq!(recorded.len(), 1);
        let device = store
            .tenant(tenant)
            .find_device(&one)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(device.jid, None);
        assert_eq!(device.state, DeviceState::Disconnected);
        assert_eq!(key_rows(&url, one_row).await, 0, "every key row went");
        assert_eq!(
            store.tenant(tenant).device_internal_id(&one).await.unwrap(),
            Some(one_row),
            "the slot stays"
        );
        let log = store
            .tenant(tenant)
            .list_deliveries(hook.id, None, 10, None)
            .await
            .unwrap();
        assert_eq!(log.deliveries.len(), 1, "the event went with it");
        let other = store
            .tenant(tenant)
            .find_device(&two)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.jid.as_deref(), Some("2@s.whatsapp.net"));
        assert_eq!(
            key_rows(&url, two_row).await,
            4,
            "another device keeps its keys"
        );
    }

    #[tokio::test]
    async fn ending_the_link_of_a_device_that_moved_meanwhile_changes_nothing() {
        let (store, url, tenant, [(one, one_row), _]) = two_linked().await;
        let err = store
            .tenant(tenant)
            .record_events(
                &one,
                end_link(Some(DeviceState::Connecting)),
                vec![logged_out()],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        let device = store
            .tenant(tenant)
            .find_device(&one)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(device.jid.as_deref(), Some("1@s.whatsapp.net"));
        assert_eq!(device.state, DeviceState::LoggedIn);
        assert_eq!(key_rows(&url, one_row).await, 4, "no key row went");
    }

    #[tokio::test]
    async fn ending_the_link_of_a_device_deleted_meanwhile_records_nothing() {
        let (store, url, tenant, [(one, _), (two, two_row)]) = two_linked().await;
        // Another transaction holds the device's row and deletes it: the link's end waits for
        // it, then finds no device.
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let deleting = client.transaction().await.unwrap();
        deleting
            .execute(
                "SELECT 1 FROM devices WHERE tenant_id = $1 AND device_id = $2 FOR UPDATE",
                &[&tenant.0, &one.as_str()],
            )
            .await
            .unwrap();
        let ending = tokio::spawn({
            let (store, one) = (store.clone(), one.clone());
            async move {
                store
                    .tenant(tenant)
                    .record_events(&one, end_link(None), vec![logged_out()])
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !ending.is_finished(),
            "the end of the link waits for the row"
        );
        deleting
            .execute(
                "DELETE FROM devices WHERE tenant_id = $1 AND device_id = $2",
                &[&tenant.0, &one.as_str()],
            )
            .await
            .unwrap();
        deleting.commit().await.unwrap();

        let err = ending.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        let events: i64 = client
            .query_one(
                "SELECT count(*) FROM events WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(events, 0, "no event of a device that is gone");
        let other = store
            .tenant(tenant)
            .find_device(&two)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.jid.as_deref(), Some("2@s.whatsapp.net"));
        assert_eq!(key_rows(&url, two_row).await, 4);
    }

    #[tokio::test]
    async fn a_missing_device_is_not_changed() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("ghost");
        for link in [Link::Keep, Link::Set("1@s.whatsapp.net"), Link::End] {
            let ghostly = DeviceChange {
                state: Some(DeviceState::Connecting),
                link,
                ..DeviceChange::default()
            };
            let err = change(&store, tenant.id, &id, ghostly).await.unwrap_err();
            assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        }
    }

    /// The (tenant, device) pairs of `orphans`, sorted.
    fn pairs(orphans: Vec<OrphanedDevice>) -> Vec<(TenantId, DeviceId)> {
        let mut pairs: Vec<_> = orphans.into_iter().map(|o| (o.tenant, o.device)).collect();
        pairs.sort_by(|x, y| x.1.cmp(&y.1));
        pairs
    }

    #[tokio::test]
    async fn devices_without_a_live_owner_are_the_linked_ones_and_the_logins_left_pending() {
        let store = store().await;
        let (a, b) = (tenant(&store).await, tenant(&store).await);
        for (tenant, id, state, link) in [
            (
                &a,
                "a-in",
                DeviceState::LoggedIn,
                Link::Set("1@s.whatsapp.net"),
            ),
            (&a, "pairing", DeviceState::Connected, Link::Keep),
            (&a, "idle", DeviceState::Disconnected, Link::Keep),
            (
                &b,
                "b-in",
                DeviceState::LoggedIn,
                Link::Set("2@s.whatsapp.net"),
            ),
            (&b, "dialling", DeviceState::Connecting, Link::Keep),
        ] {
            let id = device_id(id);
            add_device(&store, tenant.id, &id).await;
            let left = DeviceChange {
                state: Some(state),
                link,
                ..DeviceChange::default()
            };
            change(&store, tenant.id, &id, left).await.unwrap();
        }
        let found = pairs(store.orphaned_devices(EXPIRY).await.unwrap());
        let mut expected = vec![
            (a.id, device_id("a-in")),
            (a.id, device_id("pairing")),
            (b.id, device_id("b-in")),
            (b.id, device_id("dialling")),
        ];
        expected.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(found, expected);
    }

    /// How long leases last in these tests.
    const EXPIRY: Duration = Duration::from_secs(15);

    /// A linked device of a new tenant.
    async fn linked_device(store: &Store) -> (TenantId, DeviceId) {
        let tenant = tenant(store).await;
        let id = device_id("leased");
        add_device(store, tenant.id, &id).await;
        let linked = DeviceChange {
            state: Some(DeviceState::LoggedIn),
            link: Link::Set("1@s.whatsapp.net"),
            ..DeviceChange::default()
        };
        change(store, tenant.id, &id, linked).await.unwrap();
        (tenant.id, id)
    }

    #[tokio::test]
    async fn a_live_nodes_lease_is_not_taken_and_a_dead_ones_is_at_once_under_a_new_epoch() {
        let store = store().await;
        let (tenant, id) = linked_device(&store).await;
        let first = store.register_node(None, "http://one").await.unwrap();
        let second = store.register_node(None, "http://two").await.unwrap();
        let scoped = store.tenant(tenant);
        let epoch = scoped
            .acquire_lease(first.id(), &id, EXPIRY)
            .await
            .unwrap()
            .expect("a free lease");
        assert_eq!(
            scoped
                .acquire_lease(second.id(), &id, EXPIRY)
                .await
                .unwrap(),
            None,
            "held by a live node"
        );
        assert!(store.orphaned_devices(EXPIRY).await.unwrap().is_empty());

        // Its connection, and with it its lock, goes with the process.
        drop(first);
        let taken = eventually_some(|| async {
            scoped
                .acquire_lease(second.id(), &id, EXPIRY)
                .await
                .unwrap()
        })
        .await;
        assert!(
            taken.epoch > epoch.epoch,
            "a takeover raises the epoch: {epoch:?} → {taken:?}"
        );
        let holder = scoped.lease(&id).await.unwrap().expect("the device");
        assert_eq!(holder.node, Some(second.id()));
    }

    #[tokio::test]
    async fn a_write_under_a_lost_lease_records_nothing() {
        let store = store().await;
        let (tenant, id) = linked_device(&store).await;
        let node = store.register_node(None, "http://one").await.unwrap();
        let scoped = store.tenant(tenant);
        let old = scoped
            .acquire_lease(node.id(), &id, EXPIRY)
            .await
            .unwrap()
            .unwrap();
        let new = scoped
            .acquire_lease(node.id(), &id, EXPIRY)
            .await
            .unwrap()
            .unwrap();
        let stale = DeviceChange {
            state: Some(DeviceState::Disconnected),
            fence: Some(old),
            ..DeviceChange::default()
        };
        let refused = scoped
            .record_events(&id, stale, vec![dropped_event()])
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::LeaseLost { .. }), "{refused}");
        let device = scoped.find_device(&id).await.unwrap().unwrap();
        assert_eq!(device.state, DeviceState::LoggedIn, "nothing was written");
        let current = DeviceChange {
            state: Some(DeviceState::Disconnected),
            fence: Some(new),
            ..DeviceChange::default()
        };
        scoped
            .record_events(&id, current, vec![dropped_event()])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn released_leases_are_free_and_a_node_sees_the_others_alive() {
        let store = store().await;
        let (tenant, id) = linked_device(&store).await;
        let node = store
            .register_node(Some("http://10.0.0.5:3000"), "http://one")
            .await
            .unwrap();
        let epoch = store
            .tenant(tenant)
            .acquire_lease(node.id(), &id, EXPIRY)
            .await
            .unwrap()
            .unwrap();
        let held = node.heartbeat(EXPIRY).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].lease, epoch);
        let nodes = store.nodes(EXPIRY).await.unwrap();
        let me = nodes
            .iter()
            .find(|n| n.id == node.id())
            .expect("registered");
        assert!(me.alive && !me.draining);
        assert_eq!(me.devices, 1);
        assert_eq!(me.address.as_deref(), Some("http://10.0.0.5:3000"));

        store.release_devices(node.id(), &held).await.unwrap();
        assert_eq!(
            pairs(store.orphaned_devices(EXPIRY).await.unwrap()),
            vec![(tenant, id)]
        );
        assert!(node.heartbeat(EXPIRY).await.unwrap().is_empty());
    }

    /// A state change to `disconnected`, as the engine records one.
    fn dropped_event() -> NewEvent {
        NewEvent::from_kind(&EngineEventKind::StateChanged {
            from: DeviceState::LoggedIn,
            to: DeviceState::Disconnected,
        })
    }

    #[tokio::test]
    async fn a_device_has_an_internal_id_for_other_tables() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let (one, two) = (device_id("one"), device_id("two"));
        add_device(&store, tenant.id, &one).await;
        add_device(&store, tenant.id, &two).await;
        let a = store
            .tenant(tenant.id)
            .device_internal_id(&one)
            .await
            .unwrap()
            .unwrap();
        let b = store
            .tenant(tenant.id)
            .device_internal_id(&two)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(a, b);
    }
}

mod device_rows {
    use super::*;
    use wagate_core::domain::{DeviceId, TenantId};
    use wagate_core::store::{DeviceCacheKeeper, DeviceChange};

    /// Starts keeping `store`'s device rows and waits until it hears every change.
    async fn keeping(store: &Store) -> DeviceCacheKeeper {
        let keeper = store.keep_device_rows();
        eventually_some(|| async { keeper.listening().then_some(()) }).await;
        keeper
    }

    async fn set_state(store: &Store, tenant: TenantId, id: &DeviceId, state: DeviceState) {
        let change = DeviceChange {
            state: Some(state),
            ..DeviceChange::default()
        };
        store
            .tenant(tenant)
            .record_events(id, change, Vec::new())
            .await
            .expect("the change is recorded");
    }

    async fn state(store: &Store, tenant: TenantId, id: &DeviceId) -> Option<DeviceState> {
        let found = store.tenant(tenant).find_device(id).await.unwrap();
        found.map(|d| d.state)
    }

    /// Two stores on one database: two nodes; and the database's URL.
    async fn two_nodes() -> (Store, Store, String) {
        let url = support::fresh_database_url().await;
        let here = Store::connect(&url).await.unwrap();
        let there = Store::connect(&url).await.unwrap();
        (here, there, url)
    }

    #[tokio::test]
    async fn a_lost_listening_connection_drops_the_kept_rows_until_it_listens_again() {
        let url = support::fresh_database_url().await;
        let store = Store::connect(&url).await.unwrap();
        let tenant = tenant(&store).await.id;
        let id = device_id("phone");
        add_device(&store, tenant, &id).await;
        let keeper = keeping(&store).await;
        state(&store, tenant, &id).await;
        assert_eq!(keeper.kept(), 1);
        let terminated = support::sql(&url)
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE query = 'LISTEN wagate_devices' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(terminated.get::<_, i64>(0), 1);
        eventually_some(|| async { (!keeper.listening()).then_some(()) }).await;
        assert_eq!(keeper.kept(), 0);
        state(&store, tenant, &id).await;
        assert_eq!(keeper.kept(), 0, "nothing is kept while changes go unheard");
        eventually_some(|| async { keeper.listening().then_some(()) }).await;
        state(&store, tenant, &id).await;
        assert_eq!(keeper.kept(), 1);
    }

    #[tokio::test]
    async fn a_change_made_on_this_node_is_read_at_once() {
        let store = store().await;
        let tenant = tenant(&store).await.id;
        let id = device_id("phone");
        add_device(&store, tenant, &id).await;
        let _keeper = keeping(&store).await;
        assert_eq!(
            state(&store, tenant, &id).await,
            Some(DeviceState::Disconnected)
        );
        set_state(&store, tenant, &id, DeviceState::Connecting).await;
        assert_eq!(
            state(&store, tenant, &id).await,
            Some(DeviceState::Connecting)
        );
        assert!(store.tenant(tenant).delete_device(&id).await.unwrap());
        assert_eq!(state(&store, tenant, &id).await, None);
    }

    #[tokio::test]
    async fn a_change_made_on_another_node_is_read_once_heard() {
        let (here, there, _) = two_nodes().await;
        let tenant = tenant(&there).await.id;
        let id = device_id("phone");
        add_device(&there, tenant, &id).await;
        let keeper = keeping(&here).await;
        assert_eq!(
            state(&here, tenant, &id).await,
            Some(DeviceState::Disconnected)
        );
        assert_eq!(keeper.kept(), 1);
        set_state(&there, tenant, &id, DeviceState::Connecting).await;
        eventually_some(|| async {
            (state(&here, tenant, &id).await == Some(DeviceState::Connecting)).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn a_device_deleted_on_another_node_is_not_found_once_heard() {
        let (here, there, _) = two_nodes().await;
        let tenant = tenant(&there).await.id;
        let id = device_id("phone");
        add_device(&there, tenant, &id).await;
        let keeper = keeping(&here).await;
        assert!(state(&here, tenant, &id).await.is_some());
        assert!(there.tenant(tenant).delete_device(&id).await.unwrap());
        eventually_some(|| async { state(&here, tenant, &id).await.is_none().then_some(()) }).await;
        assert_eq!(keeper.kept(), 0);
    }

    #[tokio::test]
    async fn a_write_to_other_columns_of_a_device_keeps_its_row() {
        let (here, there, url) = two_nodes().await;
        let tenant = tenant(&there).await.id;
        let (renewed, changed) = (device_id("renewed"), device_id("changed"));
        add_device(&there, tenant, &renewed).await;
        add_device(&there, tenant, &changed).await;
        let keeper = keeping(&here).await;
        state(&here, tenant, &renewed).await;
        state(&here, tenant, &changed).await;
        assert_eq!(keeper.kept(), 2);
        // As a lease renewal does: a column that is not kept.
        support::sql(&url)
            .await
            .execute(
                "UPDATE devices SET updated_at = now() WHERE device_id = 'renewed'",
                &[],
            )
            .await
            .unwrap();
        set_state(&there, tenant, &changed, DeviceState::Connecting).await;
        // Notifications arrive in commit order: once the later change is heard, the earlier
        // write would have been.
        eventually_some(|| async {
            (state(&here, tenant, &changed).await == Some(DeviceState::Connecting)).then_some(())
        })
        .await;
        assert_eq!(keeper.kept(), 2, "the renewed device's row is still kept");
    }

    #[tokio::test]
    async fn deleting_a_tenant_drops_its_kept_rows() {
        let store = store().await;
        let tenant = tenant(&store).await.id;
        let id = device_id("phone");
        add_device(&store, tenant, &id).await;
        let keeper = keeping(&store).await;
        state(&store, tenant, &id).await;
        store.delete_tenant(tenant).await.unwrap();
        assert_eq!(keeper.kept(), 0);
        assert_eq!(state(&store, tenant, &id).await, None);
    }
}

mod qr_images {
    use super::*;
    use wagate_core::engine::qr_png;
    use wagate_core::store::QrImage;

    fn in_a_minute() -> chrono::DateTime<Utc> {
        Utc::now() + chrono::Duration::minutes(1)
    }

    fn a_minute_ago() -> chrono::DateTime<Utc> {
        Utc::now() - chrono::Duration::minutes(1)
    }

    #[tokio::test]
    async fn a_stored_qr_image_is_served_by_its_id() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let code = "2@ref,noise,identity,adv";
        let image = store
            .tenant(tenant.id)
            .put_qr_image(&id, code, in_a_minute())
            .await
            .unwrap();
        assert_eq!(
            store.qr_image(image).await.unwrap(),
            Some(QrImage::Code(code.to_string()))
        );
    }

    #[tokio::test]
    async fn a_qr_image_is_rendered_on_its_first_fetch_and_kept() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let image = store
            .tenant(tenant.id)
            .put_qr_image(&id, "2@ref,noise,identity,adv", in_a_minute())
            .await
            .unwrap();

        let png = qr_png(&store, image).await.unwrap().expect("served");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        assert_eq!(
            store.qr_image(image).await.unwrap(),
            Some(QrImage::Png(png.clone())),
            "the rendering is kept for the next fetch"
        );
        store.keep_qr_png(image, b"another").await.unwrap();
        assert_eq!(qr_png(&store, image).await.unwrap(), Some(png));
    }

    #[tokio::test]
    async fn an_expired_qr_image_is_not_served() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let image = store
            .tenant(tenant.id)
            .put_qr_image(&id, "one", a_minute_ago())
            .await
            .unwrap();
        assert_eq!(store.qr_image(image).await.unwrap(), None);
    }

    #[tokio::test]
    async fn purging_deletes_only_expired_qr_images() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        store
            .tenant(tenant.id)
            .put_qr_image(&id, "one", a_minute_ago())
            .await
            .unwrap();
        let live = store
            .tenant(tenant.id)
            .put_qr_image(&id, "two", in_a_minute())
            .await
            .unwrap();
        assert_eq!(store.purge_expired_qr_images().await.unwrap(), 1);
        assert_eq!(
            store.qr_image(live).await.unwrap(),
            Some(QrImage::Code("two".into()))
        );
    }

    #[tokio::test]
    async fn qr_images_go_with_their_device() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        add_device(&store, tenant.id, &id).await;
        let image = store
            .tenant(tenant.id)
            .put_qr_image(&id, "one", in_a_minute())
            .await
            .unwrap();
        store.tenant(tenant.id).delete_device(&id).await.unwrap();
        assert_eq!(store.qr_image(image).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_qr_image_needs_a_device_of_the_tenant() {
        let store = store().await;
        let (owner, other) = (tenant(&store).await, tenant(&store).await);
        let id = device_id("phone-1");
        add_device(&store, owner.id, &id).await;
        let err = store
            .tenant(other.id)
            .put_qr_image(&id, "one", in_a_minute())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::DeviceNotFound { tenant, device_id } if *tenant == other.id && *device_id == id),
            "{err}"
        );
    }
}

mod cluster {
    use super::*;

    fn postmaster_pid(cluster: &Cluster) -> String {
        let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
        pid_file.lines().next().unwrap().to_string()
    }

    /// Waits until `pid` stopped running; a zombie has.
    async fn gone(pid: &str) {
        for _ in 0..1000 {
            if std::fs::read_link(format!("/proc/{pid}/cwd")).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {pid} survived kill -9");
    }

    #[tokio::test]
    async fn a_cluster_starts_again_after_its_server_was_killed() {
        // A private (0700) directory, as tempdirs are, tests reaching it as the postgres user.
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("pg");
        let options = ClusterOptions {
            throwaway: false,
            ..support::throwaway_options()
        };
        let first = Cluster::start(&data_dir, options.clone()).await.unwrap();
        let pid = postmaster_pid(&first);
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        gone(&pid).await;
        // As when the process that started it died too: the watchdog goes, nothing is stopped.
        drop(first);

        // The killed server's pid and socket lock files are in the way of the second.
        let second = Cluster::start(&data_dir, options).await.unwrap();
        // With fsync off, the last commits before the kill may be lost, so this checks only
        // that the server serves again.
        let store = Store::connect(&second.url()).await.unwrap();
        store.create_tenant("after the kill").await.unwrap();
        drop(store);
        second.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_throwaway_cluster_leaves_no_directory() {
        let dir = std::env::temp_dir().join(format!("wagate-test-pg-{}", uuid::Uuid::new_v4()));
        let cluster = Cluster::start(&dir, support::throwaway_options())
            .await
            .unwrap();
        assert!(dir.join("PG_VERSION").exists());
        cluster.stop().await.unwrap();
        assert!(!dir.exists());
    }

    fn throwaway_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("wagate-test-pg-{}", uuid::Uuid::new_v4()))
    }

    #[tokio::test]
    async fn a_second_cluster_on_a_running_directory_is_refused() {
        let cluster = Cluster::start(&throwaway_dir(), support::throwaway_options())
            .await
            .unwrap();
        let err = Cluster::start(cluster.data_dir(), support::throwaway_options())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("another wagate runs PostgreSQL"),
            "{err}"
        );
        assert!(cluster.data_dir().join("PG_VERSION").exists());
        cluster.stop().await.unwrap();
    }

    #[tokio::test]
    async fn opening_a_running_directory_shares_its_server_and_leaves_it_running() {
        let cluster = Cluster::start(&throwaway_dir(), support::throwaway_options())
            .await
            .unwrap();
        let shared = Cluster::open(cluster.data_dir(), support::throwaway_options())
            .await
            .unwrap();
        assert_eq!(shared.url(), cluster.url());
        let store = Store::connect(&shared.url()).await.unwrap();
        store
            .create_tenant("through the shared cluster")
            .await
            .unwrap();
        drop(store);
        shared.stop().await.unwrap();

        let store = Store::connect(&cluster.url()).await.unwrap();
        store.create_tenant("after the sharer left").await.unwrap();
        drop(store);
        cluster.stop().await.unwrap();
    }

    async fn query_one_text(url: &str, statement: &str) -> String {
        support::sql(url)
            .await
            .query_one(statement, &[])
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn the_server_listens_on_no_tcp_port_and_admits_only_its_socket() {
        let cluster = Cluster::start(&throwaway_dir(), support::throwaway_options())
            .await
            .unwrap();
        let admin = cluster.superuser_url();
        assert_eq!(query_one_text(&admin, "SHOW listen_addresses").await, "");
        let rule_types = query_one_text(
            &admin,
            "SELECT string_agg(DISTINCT type, ',') FROM pg_hba_file_rules",
        )
        .await;
        assert_eq!(rule_types, "local");
        let mode = std::fs::metadata(cluster.socket_dir()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700, "the socket directory is private");
        cluster.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_gateway_role_is_no_superuser_and_owns_its_database() {
        let cluster = Cluster::start(&throwaway_dir(), support::throwaway_options())
            .await
            .unwrap();
        let store = Store::connect(&cluster.url()).await.unwrap();
        drop(store);
        let who = query_one_text(
            &cluster.url(),
            "SELECT current_user || ',' || rolsuper || ',' || rolcreaterole || ','
                    || pg_get_userbyid(d.datdba)
             FROM pg_roles r, pg_database d
             WHERE r.rolname = current_user AND d.datname = current_database()",
        )
        .await;
        assert_eq!(who, format!("{APP_ROLE},false,false,{APP_ROLE}"));
        // The migrations ran as that role: every table is its own.
        let foreign = query_one_text(
            &cluster.url(),
            "SELECT count(*)::text FROM pg_tables
             WHERE schemaname = 'public' AND tableowner <> current_user",
        )
        .await;
        assert_eq!(foreign, "0");
        cluster.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_cluster_from_before_the_access_rule_is_closed_and_handed_to_the_gateway_role() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("pg");
        let options = ClusterOptions {
            throwaway: false,
            ..support::throwaway_options()
        };
        let cluster = Cluster::start(&data_dir, options.clone()).await.unwrap();
        // As wagate left it before: everything the superuser's, and TCP trusted.
        let old_database = support::with_database(&cluster.superuser_url(), "wagate");
        let client = support::sql(&old_database).await;
        client
            .batch_execute(
                "CREATE TABLE tenants_before (id serial PRIMARY KEY, name text);
                 ALTER DATABASE wagate OWNER TO wagate;
                 ALTER SCHEMA public OWNER TO wagate;",
            )
            .await
            .unwrap();
        drop(client);
        cluster.stop().await.unwrap();
        std::fs::write(
            data_dir.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap();

        let cluster = Cluster::start(&data_dir, options).await.unwrap();
        let owners = query_one_text(
            &support::with_database(&cluster.superuser_url(), "wagate"),
            "SELECT (SELECT tableowner FROM pg_tables WHERE tablename = 'tenants_before')
                    || ',' || (SELECT pg_get_userbyid(datdba) FROM pg_database
                               WHERE datname = 'wagate')
                    || ',' || (SELECT pg_get_userbyid(nspowner) FROM pg_namespace
                               WHERE nspname = 'public')",
        )
        .await;
        assert_eq!(owners, format!("{APP_ROLE},{APP_ROLE},{APP_ROLE}"));
        let rule_types = query_one_text(
            &cluster.superuser_url(),
            "SELECT string_agg(DISTINCT type, ',') FROM pg_hba_file_rules",
        )
        .await;
        assert_eq!(rule_types, "local");
        // The gateway role may now write the old table, sequence included.
        let inserted = query_one_text(
            &cluster.url(),
            "INSERT INTO tenants_before (name) VALUES ('x') RETURNING id::text",
        )
        .await;
        assert_eq!(inserted, "1");
        cluster.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_data_directory_too_long_for_a_socket_gets_a_private_socket_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("d".repeat(100));
        let cluster = Cluster::start(&data_dir, support::throwaway_options())
            .await
            .unwrap();
        assert!(!cluster.socket_dir().starts_with(&data_dir));
        let meta = std::fs::metadata(cluster.socket_dir()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        let store = Store::connect(&cluster.url()).await.unwrap();
        store
            .create_tenant("over the fallback socket")
            .await
            .unwrap();
        drop(store);
        cluster.stop().await.unwrap();
    }
}

mod outbox {
    use super::*;
    use wagate_core::events::{EngineEventKind, NewEvent};
    use wagate_core::store::{
        DeliveryOutcome, DeliveryStatus, DeviceChange, NewEndpoint, OutboxWake,
    };

    fn state_changed() -> NewEvent {
        NewEvent::from_kind(&EngineEventKind::StateChanged {
            from: DeviceState::Disconnected,
            to: DeviceState::Connecting,
        })
    }

    fn endpoint(events: &[&str], devices: Option<&[&str]>) -> NewEndpoint {
        NewEndpoint {
            url: "http://127.0.0.1:9/hook".into(),
            description: String::new(),
            events: events.iter().map(|e| e.to_string()).collect(),
            device_ids: devices.map(|d| d.iter().map(|e| e.to_string()).collect()),
        }
    }

    /// An endpoint of `tenant` for `events` (and, given, only `devices`).
    async fn hook(
        store: &Store,
        tenant: wagate_core::domain::TenantId,
        events: &[&str],
        devices: Option<&[&str]>,
    ) -> wagate_core::store::Endpoint {
        store
            .tenant(tenant)
            .create_endpoint(&endpoint(events, devices), "whsec_x")
            .await
            .unwrap()
    }

    /// Waits until a statement on the database at `url` waits for a lock another holds.
    async fn until_one_waits_for_a_lock(url: &str) {
        let watcher = support::sql(url).await;
        for _ in 0..500 {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no statement came to wait for a lock within 5 s");
    }

    #[tokio::test]
    async fn deleting_an_endpoint_outlasts_a_deadlock_with_a_batch_update_of_its_deliveries() {
        let url = support::fresh_database_url().await;
        let store = Store::connect(&url).await.unwrap();
        let tenant = tenant(&store).await.id;
        let d1 = device_id("d1");
        add_device(&store, tenant, &d1).await;
        let hook = hook(&store, tenant, &["state_changed"], None).await;
        for _ in 0..2 {
            store
                .tenant(tenant)
                .record_events(&d1, DeviceChange::default(), vec![state_changed()])
                .await
                .unwrap();
        }
        // A batch (as the dispatcher settles one) holds the newer delivery, which the
        // cascade reaches last (it scans the small table in the order rows were written), and
        // then wants the older one while the delete holds it.
        let batch = support::sql(&url).await;
        batch.batch_execute("BEGIN").await.unwrap();
        batch
            .execute(
                "UPDATE webhook_deliveries SET lease_owner = 1 WHERE id =
                    (SELECT id FROM webhook_deliveries ORDER BY created_at DESC LIMIT 1)",
                &[],
            )
            .await
            .unwrap();
        let deleting = {
            let store = store.clone();
            tokio::spawn(async move { store.tenant(tenant).delete_endpoint(hook.id).await })
        };
        until_one_waits_for_a_lock(&url).await;
        batch
            .execute(
                "UPDATE webhook_deliveries SET lease_owner = 1 WHERE lease_owner IS NULL",
                &[],
            )
            .await
            .expect("the delete, which waited first, is the deadlock's victim");
        batch.batch_execute("COMMIT").await.unwrap();

        let deleted = deleting.await.unwrap();
        assert!(
            matches!(deleted, Ok(true)),
            "the delete ran again after the deadlock: {deleted:?}"
        );
        let left: i64 = batch
            .query_one("SELECT count(*) FROM webhook_deliveries", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "the endpoint's deliveries went with it");
    }

    #[tokio::test]
    async fn events_recorded_while_their_endpoint_is_deleted_are_kept() {
        let url = support::fresh_database_url().await;
        let store = Store::connect(&url).await.unwrap();
        let tenant = tenant(&store).await.id;
        let d1 = device_id("d1");
        add_device(&store, tenant, &d1).await;
        let hook = hook(&store, tenant, &["state_changed"], None).await;
        let deleting = support::sql(&url).await;
        deleting
            .batch_execute(&format!(
                "BEGIN; DELETE FROM webhook_endpoints WHERE id = '{}'",
                hook.id
            ))
            .await
            .unwrap();
        let recording = {
            let store = store.clone();
            let d1 = d1.clone();
            tokio::spawn(async move {
                store
                    .tenant(tenant)
                    .record_events(&d1, DeviceChange::default(), vec![state_changed()])
                    .await
            })
        };
        until_one_waits_for_a_lock(&url).await;
        deleting.batch_execute("COMMIT").await.unwrap();

        let recorded = recording
            .await
            .unwrap()
            .expect("the event is recorded though its endpoint went meanwhile");
        let (events, deliveries): (i64, i64) = deleting
            .query_one(
                "SELECT (SELECT count(*) FROM events WHERE id = $1),
                        (SELECT count(*) FROM webhook_deliveries)",
                &[&recorded[0].id],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        assert_eq!((events, deliveries), (1, 0));
    }

    #[tokio::test]
    async fn events_are_numbered_per_device_and_queued_for_the_endpoints_that_want_them() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let other = store.create_tenant("other").await.unwrap().0;
        let (d1, d2) = (device_id("d1"), device_id("d2"));
        for id in [&d1, &d2] {
            store
                .tenant(tenant.id)
                .create_device(id, None)
                .await
                .unwrap();
        }
        let all = hook(&store, tenant.id, &["state_changed"], None).await;
        let only_d2 = hook(&store, tenant.id, &["state_changed"], Some(&["d2"])).await;
        let wrong_type = hook(&store, tenant.id, &["logged_in"], None).await;
        let foreign = hook(&store, other.id, &["state_changed"], None).await;

        let first = store
            .tenant(tenant.id)
            .record_events(
                &d1,
                DeviceChange::default(),
                vec![state_changed(), state_changed()],
            )
            .await
            .unwrap();
        let second = store
            .tenant(tenant.id)
            .record_events(
                &d1,
                DeviceChange {
                    state: Some(DeviceState::Connecting),
                    ..DeviceChange::default()
                },
                vec![state_changed()],
            )
            .await
            .unwrap();
        store
            .tenant(tenant.id)
            .record_events(&d2, DeviceChange::default(), vec![state_changed()])
            .await
            .unwrap();

        let seqs: Vec<i64> = first.iter().chain(&second).map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let device = store
            .tenant(tenant.id)
            .find_device(&d1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            device.state,
            DeviceState::Connecting,
            "the change went with its events"
        );
        let queued = |endpoint: uuid::Uuid, tenant: wagate_core::domain::TenantId| {
            let store = store.clone();
            async move {
                store
                    .tenant(tenant)
                    .list_deliveries(endpoint, None, 100, None)
                    .await
                    .unwrap()
                    .deliveries
                    .len()
            }
        };
        assert_eq!(queued(all.id, tenant.id).await, 4);
        assert_eq!(queued(only_d2.id, tenant.id).await, 1);
        assert_eq!(queued(wrong_type.id, tenant.id).await, 0);
        assert_eq!(queued(foreign.id, other.id).await, 0);
    }

    #[tokio::test]
    async fn events_of_a_device_that_does_not_exist_are_not_recorded() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let endpoint = hook(&store, tenant.id, &["state_changed"], None).await;
        let err = store
            .tenant(tenant.id)
            .record_events(
                &device_id("ghost"),
                DeviceChange::default(),
                vec![state_changed()],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        let page = store
            .tenant(tenant.id)
            .list_deliveries(endpoint.id, None, 10, None)
            .await
            .unwrap();
        assert!(page.deliveries.is_empty());
    }

    #[tokio::test]
    async fn a_change_only_from_a_state_is_not_recorded_once_the_device_left_it() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let endpoint = hook(&store, tenant.id, &["state_changed"], None).await;
        let d1 = device_id("d1");
        add_device(&store, tenant.id, &d1).await;
        let from_connecting = DeviceChange {
            state: Some(DeviceState::Connected),
            only_from: Some(DeviceState::Connecting),
            ..DeviceChange::default()
        };

        let err = store
            .tenant(tenant.id)
            .record_events(&d1, from_connecting, vec![state_changed()])
            .await
            .unwrap_err();

        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
        let device = store
            .tenant(tenant.id)
            .find_device(&d1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(device.state, DeviceState::Disconnected);
        let page = store
            .tenant(tenant.id)
            .list_deliveries(endpoint.id, None, 10, None)
            .await
            .unwrap();
        assert!(page.deliveries.is_empty());
    }

    /// One endpoint, one device, one queued event.
    async fn one_queued() -> (Store, wagate_core::domain::TenantId, uuid::Uuid) {
        let store = store().await;
        let tenant = tenant(&store).await;
        let d1 = device_id("d1");
        add_device(&store, tenant.id, &d1).await;
        let endpoint = hook(&store, tenant.id, &["state_changed"], None).await;
        store
            .tenant(tenant.id)
            .record_events(&d1, DeviceChange::default(), vec![state_changed()])
            .await
            .unwrap();
        (store, tenant.id, endpoint.id)
    }

    const LEASE: Duration = Duration::from_secs(300);

    /// Up to ten due deliveries, claimed by dispatcher `owner`.
    async fn claim(store: &Store, owner: i32) -> Vec<wagate_core::store::ClaimedDelivery> {
        store.claim_deliveries(owner, LEASE, 10, &[]).await.unwrap()
    }

    #[tokio::test]
    async fn a_claim_of_a_dispatcher_that_died_comes_back_at_once() {
        let (store, _, _) = one_queued().await;
        // Owner 7 holds no lock: it is a process that is gone.
        assert_eq!(claim(&store, 7).await.len(), 1);
        assert!(claim(&store, 8).await.is_empty(), "leased");
        assert_eq!(store.release_orphaned_claims().await.unwrap(), 1);
        assert_eq!(claim(&store, 8).await.len(), 1);
    }

    #[tokio::test]
    async fn the_outbox_listener_hears_which_endpoints_got_deliveries() {
        let (store, tenant, endpoint) = one_queued().await;
        let mut listener = store.listen_outbox(71).await.unwrap();
        store
            .tenant(tenant)
            .record_events(
                &device_id("d1"),
                DeviceChange::default(),
                vec![state_changed()],
            )
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), listener.notified())
            .await
            .expect("a wake-up within 10 s");
        assert_eq!(
            heard,
            Some(OutboxWake::Endpoints(std::collections::HashSet::from([
                endpoint
            ])))
        );
    }

    #[tokio::test]
    async fn a_claim_of_a_live_dispatcher_stays_with_it() {
        let (store, _, _) = one_queued().await;
        let _alive = store.listen_outbox(11).await.unwrap();
        assert_eq!(claim(&store, 11).await.len(), 1);
        assert_eq!(store.release_orphaned_claims().await.unwrap(), 0);
        assert!(claim(&store, 12).await.is_empty());
    }

    #[tokio::test]
    async fn a_stopping_dispatcher_hands_back_its_own_claims_only() {
        let (store, tenant, hook) = one_queued().await;
        let d1 = device_id("d1");
        store
            .tenant(tenant)
            .record_events(&d1, DeviceChange::default(), vec![state_changed()])
            .await
            .unwrap();
        let _alive = store.listen_outbox(61).await.unwrap();
        let _other = store.listen_outbox(62).await.unwrap();
        let mine = store.claim_deliveries(61, LEASE, 1, &[]).await.unwrap();
        let theirs = store.claim_deliveries(62, LEASE, 1, &[]).await.unwrap();
        assert_eq!((mine.len(), theirs.len()), (1, 1));

        assert_eq!(store.release_claims_of(61).await.unwrap(), 1);

        let again = claim(&store, 63).await;
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].id, mine[0].id,
            "only the stopping one's claim came back"
        );
        let log = store
            .tenant(tenant)
            .list_deliveries(hook, None, 10, None)
            .await
            .unwrap();
        assert_eq!(log.deliveries.len(), 2);
    }

    #[tokio::test]
    async fn only_the_lease_owner_settles_a_delivery() {
        let (store, tenant, hook) = one_queued().await;
        let claimed = claim(&store, 21).await;
        let id = claimed[0].id;
        let delivered = DeliveryOutcome::Delivered { status_code: 204 };
        store
            .settle_deliveries(22, &[(id, Utc::now(), delivered.clone())], &[])
            .await
            .unwrap();
        let log = store
            .tenant(tenant)
            .list_deliveries(hook, None, 10, None)
            .await
            .unwrap();
        assert_eq!(
            log.deliveries[0].status,
            DeliveryStatus::Pending,
            "not its lease"
        );
        store
            .settle_deliveries(21, &[(id, Utc::now(), delivered)], &[])
            .await
            .unwrap();
        let log = store
            .tenant(tenant)
            .list_deliveries(hook, None, 10, None)
            .await
            .unwrap();
        assert_eq!(log.deliveries[0].status, DeliveryStatus::Delivered);
        assert_eq!(log.deliveries[0].attempts, 1);
        assert_eq!(log.deliveries[0].last_status_code, Some(204));
    }

    #[tokio::test]
    async fn a_saturated_endpoint_is_skipped_by_claims() {
        let (store, _, hook) = one_queued().await;
        assert!(
            store
                .claim_deliveries(31, LEASE, 10, &[hook])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(claim(&store, 31).await.len(), 1);
    }

    #[tokio::test]
    async fn old_events_go_once_nothing_is_pending_for_them() {
        let (store, tenant, hook) = one_queued().await;
        assert_eq!(
            store.purge_events(Duration::ZERO).await.unwrap(),
            0,
            "still pending"
        );
        let claimed = claim(&store, 41).await;
        let delivered = DeliveryOutcome::Delivered { status_code: 200 };
        store
            .settle_deliveries(41, &[(claimed[0].id, Utc::now(), delivered)], &[])
            .await
            .unwrap();
        assert_eq!(
            store.purge_events(Duration::from_secs(3600)).await.unwrap(),
            0,
            "recent"
        );
        assert_eq!(store.purge_events(Duration::ZERO).await.unwrap(), 1);
        let log = store
            .tenant(tenant)
            .list_deliveries(hook, None, 10, None)
            .await
            .unwrap();
        assert!(log.deliveries.is_empty());
    }

    #[tokio::test]
    async fn a_qr_event_whose_code_expired_is_not_delivered() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let d1 = device_id("d1");
        add_device(&store, tenant.id, &d1).await;
        let endpoint = hook(&store, tenant.id, &["qr_refreshed"], None).await;
        let expired = NewEvent::from_kind(&EngineEventKind::QrRefreshed {
            qr_code: "2@x".into(),
            link: "http://localhost/qr.png".into(),
            expires_at: Utc::now() - chrono::Duration::seconds(1),
            index: 0,
            refreshed: false,
        });
        store
            .tenant(tenant.id)
            .record_events(&d1, DeviceChange::default(), vec![expired])
            .await
            .unwrap();

        assert!(claim(&store, 51).await.is_empty());
        assert_eq!(store.expire_deliveries().await.unwrap(), 1);
        let log = store
            .tenant(tenant.id)
            .list_deliveries(endpoint.id, None, 10, None)
            .await
            .unwrap();
        assert_eq!(log.deliveries[0].status, DeliveryStatus::Expired);
    }
}

mod link_tokens {
    use chrono::{SubsecRound as _, TimeDelta};
    use wagate_core::domain::DeviceId;
    use wagate_core::store::{DeviceChange, Link};

    use super::*;

    fn in_ten_minutes() -> chrono::DateTime<Utc> {
        (Utc::now() + TimeDelta::minutes(10)).trunc_subsecs(3)
    }

    #[tokio::test]
    async fn a_token_reaches_its_device_and_no_other_string_does() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("d1");
        add_device(&store, tenant.id, &id).await;
        let expires_at = in_ten_minutes();

        let token = store
            .tenant(tenant.id)
            .create_link_token(&id, expires_at)
            .await
            .unwrap();
        let found = store.link_token(&token).await.unwrap().expect("found");

        assert_eq!(found.tenant, tenant.id);
        assert_eq!(found.device, id);
        assert_eq!(found.state, DeviceState::Disconnected);
        assert_eq!(found.expires_at, expires_at);
        assert_eq!((found.used_at, found.revoked_at), (None, None));
        let mut other = token.clone().into_bytes();
        other[0] = if other[0] == b'A' { b'B' } else { b'A' };
        let other = String::from_utf8(other).unwrap();
        for unknown in [other.as_str(), "", "not a token", &token[1..]] {
            assert_eq!(store.link_token(unknown).await.unwrap(), None, "{unknown}");
        }
    }

    #[tokio::test]
    async fn another_tenants_device_gets_no_token() {
        let store = store().await;
        let owner = tenant(&store).await;
        let other = tenant(&store).await;
        let id = device_id("d1");
        add_device(&store, owner.id, &id).await;

        let made = store
            .tenant(other.id)
            .create_link_token(&id, in_ten_minutes())
            .await;
        let revoked = store.tenant(other.id).revoke_link_tokens(&id).await;

        assert!(
            matches!(made, Err(StoreError::DeviceNotFound { .. })),
            "{made:?}"
        );
        assert!(
            matches!(revoked, Err(StoreError::DeviceNotFound { .. })),
            "{revoked:?}"
        );
    }

    #[tokio::test]
    async fn revoking_counts_the_tokens_that_still_worked() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id = device_id("d1");
        add_device(&store, tenant.id, &id).await;
        let scoped = store.tenant(tenant.id);
        let first = scoped
            .create_link_token(&id, in_ten_minutes())
            .await
            .unwrap();
        scoped
            .create_link_token(&id, in_ten_minutes())
            .await
            .unwrap();
        let past = Utc::now() - TimeDelta::minutes(1);
        scoped.create_link_token(&id, past).await.unwrap();

        assert_eq!(scoped.revoke_link_tokens(&id).await.unwrap(), 2);
        assert_eq!(scoped.revoke_link_tokens(&id).await.unwrap(), 0);
        let revoked = store.link_token(&first).await.unwrap().expect("kept");
        assert!(revoked.revoked_at.is_some());
    }

    #[tokio::test]
    async fn a_login_uses_up_the_devices_tokens_and_a_deletion_takes_them() {
        let store = store().await;
        let tenant = tenant(&store).await;
        let id: DeviceId = device_id("d1");
        add_device(&store, tenant.id, &id).await;
        let scoped = store.tenant(tenant.id);
        let token = scoped
            .create_link_token(&id, in_ten_minutes())
            .await
            .unwrap();

        let login = DeviceChange {
            state: Some(DeviceState::LoggedIn),
            link: Link::Set("628912344551:3@s.whatsapp.net"),
            only_from: None,
            fence: None,
        };
        scoped.record_events(&id, login, Vec::new()).await.unwrap();
        let used = store.link_token(&token).await.unwrap().expect("kept");
        scoped.delete_device(&id).await.unwrap();

        assert!(used.used_at.is_some(), "{used:?}");
        assert_eq!(used.state, DeviceState::LoggedIn);
        assert_eq!(store.link_token(&token).await.unwrap(), None);
    }
}
