//! whatsapp-rust's storage backend on PostgreSQL (`PgBackend`) against a real server: every
//! method group's round trip, overwrite, delete, miss and batch behaviour, isolation between
//! devices, the cascade on device deletion, the end of a link (`Link::End`) emptying them, and
//! the library's own device persistence on top of it.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use support::{add_device, device_id, sql, tenant};
use wagate_core::domain::{DeviceId, DeviceState, TenantId};
use wagate_core::events::RecordedEvent;
use wagate_core::store::keys::PgBackend;
use wagate_core::store::{DeviceChange, Link, Store, StoreError};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceInfo, DeviceListRecord, DeviceStore,
    LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow,
    ProtocolStore, SignalStore, TcTokenEntry,
};

/// A store on a fresh database, and that database's URL for direct SQL checks.
async fn store_and_url() -> (Store, String) {
    let url = support::fresh_database_url().await;
    let store = Store::connect(&url).await.expect("the store connects");
    (store, url)
}

/// A new device (in a new tenant) and its backend.
async fn new_backend(store: &Store) -> PgBackend {
    let tenant = tenant(store).await;
    let id = device_id("phone-1");
    store
        .tenant(tenant.id)
        .create_device(&id, None)
        .await
        .expect("device created");
    store
        .tenant(tenant.id)
        .key_store(&id, None)
        .await
        .expect("key store looked up")
        .expect("the device exists")
}

/// A backend on a store of its own.
async fn backend() -> PgBackend {
    new_backend(&support::store().await).await
}

/// Rows of every `wa_` table that belong to `device`, by table.
async fn rows_by_table(url: &str, device: i64) -> HashMap<String, i64> {
    let client = sql(url).await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.columns
             WHERE column_name = 'device_internal_id' AND table_name LIKE 'wa\\_%'
             ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut counts = HashMap::new();
    for table in tables {
        let count: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE device_internal_id = $1"),
                &[&device],
            )
            .await
            .unwrap()
            .get(0);
        counts.insert(table, count);
    }
    counts
}

/// Pre-keys `1..=n`, each record `prekey-{id}`.
fn numbered_prekeys(n: u32) -> Vec<(u32, Bytes)> {
    (1..=n)
        .map(|id| (id, Bytes::from(format!("prekey-{id}"))))
        .collect()
}

fn mapping(lid: &str, phone: &str, updated_at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_string(),
        phone_number: phone.to_string(),
        created_at: 100,
        updated_at,
        learning_source: "usync".to_string(),
    }
}

fn device_list(user: &str, devices: &[u32]) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_string(),
        devices: devices
            .iter()
            .map(|&d| DeviceInfo::new(d, Some(d)))
            .collect(),
        timestamp: 42,
        phash: Some("2:abc".to_string()),
        raw_id: Some(7),
    }
}

fn secret(chat: &str, msg_id: &str, byte: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from("111@s.whatsapp.net"),
        msg_id: Arc::from(msg_id),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

/// Writes one row of every kind through `b`.
async fn populate(b: &PgBackend) {
    b.put_identity("111@s.whatsapp.net", [1; 32]).await.unwrap();
    b.put_session("111@s.whatsapp.net", b"session")
        .await
        .unwrap();
    b.store_prekey(1, b"prekey", false).await.unwrap();
    b.store_signed_prekey(1, b"signed").await.unwrap();
    b.put_sender_key("group::111", b"sender").await.unwrap();
    b.set_sync_key(b"key-1", AppStateSyncKey::default())
        .await
        .unwrap();
    b.set_version("regular", HashState::default())
        .await
        .unwrap();
    b.put_mutation_macs(
        "regular",
        1,
        &[AppStateMutationMAC {
            index_mac: vec![1; 32],
            value_mac: vec![2; 32],
        }],
    )
    .await
    .unwrap();
    b.set_sender_key_status("g@g.us", &[("111:1@s.whatsapp.net", true)])
        .await
        .unwrap();
    b.put_lid_mapping(&mapping("900", "111", 1)).await.unwrap();
    b.save_base_key("111@s.whatsapp.net", "m1", b"base")
        .await
        .unwrap();
    b.update_device_list(device_list("111", &[0, 1]))
        .await
        .unwrap();
    b.put_group_metadata("g@g.us", b"meta").await.unwrap();
    b.put_tc_token(
        "900@lid",
        &TcTokenEntry {
            token: b"tok".to_vec(),
            token_timestamp: 5,
            sender_timestamp: None,
        },
    )
    .await
    .unwrap();
    b.store_sent_message("111@s.whatsapp.net", "m1", b"payload")
        .await
        .unwrap();
    b.store_pending_inbound("c", "s", "m1", b"pending")
        .await
        .unwrap();
    b.put_msg_secret("c", "s", "m1", &[9; 32]).await.unwrap();
    b.create().await.unwrap();
}

mod signal {
    use super::*;

    #[tokio::test]
    async fn an_identity_round_trips_and_a_missing_one_is_none() {
        let b = backend().await;
        assert_eq!(b.load_identity("111@s.whatsapp.net").await.unwrap(), None);
        b.put_identity("111@s.whatsapp.net", [7; 32]).await.unwrap();
        assert_eq!(
            b.load_identity("111@s.whatsapp.net").await.unwrap(),
            Some([7; 32])
        );
    }

    #[tokio::test]
    async fn an_identity_is_overwritten_and_deleted() {
        let b = backend().await;
        b.put_identity("a@s.whatsapp.net", [1; 32]).await.unwrap();
        b.put_identity("a@s.whatsapp.net", [2; 32]).await.unwrap();
        assert_eq!(
            b.load_identity("a@s.whatsapp.net").await.unwrap(),
            Some([2; 32])
        );
        b.delete_identity("a@s.whatsapp.net").await.unwrap();
        assert_eq!(b.load_identity("a@s.whatsapp.net").await.unwrap(), None);
        // Deleting what is not there is not an error.
        b.delete_identity("a@s.whatsapp.net").await.unwrap();
    }

    #[tokio::test]
    async fn an_identity_batch_with_a_repeated_address_keeps_the_last() {
        let b = backend().await;
        b.put_identity("b@s.whatsapp.net", [9; 32]).await.unwrap();
        let batch: Vec<(Arc<str>, [u8; 32])> = vec![
            (Arc::from("a@s.whatsapp.net"), [1; 32]),
            (Arc::from("b@s.whatsapp.net"), [2; 32]),
            (Arc::from("a@s.whatsapp.net"), [3; 32]),
        ];
        b.put_identities_batch(&batch).await.unwrap();
        b.put_identities_batch(&[]).await.unwrap();
        assert_eq!(
            b.load_identity("a@s.whatsapp.net").await.unwrap(),
            Some([3; 32])
        );
        assert_eq!(
            b.load_identity("b@s.whatsapp.net").await.unwrap(),
            Some([2; 32])
        );
    }

    #[tokio::test]
    async fn a_session_round_trips_is_overwritten_and_deleted() {
        let b = backend().await;
        let addr = "111.0:2@s.whatsapp.net";
        assert_eq!(b.get_session(addr).await.unwrap(), None);
        assert!(!b.has_session(addr).await.unwrap());
        b.put_session(addr, b"one").await.unwrap();
        b.put_session(addr, b"two").await.unwrap();
        assert_eq!(
            b.get_session(addr).await.unwrap(),
            Some(Bytes::from_static(b"two"))
        );
        assert!(b.has_session(addr).await.unwrap());
        b.delete_session(addr).await.unwrap();
        assert_eq!(b.get_session(addr).await.unwrap(), None);
        assert!(!b.has_session(addr).await.unwrap());
    }

    #[tokio::test]
    async fn a_session_batch_inserts_and_updates_in_one_call() {
        let b = backend().await;
        b.put_session("old@s.whatsapp.net", b"stale").await.unwrap();
        let batch: Vec<(Arc<str>, Bytes)> = (0..300)
            .map(|i| {
                (
                    Arc::from(format!("{i}@s.whatsapp.net")),
                    Bytes::from(format!("s{i}")),
                )
            })
            .chain([(
                Arc::from("old@s.whatsapp.net"),
                Bytes::from_static(b"fresh"),
            )])
            .collect();
        b.put_sessions_batch(&batch).await.unwrap();
        assert_eq!(
            b.get_session("299@s.whatsapp.net").await.unwrap(),
            Some(Bytes::from_static(b"s299"))
        );
        assert_eq!(
            b.get_session("old@s.whatsapp.net").await.unwrap(),
            Some(Bytes::from_static(b"fresh"))
        );
    }

    #[tokio::test]
    async fn signal_state_for_a_user_matches_its_addresses_only() {
        let b = backend().await;
        assert!(!b.has_signal_state_for_user("111").await.unwrap());
        b.put_session("111:3@s.whatsapp.net", b"s").await.unwrap();
        b.put_identity("222@lid", [1; 32]).await.unwrap();
        b.put_session("1110@s.whatsapp.net", b"s").await.unwrap();
        assert!(b.has_signal_state_for_user("111").await.unwrap());
        assert!(b.has_signal_state_for_user("222").await.unwrap());
        assert!(!b.has_signal_state_for_user("11").await.unwrap());
        // A LIKE wildcard in the user part is taken literally.
        assert!(!b.has_signal_state_for_user("1_1").await.unwrap());
    }

    #[tokio::test]
    async fn a_prekey_round_trips_is_overwritten_and_removed() {
        let b = backend().await;
        assert_eq!(b.load_prekey(5).await.unwrap(), None);
        b.store_prekey(5, b"one", false).await.unwrap();
        b.store_prekey(5, b"two", true).await.unwrap();
        assert_eq!(
            b.load_prekey(5).await.unwrap(),
            Some(Bytes::from_static(b"two"))
        );
        b.remove_prekey(5).await.unwrap();
        assert_eq!(b.load_prekey(5).await.unwrap(), None);
    }

    #[tokio::test]
    async fn eight_hundred_prekeys_are_stored_in_one_call_and_loaded_back() {
        let b = backend().await;
        let keys = numbered_prekeys(800);
        b.store_prekeys_batch(&keys, false).await.unwrap();
        let ids: Vec<u32> = (1..=800).collect();
        assert_eq!(b.load_prekeys_batch(&ids).await.unwrap(), keys);
        assert_eq!(b.get_max_prekey_id().await.unwrap(), 800);
    }

    #[tokio::test]
    async fn a_prekey_batch_load_keeps_the_order_asked_and_skips_the_missing() {
        let b = backend().await;
        b.store_prekeys_batch(
            &[(1, Bytes::from_static(b"a")), (3, Bytes::from_static(b"c"))],
            true,
        )
        .await
        .unwrap();
        assert_eq!(
            b.load_prekeys_batch(&[3, 2, 1]).await.unwrap(),
            vec![(3, Bytes::from_static(b"c")), (1, Bytes::from_static(b"a"))]
        );
        assert!(b.load_prekeys_batch(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_prekey_batch_load_returns_only_the_ids_asked_for() {
        let b = backend().await;
        let keys = numbered_prekeys(5);
        b.store_prekeys_batch(&keys, true).await.unwrap();
        assert_eq!(
            b.load_prekeys_batch(&[4, 2]).await.unwrap(),
            vec![
                (4, Bytes::from_static(b"prekey-4")),
                (2, Bytes::from_static(b"prekey-2"))
            ]
        );
    }

    #[tokio::test]
    async fn the_highest_prekey_id_is_zero_without_keys_and_handles_u32_ids() {
        let b = backend().await;
        assert_eq!(b.get_max_prekey_id().await.unwrap(), 0);
        b.store_prekey(u32::MAX, b"top", false).await.unwrap();
        b.store_prekey(7, b"low", false).await.unwrap();
        assert_eq!(b.get_max_prekey_id().await.unwrap(), u32::MAX);
        assert!(b.load_prekey(u32::MAX).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn marking_prekeys_uploaded_flags_them_and_never_resurrects_a_removed_one() {
        let (store, url) = store_and_url().await;
        let b = new_backend(&store).await;
        b.store_prekeys_batch(
            &[(1, Bytes::from_static(b"a")), (2, Bytes::from_static(b"b"))],
            false,
        )
        .await
        .unwrap();
        b.remove_prekey(2).await.unwrap();
        b.mark_prekeys_uploaded(&[1, 2]).await.unwrap();
        assert_eq!(b.load_prekey(2).await.unwrap(), None);
        let uploaded: Vec<(i64, bool)> = sql(&url)
            .await
            .query(
                "SELECT id, uploaded FROM wa_prekeys WHERE device_internal_id = $1",
                &[&b.device_internal_id()],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(uploaded, [(1, true)]);
    }

    #[tokio::test]
    async fn signed_prekeys_round_trip_overwrite_list_in_id_order_and_remove() {
        let b = backend().await;
        assert_eq!(b.load_signed_prekey(2).await.unwrap(), None);
        assert!(b.load_all_signed_prekeys().await.unwrap().is_empty());
        b.store_signed_prekey(2, b"two").await.unwrap();
        b.store_signed_prekey(1, b"old").await.unwrap();
        b.store_signed_prekey(1, b"one").await.unwrap();
        assert_eq!(
            b.load_signed_prekey(1).await.unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            b.load_all_signed_prekeys().await.unwrap(),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
        b.remove_signed_prekey(1).await.unwrap();
        assert_eq!(b.load_signed_prekey(1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_sender_key_round_trips_is_overwritten_and_deleted() {
        let b = backend().await;
        let addr = "g@g.us::111::0";
        assert_eq!(b.get_sender_key(addr).await.unwrap(), None);
        b.put_sender_key(addr, b"one").await.unwrap();
        b.put_sender_key(addr, b"two").await.unwrap();
        assert_eq!(b.get_sender_key(addr).await.unwrap(), Some(b"two".to_vec()));
        b.delete_sender_key(addr).await.unwrap();
        assert_eq!(b.get_sender_key(addr).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_sender_key_batch_stores_every_key_the_last_repeat_winning() {
        let b = backend().await;
        let batch: Vec<(Arc<str>, Bytes)> = vec![
            (Arc::from("g::a"), Bytes::from_static(b"1")),
            (Arc::from("g::b"), Bytes::from_static(b"2")),
            (Arc::from("g::a"), Bytes::from_static(b"3")),
        ];
        b.put_sender_keys_batch(&batch).await.unwrap();
        assert_eq!(b.get_sender_key("g::a").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(b.get_sender_key("g::b").await.unwrap(), Some(b"2".to_vec()));
    }
}

mod app_sync {
    use super::*;

    fn key(byte: u8) -> AppStateSyncKey {
        AppStateSyncKey {
            key_data: vec![byte; 32],
            fingerprint: vec![byte, 1, 2],
            timestamp: i64::from(byte) * 1000,
        }
    }

    #[tokio::test]
    async fn a_sync_key_round_trips_and_a_missing_one_is_none() {
        let b = backend().await;
        assert!(b.get_sync_key(b"k1").await.unwrap().is_none());
        b.set_sync_key(b"k1", key(1)).await.unwrap();
        let got = b.get_sync_key(b"k1").await.unwrap().unwrap();
        assert_eq!(
            (got.key_data, got.fingerprint, got.timestamp),
            (vec![1; 32], vec![1, 1, 2], 1000)
        );
    }

    #[tokio::test]
    async fn a_sync_key_is_overwritten() {
        let b = backend().await;
        b.set_sync_key(b"k1", key(1)).await.unwrap();
        b.set_sync_key(b"k1", key(2)).await.unwrap();
        assert_eq!(
            b.get_sync_key(b"k1").await.unwrap().unwrap().key_data,
            vec![2; 32]
        );
    }

    #[tokio::test]
    async fn the_latest_sync_key_is_the_one_written_last() {
        let b = backend().await;
        assert_eq!(b.get_latest_sync_key_id().await.unwrap(), None);
        b.set_sync_key(b"k1", key(1)).await.unwrap();
        b.set_sync_key(b"k2", key(2)).await.unwrap();
        assert_eq!(
            b.get_latest_sync_key_id().await.unwrap(),
            Some(b"k2".to_vec())
        );
        // Rewriting an older key makes it the latest, as in the reference backend.
        b.set_sync_key(b"k1", key(3)).await.unwrap();
        assert_eq!(
            b.get_latest_sync_key_id().await.unwrap(),
            Some(b"k1".to_vec())
        );
    }

    #[tokio::test]
    async fn a_missing_version_is_the_empty_state() {
        let b = backend().await;
        let state = b.get_version("regular_high").await.unwrap();
        assert_eq!(state.version, 0);
        assert_eq!(state.hash, [0; 128]);
        assert!(state.index_value_map.is_empty());
    }

    #[tokio::test]
    async fn a_version_round_trips_and_is_overwritten() {
        let b = backend().await;
        let mut state = HashState {
            version: 12,
            hash: [5; 128],
            ..HashState::default()
        };
        state
            .index_value_map
            .insert("idx".to_string(), vec![1, 2, 3]);
        state.mac_mismatch_fatal = true;
        b.set_version("regular", state).await.unwrap();
        let got = b.get_version("regular").await.unwrap();
        assert_eq!((got.version, got.hash), (12, [5; 128]));
        assert_eq!(got.index_value_map["idx"], vec![1, 2, 3]);
        assert!(got.mac_mismatch_fatal);

        b.set_version(
            "regular",
            HashState {
                version: 13,
                ..HashState::default()
            },
        )
        .await
        .unwrap();
        let got = b.get_version("regular").await.unwrap();
        assert_eq!(got.version, 13);
        assert!(got.index_value_map.is_empty());
        assert_eq!(b.get_version("other").await.unwrap().version, 0);
    }

    fn mac(index: u8, value: u8) -> AppStateMutationMAC {
        AppStateMutationMAC {
            index_mac: vec![index; 32],
            value_mac: vec![value; 32],
        }
    }

    #[tokio::test]
    async fn mutation_macs_round_trip_overwrite_and_miss() {
        let b = backend().await;
        assert_eq!(b.get_mutation_mac("regular", &[1; 32]).await.unwrap(), None);
        b.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20)])
            .await
            .unwrap();
        b.put_mutation_macs("regular", 2, &[mac(1, 11), mac(1, 12)])
            .await
            .unwrap();
        assert_eq!(
            b.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
            Some(vec![12; 32])
        );
        assert_eq!(
            b.get_mutation_mac("regular", &[2; 32]).await.unwrap(),
            Some(vec![20; 32])
        );
        // Collections are separate namespaces.
        assert_eq!(b.get_mutation_mac("other", &[1; 32]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn mutation_macs_are_fetched_in_one_batch_with_misses_left_out() {
        let b = backend().await;
        let macs: Vec<AppStateMutationMAC> = (0..200).map(|i| mac(i, i.wrapping_add(1))).collect();
        b.put_mutation_macs("regular", 1, &macs).await.unwrap();
        let found = b
            .get_mutation_macs("regular", &[[3; 32], [250; 32], [199; 32]])
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&[3; 32]], vec![4; 32]);
        assert_eq!(found[&[199; 32]], vec![200; 32]);
        assert!(
            b.get_mutation_macs("regular", &[])
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn mutation_macs_are_deleted_by_index() {
        let b = backend().await;
        b.put_mutation_macs("regular", 1, &[mac(1, 10), mac(2, 20)])
            .await
            .unwrap();
        b.delete_mutation_macs("regular", &[vec![1; 32], vec![9; 32]])
            .await
            .unwrap();
        assert_eq!(b.get_mutation_mac("regular", &[1; 32]).await.unwrap(), None);
        assert!(
            b.get_mutation_mac("regular", &[2; 32])
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn clearing_mutation_macs_wipes_only_the_named_collection() {
        let b = backend().await;
        b.put_mutation_macs("a", 1, &[mac(1, 10)]).await.unwrap();
        b.put_mutation_macs("b", 1, &[mac(1, 11)]).await.unwrap();
        b.clear_mutation_macs("a").await.unwrap();
        assert_eq!(b.get_mutation_mac("a", &[1; 32]).await.unwrap(), None);
        assert_eq!(
            b.get_mutation_mac("b", &[1; 32]).await.unwrap(),
            Some(vec![11; 32])
        );
    }
}

mod protocol {
    use super::*;

    #[tokio::test]
    async fn sender_key_status_round_trips_and_is_overwritten() {
        let b = backend().await;
        assert!(b.get_sender_key_devices("g@g.us").await.unwrap().is_empty());
        b.set_sender_key_status("g@g.us", &[("b:1@s", true), ("a:1@s", true)])
            .await
            .unwrap();
        b.set_sender_key_status("g@g.us", &[("a:1@s", false)])
            .await
            .unwrap();
        assert_eq!(
            b.get_sender_key_devices("g@g.us").await.unwrap(),
            vec![("a:1@s".to_string(), false), ("b:1@s".to_string(), true)]
        );
    }

    #[tokio::test]
    async fn sender_key_status_is_cleared_per_group_per_device_and_entirely() {
        let b = backend().await;
        for group in ["g1@g.us", "g2@g.us", "g3@g.us"] {
            b.set_sender_key_status(group, &[("a:1@s", true), ("b:1@s", true)])
                .await
                .unwrap();
        }
        b.clear_sender_key_devices("g1@g.us").await.unwrap();
        assert!(
            b.get_sender_key_devices("g1@g.us")
                .await
                .unwrap()
                .is_empty()
        );
        b.delete_sender_key_device_rows(&["a:1@s"]).await.unwrap();
        assert_eq!(
            b.get_sender_key_devices("g2@g.us").await.unwrap(),
            vec![("b:1@s".to_string(), true)]
        );
        b.clear_all_sender_key_devices().await.unwrap();
        assert!(
            b.get_sender_key_devices("g3@g.us")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_lid_mapping_round_trips_both_ways_and_a_missing_one_is_none() {
        let b = backend().await;
        assert!(b.get_lid_mapping("900").await.unwrap().is_none());
        assert!(b.get_pn_mapping("111").await.unwrap().is_none());
        b.put_lid_mapping(&mapping("900", "111", 5)).await.unwrap();
        let by_lid = b.get_lid_mapping("900").await.unwrap().unwrap();
        assert_eq!(
            (
                by_lid.phone_number.as_str(),
                by_lid.created_at,
                by_lid.updated_at
            ),
            ("111", 100, 5)
        );
        assert_eq!(by_lid.learning_source, "usync");
        assert_eq!(b.get_pn_mapping("111").await.unwrap().unwrap().lid, "900");
    }

    #[tokio::test]
    async fn a_lid_remapped_to_another_phone_leaves_the_old_phone() {
        let b = backend().await;
        b.put_lid_mapping(&mapping("900", "111", 1)).await.unwrap();
        b.put_lid_mapping(&mapping("900", "222", 2)).await.unwrap();
        assert!(b.get_pn_mapping("111").await.unwrap().is_none());
        assert_eq!(b.get_pn_mapping("222").await.unwrap().unwrap().lid, "900");
        assert_eq!(b.get_all_lid_mappings().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_phone_with_several_lids_maps_to_the_most_recent() {
        let b = backend().await;
        b.put_lid_mapping(&mapping("901", "111", 1)).await.unwrap();
        b.put_lid_mapping(&mapping("902", "111", 2)).await.unwrap();
        assert_eq!(b.get_pn_mapping("111").await.unwrap().unwrap().lid, "902");
        // Same timestamp: the one written last.
        b.put_lid_mapping(&mapping("901", "111", 2)).await.unwrap();
        assert_eq!(b.get_pn_mapping("111").await.unwrap().unwrap().lid, "901");
    }

    #[tokio::test]
    async fn lid_mappings_are_stored_in_a_batch_and_all_listed() {
        let b = backend().await;
        let batch: Vec<LidPnMappingEntry> = (0..100)
            .map(|i| mapping(&format!("9{i:03}"), &format!("1{i:03}"), 1))
            .chain([mapping("9000", "5555", 2)])
            .collect();
        b.put_lid_mappings(&batch).await.unwrap();
        b.put_lid_mappings(&[]).await.unwrap();
        let all = b.get_all_lid_mappings().await.unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].lid, "9000");
        assert_eq!(all[0].phone_number, "5555");
    }

    #[tokio::test]
    async fn a_base_key_matches_only_itself_and_is_deleted() {
        let b = backend().await;
        assert!(!b.has_same_base_key("a@s", "m1", b"k").await.unwrap());
        b.save_base_key("a@s", "m1", b"old").await.unwrap();
        b.save_base_key("a@s", "m1", b"k").await.unwrap();
        assert!(b.has_same_base_key("a@s", "m1", b"k").await.unwrap());
        assert!(!b.has_same_base_key("a@s", "m1", b"old").await.unwrap());
        assert!(!b.has_same_base_key("a@s", "m2", b"k").await.unwrap());
        b.delete_base_key("a@s", "m1").await.unwrap();
        assert!(!b.has_same_base_key("a@s", "m1", b"k").await.unwrap());
    }

    #[tokio::test]
    async fn a_device_list_round_trips_is_overwritten_and_deleted() {
        let b = backend().await;
        assert!(b.get_devices("111").await.unwrap().is_none());
        b.update_device_list(device_list("111", &[0]))
            .await
            .unwrap();
        b.update_device_list(device_list("111", &[0, 3]))
            .await
            .unwrap();
        let got = b.get_devices("111").await.unwrap().unwrap();
        let ids: Vec<u32> = got.devices.iter().map(|d| d.device_id).collect();
        assert_eq!(ids, [0, 3]);
        assert_eq!((got.timestamp, got.raw_id), (42, Some(7)));
        assert_eq!(got.phash.as_deref(), Some("2:abc"));
        b.delete_devices("111").await.unwrap();
        assert!(b.get_devices("111").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn device_lists_are_stored_in_a_batch() {
        let b = backend().await;
        let records: Vec<DeviceListRecord> = (0..50)
            .map(|i| device_list(&format!("u{i}"), &[0, i]))
            .chain([device_list("u0", &[0, 1, 2])])
            .collect();
        b.update_device_lists(records).await.unwrap();
        assert_eq!(
            b.get_devices("u49").await.unwrap().unwrap().devices.len(),
            2
        );
        assert_eq!(b.get_devices("u0").await.unwrap().unwrap().devices.len(), 3);
    }

    #[tokio::test]
    async fn group_metadata_round_trips_is_overwritten_and_deleted() {
        let b = backend().await;
        assert_eq!(b.get_group_metadata("g@g.us").await.unwrap(), None);
        b.put_group_metadata("g@g.us", b"v1").await.unwrap();
        b.put_group_metadata("g@g.us", b"v2").await.unwrap();
        assert_eq!(
            b.get_group_metadata("g@g.us").await.unwrap(),
            Some(b"v2".to_vec())
        );
        b.delete_group_metadata("g@g.us").await.unwrap();
        assert_eq!(b.get_group_metadata("g@g.us").await.unwrap(), None);
    }

    fn token(bytes: &[u8], ts: i64, sender: Option<i64>) -> TcTokenEntry {
        TcTokenEntry {
            token: bytes.to_vec(),
            token_timestamp: ts,
            sender_timestamp: sender,
        }
    }

    #[tokio::test]
    async fn a_tc_token_round_trips_is_listed_overwritten_and_deleted() {
        let b = backend().await;
        assert!(b.get_tc_token("a@lid").await.unwrap().is_none());
        b.put_tc_token("b@lid", &token(b"x", 1, None))
            .await
            .unwrap();
        b.put_tc_token("a@lid", &token(b"y", 2, Some(3)))
            .await
            .unwrap();
        b.put_tc_token("a@lid", &token(b"z", 4, None))
            .await
            .unwrap();
        let got = b.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"z".to_vec(), 4, None)
        );
        assert_eq!(b.get_all_tc_token_jids().await.unwrap(), ["a@lid", "b@lid"]);
        b.delete_tc_token("a@lid").await.unwrap();
        assert!(b.get_tc_token("a@lid").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn touching_the_sender_timestamp_creates_a_placeholder_then_only_advances() {
        let b = backend().await;
        b.touch_tc_token_sender_timestamp("a@lid", 100)
            .await
            .unwrap();
        let got = b.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token.len(), got.token_timestamp, got.sender_timestamp),
            (0, 100, Some(100))
        );
        b.touch_tc_token_sender_timestamp("a@lid", 50)
            .await
            .unwrap();
        assert_eq!(
            b.get_tc_token("a@lid")
                .await
                .unwrap()
                .unwrap()
                .sender_timestamp,
            Some(100)
        );
        b.put_tc_token("a@lid", &token(b"real", 7, None))
            .await
            .unwrap();
        b.touch_tc_token_sender_timestamp("a@lid", 120)
            .await
            .unwrap();
        let got = b.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"real".to_vec(), 7, Some(120))
        );
    }

    #[tokio::test]
    async fn a_received_tc_token_is_newer_wins_and_keeps_the_sender_timestamp() {
        let b = backend().await;
        b.store_received_tc_token("a@lid", b"first", 10)
            .await
            .unwrap();
        assert_eq!(
            b.get_tc_token("a@lid")
                .await
                .unwrap()
                .unwrap()
                .sender_timestamp,
            None
        );
        b.touch_tc_token_sender_timestamp("a@lid", 99)
            .await
            .unwrap();
        b.store_received_tc_token("a@lid", b"stale", 5)
            .await
            .unwrap();
        assert_eq!(
            b.get_tc_token("a@lid").await.unwrap().unwrap().token,
            b"first"
        );
        b.store_received_tc_token("a@lid", b"newer", 10)
            .await
            .unwrap();
        let got = b.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"newer".to_vec(), 10, Some(99))
        );
        // A placeholder never blocks a real token, whatever its timestamp.
        b.touch_tc_token_sender_timestamp("p@lid", 500)
            .await
            .unwrap();
        b.store_received_tc_token("p@lid", b"real", 1)
            .await
            .unwrap();
        let got = b.get_tc_token("p@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"real".to_vec(), 1, Some(500))
        );
    }

    #[tokio::test]
    async fn expired_tc_tokens_go_only_when_both_windows_are_stale() {
        let b = backend().await;
        b.put_tc_token("live-token@lid", &token(b"t", 100, None))
            .await
            .unwrap();
        b.put_tc_token("live-sender@lid", &token(b"t", 1, Some(100)))
            .await
            .unwrap();
        b.put_tc_token("placeholder@lid", &token(b"", 100, Some(1)))
            .await
            .unwrap();
        b.put_tc_token("dead@lid", &token(b"t", 1, Some(1)))
            .await
            .unwrap();
        b.put_tc_token("dead-no-sender@lid", &token(b"t", 1, None))
            .await
            .unwrap();
        assert_eq!(b.delete_expired_tc_tokens(50, 50).await.unwrap(), 3);
        assert_eq!(
            b.get_all_tc_token_jids().await.unwrap(),
            ["live-sender@lid", "live-token@lid"]
        );
    }

    #[tokio::test]
    async fn a_sent_message_is_taken_once() {
        let b = backend().await;
        assert_eq!(b.take_sent_message("c@s", "m1").await.unwrap(), None);
        b.store_sent_message("c@s", "m1", b"old").await.unwrap();
        b.store_sent_message("c@s", "m1", b"payload").await.unwrap();
        assert_eq!(
            b.take_sent_message("c@s", "m1").await.unwrap(),
            Some(b"payload".to_vec())
        );
        assert_eq!(b.take_sent_message("c@s", "m1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sent_messages_older_than_the_cutoff_are_deleted() {
        let b = backend().await;
        b.store_sent_message("c@s", "m1", b"p").await.unwrap();
        b.store_sent_message("c@s", "m2", b"p").await.unwrap();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(b.delete_expired_sent_messages(now - 60).await.unwrap(), 0);
        assert_eq!(b.delete_expired_sent_messages(now + 60).await.unwrap(), 2);
        assert_eq!(b.take_sent_message("c@s", "m1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_pending_inbound_message_round_trips_and_is_deleted() {
        let b = backend().await;
        assert_eq!(b.get_pending_inbound("c", "s", "m").await.unwrap(), None);
        b.store_pending_inbound("c", "s", "m", b"one")
            .await
            .unwrap();
        b.store_pending_inbound("c", "s", "m", b"two")
            .await
            .unwrap();
        assert_eq!(
            b.get_pending_inbound("c", "s", "m").await.unwrap(),
            Some(b"two".to_vec())
        );
        // Keyed by all three parts.
        assert_eq!(
            b.get_pending_inbound("c", "other", "m").await.unwrap(),
            None
        );
        b.delete_pending_inbound("c", "s", "m").await.unwrap();
        assert_eq!(b.get_pending_inbound("c", "s", "m").await.unwrap(), None);
    }

    #[tokio::test]
    async fn pending_inbound_messages_are_stored_and_deleted_in_batches_and_expire() {
        let b = backend().await;
        let ids: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        let rows: Vec<PendingInboundRow<'_>> = ids
            .iter()
            .map(|id| PendingInboundRow {
                chat: "c",
                sender: "s",
                id,
                message: b"msg",
            })
            .collect();
        b.store_pending_inbound_batch(&rows).await.unwrap();
        let doomed: Vec<PendingInboundKey<'_>> = ids[..60]
            .iter()
            .map(|id| PendingInboundKey {
                chat: "c",
                sender: "s",
                id,
            })
            .collect();
        b.delete_pending_inbound_batch(&doomed).await.unwrap();
        assert_eq!(b.get_pending_inbound("c", "s", "m0").await.unwrap(), None);
        assert!(
            b.get_pending_inbound("c", "s", "m60")
                .await
                .unwrap()
                .is_some()
        );
        let now = chrono::Utc::now().timestamp();
        assert_eq!(b.delete_expired_pending_inbound(now - 60).await.unwrap(), 0);
        assert_eq!(
            b.delete_expired_pending_inbound(now + 60).await.unwrap(),
            40
        );
    }
}

mod msg_secret {
    use super::*;

    #[tokio::test]
    async fn a_message_secret_round_trips_with_its_time_and_a_missing_one_is_none() {
        let b = backend().await;
        assert_eq!(
            b.get_msg_secret("c", "111@s.whatsapp.net", "m")
                .await
                .unwrap(),
            None
        );
        b.put_msg_secrets(vec![secret("c", "m", 3, 0, 77)])
            .await
            .unwrap();
        assert_eq!(
            b.get_msg_secret_with_ts("c", "111@s.whatsapp.net", "m")
                .await
                .unwrap(),
            Some((vec![3; 32], 77))
        );
        assert_eq!(
            b.get_msg_secret("c", "111@s.whatsapp.net", "m")
                .await
                .unwrap(),
            Some(vec![3; 32])
        );
        // Keyed by chat, sender and id together.
        assert_eq!(b.get_msg_secret("c", "other", "m").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_single_put_never_expires() {
        let b = backend().await;
        b.put_msg_secret("c", "s", "m", &[1; 32]).await.unwrap();
        assert_eq!(b.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 0);
        assert_eq!(
            b.get_msg_secret_with_ts("c", "s", "m").await.unwrap(),
            Some((vec![1; 32], 0))
        );
    }

    #[tokio::test]
    async fn an_overwrite_takes_the_new_secret_and_never_shortens_or_forgets() {
        let b = backend().await;
        let sender = "111@s.whatsapp.net";
        b.put_msg_secrets(vec![secret("c", "m", 1, 100, 50)])
            .await
            .unwrap();
        b.put_msg_secrets(vec![secret("c", "m", 2, 90, 0)])
            .await
            .unwrap();
        assert_eq!(
            b.get_msg_secret_with_ts("c", sender, "m").await.unwrap(),
            Some((vec![2; 32], 50))
        );
        // Deadline 100 kept (not 90): a cutoff of 95 leaves it.
        assert_eq!(b.delete_expired_msg_secrets(95).await.unwrap(), 0);
        // 0 ("never") wins over any deadline.
        b.put_msg_secrets(vec![secret("c", "m", 2, 0, 60)])
            .await
            .unwrap();
        assert_eq!(b.delete_expired_msg_secrets(1_000).await.unwrap(), 0);
        assert_eq!(
            b.get_msg_secret_with_ts("c", sender, "m").await.unwrap(),
            Some((vec![2; 32], 60))
        );
    }

    #[tokio::test]
    async fn a_batch_with_repeats_merges_them_and_counts_every_entry() {
        let b = backend().await;
        let mut batch: Vec<MsgSecretEntry> = (0..500)
            .map(|i| secret("c", &format!("m{i}"), 1, 100, 10))
            .collect();
        batch.push(secret("c", "m0", 9, 200, 5));
        assert_eq!(b.put_msg_secrets(batch).await.unwrap(), 501);
        assert_eq!(
            b.get_msg_secret_with_ts("c", "111@s.whatsapp.net", "m0")
                .await
                .unwrap(),
            Some((vec![9; 32], 10))
        );
        assert_eq!(b.put_msg_secrets(Vec::new()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn expired_message_secrets_are_deleted_at_their_deadline() {
        let b = backend().await;
        b.put_msg_secrets(vec![
            secret("c", "old", 1, 100, 0),
            secret("c", "edge", 1, 200, 0),
            secret("c", "new", 1, 300, 0),
            secret("c", "never", 1, 0, 0),
        ])
        .await
        .unwrap();
        assert_eq!(b.delete_expired_msg_secrets(200).await.unwrap(), 2);
        let sender = "111@s.whatsapp.net";
        assert!(
            b.get_msg_secret("c", sender, "new")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.get_msg_secret("c", sender, "never")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.get_msg_secret("c", sender, "edge")
                .await
                .unwrap()
                .is_none()
        );
    }
}

mod device {
    use super::*;
    use whatsapp_rust::wacore::store::Device;

    #[tokio::test]
    async fn a_new_device_has_no_record() {
        let b = backend().await;
        assert!(!b.exists().await.unwrap());
        assert!(b.load().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn creating_materialises_a_record_once_and_returns_the_slot_id() {
        let b = backend().await;
        let id = b.create().await.unwrap();
        assert_eq!(i64::from(id), b.device_internal_id());
        assert!(b.exists().await.unwrap());
        let first = b.load().await.unwrap().unwrap();
        b.create().await.unwrap();
        let again = b.load().await.unwrap().unwrap();
        assert_eq!(
            first.identity_key.public_key.public_key_bytes(),
            again.identity_key.public_key.public_key_bytes()
        );
    }

    #[tokio::test]
    async fn a_saved_device_loads_back_and_a_second_save_overwrites() {
        let b = backend().await;
        let mut device = Device::new();
        device.push_name = "first".to_string();
        device.next_pre_key_id = 812;
        device.pn = Some("5511987650001:33@s.whatsapp.net".parse().unwrap());
        b.save(&device).await.unwrap();
        let loaded = b.load().await.unwrap().unwrap();
        assert_eq!(loaded.push_name, "first");
        assert_eq!(loaded.next_pre_key_id, 812);
        assert_eq!(loaded.pn, device.pn);
        assert_eq!(loaded.registration_id, device.registration_id);
        assert_eq!(
            loaded.signed_pre_key_signature,
            device.signed_pre_key_signature
        );
        assert_eq!(loaded.adv_secret_key, device.adv_secret_key);
        assert_eq!(
            loaded.noise_key.private_key.serialize(),
            device.noise_key.private_key.serialize()
        );

        device.push_name = "second".to_string();
        b.save(&device).await.unwrap();
        assert_eq!(b.load().await.unwrap().unwrap().push_name, "second");
    }

    #[tokio::test]
    async fn whatsapp_rusts_persistence_manager_keeps_the_device_across_restarts() {
        use whatsapp_rust::store::persistence_manager::PersistenceManager;

        let b = backend().await;
        let backend: Arc<dyn Backend> = Arc::new(b.clone());
        let manager = PersistenceManager::new(backend.clone()).await.unwrap();
        manager
            .modify_device(|d| d.push_name = "wagate".to_string())
            .await;
        manager.flush().await.unwrap();
        let identity = manager
            .get_device_snapshot()
            .identity_key
            .public_key
            .public_key_bytes()
            .to_vec();
        drop(manager);

        let restarted = PersistenceManager::new(backend).await.unwrap();
        let device = restarted.get_device_snapshot();
        assert_eq!(device.push_name, "wagate");
        assert_eq!(device.identity_key.public_key.public_key_bytes(), identity);
    }
}

mod isolation {
    use super::*;

    #[tokio::test]
    async fn an_unknown_device_has_no_key_store() {
        let store = support::store().await;
        let tenant = tenant(&store).await;
        assert!(
            store
                .tenant(tenant.id)
                .key_store(&device_id("ghost"), None)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn two_devices_never_see_each_others_rows() {
        let (store, url) = store_and_url().await;
        let a = new_backend(&store).await;
        let b = new_backend(&store).await;
        populate(&a).await;

        assert!(
            b.load_identity("111@s.whatsapp.net")
                .await
                .unwrap()
                .is_none()
        );
        assert!(!b.has_signal_state_for_user("111").await.unwrap());
        assert!(b.load_prekey(1).await.unwrap().is_none());
        assert_eq!(b.get_max_prekey_id().await.unwrap(), 0);
        assert!(b.load_all_signed_prekeys().await.unwrap().is_empty());
        assert!(b.get_sender_key("group::111").await.unwrap().is_none());
        assert!(b.get_latest_sync_key_id().await.unwrap().is_none());
        assert!(
            b.get_mutation_mac("regular", &[1; 32])
                .await
                .unwrap()
                .is_none()
        );
        assert!(b.get_sender_key_devices("g@g.us").await.unwrap().is_empty());
        assert!(b.get_all_lid_mappings().await.unwrap().is_empty());
        assert!(b.get_pn_mapping("111").await.unwrap().is_none());
        assert!(
            !b.has_same_base_key("111@s.whatsapp.net", "m1", b"base")
                .await
                .unwrap()
        );
        assert!(b.get_devices("111").await.unwrap().is_none());
        assert!(b.get_group_metadata("g@g.us").await.unwrap().is_none());
        assert!(b.get_all_tc_token_jids().await.unwrap().is_empty());
        assert!(
            b.take_sent_message("111@s.whatsapp.net", "m1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.get_pending_inbound("c", "s", "m1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(b.get_msg_secret("c", "s", "m1").await.unwrap().is_none());
        assert!(!b.exists().await.unwrap());

        // Bulk deletes through b leave a's rows alone.
        b.clear_all_sender_key_devices().await.unwrap();
        assert_eq!(
            b.delete_expired_tc_tokens(i64::MAX, i64::MAX)
                .await
                .unwrap(),
            0
        );
        assert_eq!(b.delete_expired_sent_messages(i64::MAX).await.unwrap(), 0);
        let counts = rows_by_table(&url, a.device_internal_id()).await;
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        assert_eq!(counts.len(), 18, "{counts:?}");
    }

    #[tokio::test]
    async fn deleting_a_device_cascades_its_key_rows_away() {
        let (store, url) = store_and_url().await;
        let tenant = tenant(&store).await;
        let id = device_id("doomed");
        add_device(&store, tenant.id, &id).await;
        let b = store
            .tenant(tenant.id)
            .key_store(&id, None)
            .await
            .unwrap()
            .unwrap();
        populate(&b).await;
        assert!(store.tenant(tenant.id).delete_device(&id).await.unwrap());
        let counts = rows_by_table(&url, b.device_internal_id()).await;
        assert!(counts.values().all(|&n| n == 0), "{counts:?}");

        // Writing through a backend whose device is gone fails, naming what was being done.
        let err = b.put_identity("a@s", [0; 32]).await.unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("store an identity key"), "{source}");
    }

    /// The end of the device's link, as a logout records it: its keys go with its JID.
    async fn end_link(
        store: &Store,
        tenant: TenantId,
        id: &DeviceId,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let ended = DeviceChange {
            state: Some(DeviceState::Disconnected),
            link: Link::End,
            only_from: None,
            fence: None,
        };
        store
            .tenant(tenant)
            .record_events(id, ended, Vec::new())
            .await
    }

    #[tokio::test]
    async fn ending_a_link_empties_every_table_of_that_device_only_and_keeps_the_slot() {
        let (store, url) = store_and_url().await;
        let tenant = tenant(&store).await;
        let (one, two) = (device_id("one"), device_id("two"));
        add_device(&store, tenant.id, &one).await;
        add_device(&store, tenant.id, &two).await;
        let a = store
            .tenant(tenant.id)
            .key_store(&one, None)
            .await
            .unwrap()
            .unwrap();
        let b = store
            .tenant(tenant.id)
            .key_store(&two, None)
            .await
            .unwrap()
            .unwrap();
        populate(&a).await;
        populate(&b).await;

        end_link(&store, tenant.id, &one).await.unwrap();
        let wiped = rows_by_table(&url, a.device_internal_id()).await;
        assert!(wiped.values().all(|&n| n == 0), "{wiped:?}");
        assert_eq!(wiped.len(), 18, "{wiped:?}");
        let kept = rows_by_table(&url, b.device_internal_id()).await;
        assert!(kept.values().all(|&n| n == 1), "{kept:?}");
        assert!(
            store
                .tenant(tenant.id)
                .find_device(&one)
                .await
                .unwrap()
                .is_some()
        );
        // The backend stays usable: the next login starts afresh on the same slot.
        assert!(!a.exists().await.unwrap());
        a.create().await.unwrap();
        assert!(a.exists().await.unwrap());
    }

    #[tokio::test]
    async fn ending_the_link_of_an_unknown_device_says_so() {
        let store = support::store().await;
        let tenant = tenant(&store).await;
        let err = end_link(&store, tenant.id, &device_id("ghost"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DeviceNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_closed_backend_writes_nothing_so_an_ended_link_stays_empty() {
        let (store, url) = store_and_url().await;
        let b = new_backend(&store).await;
        b.put_identity("a@s.whatsapp.net", [1; 32]).await.unwrap();

        b.close(std::time::Duration::from_secs(1)).await;
        let late = b.put_identity("b@s.whatsapp.net", [2; 32]).await;
        let read = b.load_identity("a@s.whatsapp.net").await;

        assert!(late.is_err(), "a write after close is refused");
        assert!(read.is_err(), "so is a read: the client it served is gone");
        let rows = rows_by_table(&url, b.device_internal_id()).await;
        assert_eq!(
            rows["wa_identities"], 1,
            "only the write before close: {rows:?}"
        );
    }

    #[tokio::test]
    async fn a_backend_whose_lease_was_taken_over_writes_nothing() {
        let (store, url) = store_and_url().await;
        let tenant = tenant(&store).await;
        let id = device_id("phone-1");
        let scoped = store.tenant(tenant.id);
        scoped.create_device(&id, None).await.unwrap();
        let node = store.register_node(None, "http://one").await.unwrap();
        let expiry = std::time::Duration::from_secs(15);
        let epoch = scoped.acquire_lease(node.id(), &id, expiry).await.unwrap();
        let b = scoped.key_store(&id, epoch).await.unwrap().unwrap();
        b.put_identity("a@s.whatsapp.net", [1; 32]).await.unwrap();

        // Another acquisition, as a node taking the device over makes.
        scoped.acquire_lease(node.id(), &id, expiry).await.unwrap();
        let late = b.put_identity("b@s.whatsapp.net", [2; 32]).await;

        assert!(late.is_err(), "a write under the old epoch is refused");
        let rows = rows_by_table(&url, b.device_internal_id()).await;
        assert_eq!(rows["wa_identities"], 1, "only the write before: {rows:?}");
    }

    #[tokio::test]
    async fn closing_waits_for_the_statements_already_running() {
        let (store, url) = store_and_url().await;
        let b = std::sync::Arc::new(new_backend(&store).await);
        let keys = numbered_prekeys(800);

        let writer = {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move { b.store_prekeys_batch(&keys, false).await })
        };
        tokio::task::yield_now().await;
        b.close(std::time::Duration::from_secs(10)).await;
        let rows = rows_by_table(&url, b.device_internal_id()).await;
        let outcome = writer.await.expect("the writer finishes");

        // Either the batch ran before close returned, or it was refused: never after.
        let stored = rows["wa_prekeys"];
        match outcome {
            Ok(()) => assert_eq!(stored, 800),
            Err(_) => assert_eq!(stored, 0),
        }
        assert_eq!(
            rows_by_table(&url, b.device_internal_id()).await["wa_prekeys"],
            stored,
            "nothing landed after close returned"
        );
    }
}
