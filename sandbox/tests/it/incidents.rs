//! What the server sometimes does to a client besides the routine, with the real client: a
//! registration rotated mid-series, a rate-limited registration, a refused first app-state sync
//! and the client's expiration date.

use whatsapp_rust::NodeFilter;
use whatsapp_rust::types::events::Event;

use crate::support::{STEP, TestClient, eventually, link_by_qr, sandbox};

const PHONE: &str = "628912344551";

#[tokio::test]
async fn a_rotated_registration_shows_the_same_ref_under_a_new_secret_that_links() {
    let sandbox = sandbox(6, 10).await;
    let mut client = TestClient::new(&sandbox).await;
    let (first, _) = client.next_qr().await;

    let reference = sandbox
        .refresh_registration(&first)
        .await
        .expect("the client showing it is connected");
    let (second, _) = client.next_qr().await;

    let fields = |qr: &str| qr.split(',').map(str::to_string).collect::<Vec<_>>();
    let (before, after) = (fields(&first), fields(&second));
    assert_eq!(after[0], reference, "the same ref");
    assert_eq!(before[0], reference);
    assert_eq!(after[1..3], before[1..3], "the same keys");
    assert_ne!(after[3], before[3], "a new ADV secret");
    sandbox
        .scan_qr_as(PHONE, &second)
        .await
        .expect("the rotated code links");
    client.connected().await;
}

#[tokio::test]
async fn a_code_retired_by_a_rotation_no_longer_links() {
    let sandbox = sandbox(6, 10).await;
    let mut client = TestClient::new(&sandbox).await;
    let (first, _) = client.next_qr().await;

    sandbox
        .refresh_registration(&first)
        .await
        .expect("the client showing it is connected");
    client.next_qr().await;
    let scanned = sandbox.scan_qr_as(PHONE, &first).await;

    assert!(
        scanned.is_err(),
        "the client refuses a link signed for the retired secret: {scanned:?}"
    );
    assert!(sandbox.accounts().is_empty());
}

#[tokio::test]
async fn a_rate_limited_registration_ends_with_a_429_stream_error_and_no_refs() {
    let sandbox = sandbox(6, 10).await;
    sandbox.set_rate_limited(true);
    let client = TestClient::new(&sandbox).await;
    let refused = client.client.wait_for_node(NodeFilter::tag("stream:error"));

    let node = tokio::time::timeout(STEP, refused)
        .await
        .expect("within a step")
        .expect("the client saw the stream error");

    assert_eq!(
        node.get().get_attr("code").map(|c| c.as_str().to_string()),
        Some("429".to_string())
    );
    eventually("the sandbox to drop the connection", || {
        sandbox.clients().is_empty()
    })
    .await;
}

#[tokio::test]
async fn registrations_go_through_again_once_the_rate_limit_is_lifted() {
    let sandbox = sandbox(6, 10).await;
    sandbox.set_rate_limited(true);
    sandbox.set_rate_limited(false);

    let (_, linked) = link_by_qr(&sandbox).await;

    assert_eq!(sandbox.accounts()[0].jid, linked.jid);
}

#[tokio::test]
async fn a_refused_first_sync_connects_the_client_and_reports_critical_block() {
    let sandbox = sandbox(6, 10).await;
    sandbox
        .refuse_next_app_state_sync(PHONE)
        .expect("a valid phone");
    let mut client = TestClient::new(&sandbox).await;
    let (qr, _) = client.next_qr().await;

    sandbox.scan_qr_as(PHONE, &qr).await.expect("linked");
    client.connected().await;
    let failed = client
        .wait_for("AppStateSyncFailed", |e| match e {
            Event::AppStateSyncFailed(f) => Some(f.clone()),
            _ => None,
        })
        .await;

    assert_eq!(failed.fatal, ["critical_block"]);
    assert!(failed.connected);
}

#[tokio::test]
async fn the_client_is_told_its_expiration_date() {
    let sandbox = sandbox(6, 10).await;
    let (client, linked) = link_by_qr(&sandbox).await;
    let told = client.client.wait_for_node(NodeFilter::tag("ib"));

    sandbox
        .announce_client_expiration(&linked.jid, 1_900_000_000)
        .await
        .expect("the client is online");
    let node = tokio::time::timeout(STEP, told)
        .await
        .expect("within a step")
        .expect("the client received it");

    let at = node
        .get()
        .get_optional_child("client_expiration")
        .and_then(|c| c.get_attr("t"))
        .map(|t| t.as_str().to_string());
    assert_eq!(at.as_deref(), Some("1900000000"));
}

#[tokio::test]
async fn an_expiration_for_an_offline_device_is_refused() {
    let sandbox = sandbox(6, 10).await;
    let (client, linked) = link_by_qr(&sandbox).await;
    client.stop().await;
    eventually("the device to go offline", || {
        sandbox.accounts().iter().all(|a| !a.connected)
    })
    .await;

    let refused = sandbox
        .announce_client_expiration(&linked.jid, 1_900_000_000)
        .await;

    assert!(
        matches!(refused, Err(wagate_sandbox::PhoneError::Offline(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_outdated_client_is_refused_with_a_405_failure() {
    let sandbox = sandbox(6, 10).await;
    sandbox.set_client_outdated(true);
    let mut client = TestClient::new(&sandbox).await;

    client
        .wait_for("ClientOutdated", |e| {
            matches!(e, Event::ClientOutdated(_)).then_some(())
        })
        .await;

    assert!(sandbox.accounts().is_empty());
}
