//! What follows a link as on WhatsApp: the companion uploads its keys, the server keeps them
//! (count, digest, bundles), and the phone shares the account's app-state key over a Signal
//! session built from them, so the client connects without waiting for the share.

use std::time::{Duration, Instant};

use wagate_sandbox::Delivery;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::prekeys::{DigestKeyBundleSpec, PreKeyCountSpec};
use whatsapp_rust::wacore::prekeys::{compute_key_bundle_digest, extract_prekey_public_key};
use whatsapp_rust::waproto::whatsapp::history_sync::HistorySyncType;

use crate::support::{TestClient, eventually, link_by_qr, sandbox};

/// How long whatsapp-rust waits for a key share that never comes before its first sync.
const KEY_SHARE_GRACE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_shares_its_app_state_key_so_the_client_connects_without_waiting() {
    // Real time: a client left waiting for the share would take the whole grace.
    let sandbox = sandbox(6, 1).await;
    let mut client = TestClient::new(&sandbox).await;
    let (qr, _) = client.next_qr().await;

    let scanned = Instant::now();
    let linked = sandbox
        .scan_qr(&qr)
        .await
        .expect("the phone links the client");
    client.connected().await;
    let took = scanned.elapsed();

    assert!(
        took < KEY_SHARE_GRACE / 2,
        "scan → Connected took {took:?}: the client waited for a key share"
    );
    let key_id = client
        .backend
        .get_latest_sync_key_id()
        .await
        .expect("the store answers")
        .expect("the client stored the phone's app-state key");
    let key = client
        .backend
        .get_sync_key(&key_id)
        .await
        .expect("the store answers")
        .expect("the key is there under its id");
    assert_eq!(key.key_data.len(), 32);
    eventually("the companion's receipt for the key share", || {
        sandbox
            .accounts()
            .iter()
            .any(|a| a.jid == linked.jid && a.key_share == Delivery::Delivered)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_counts_the_prekeys_the_companion_uploaded() {
    let sandbox = sandbox(6, 10).await;
    let (client, _) = link_by_qr(&sandbox).await;

    let held = sandbox.accounts()[0].prekeys;
    let count = client
        .client
        .execute(PreKeyCountSpec::new())
        .await
        .expect("the count is answered")
        .count;

    assert!(
        held > 0,
        "a new companion uploads its prekeys at its first login"
    );
    assert_eq!(
        count, held,
        "the count the client is told is what the server holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_matches_the_bundle_the_client_holds() {
    let sandbox = sandbox(6, 10).await;
    let (client, _) = link_by_qr(&sandbox).await;

    let digest = client
        .client
        .execute(DigestKeyBundleSpec::new())
        .await
        .expect("a companion that uploaded gets a digest");
    let device = client.client.persistence_manager().get_device_snapshot();
    let stored = client
        .backend
        .load_prekeys_batch(&digest.prekey_ids)
        .await
        .expect("the store answers");
    let by_id: std::collections::HashMap<u32, _> = stored.iter().cloned().collect();
    let publics: Vec<_> = digest
        .prekey_ids
        .iter()
        .map(|id| extract_prekey_public_key(&by_id[id]).expect("a stored prekey"))
        .collect();
    let local = compute_key_bundle_digest(
        device.identity_key.public_key.public_key_bytes(),
        device.signed_pre_key.public_key.public_key_bytes(),
        &device.signed_pre_key_signature,
        &publics,
    );

    assert_eq!(digest.reg_id, device.registration_id);
    assert_eq!(
        stored.len(),
        digest.prekey_ids.len(),
        "every listed id is the client's"
    );
    assert!(!digest.prekey_ids.is_empty());
    assert_eq!(digest.hash, local, "the server's hash is the client's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_sends_the_initial_history_with_its_push_name() {
    let sandbox = sandbox(6, 10).await;
    let mut client = TestClient::keeping_history(&sandbox).await;
    let (qr, _) = client.next_qr().await;
    let linked = sandbox
        .scan_qr_as("628912344551", &qr)
        .await
        .expect("the phone links the client");

    let history = client
        .wait_for("HistorySync", |e| match e {
            Event::HistorySync(h) => Some(h.clone()),
            _ => None,
        })
        .await;

    assert_eq!(
        history.sync_type(),
        HistorySyncType::INITIAL_BOOTSTRAP as i32,
        "the first chunk a phone sends"
    );
    let content = history.get().expect("the inline payload decodes");
    let own = content
        .pushnames
        .iter()
        .find(|p| p.id.as_deref() == Some("628912344551@s.whatsapp.net"))
        .expect("the account's own push name");
    assert!(!own.pushname.clone().unwrap_or_default().is_empty());
    eventually("the companion's receipt for its history", || {
        sandbox
            .accounts()
            .iter()
            .any(|a| a.jid == linked.jid && a.history == Delivery::Delivered)
    })
    .await;
}
