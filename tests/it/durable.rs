//! Durable sessions: keys in PostgreSQL, restored after a restart, wiped on logout and unlink.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Gateway, decode_qr, eventually, fetch};

/// Links `device` by QR through the API and the sandbox phone.
async fn link(gateway: &Gateway, api: &crate::support::Api, device: &str) -> String {
    api.create_device(device).await;
    let login = api.get(&format!("/devices/{device}/login")).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let (_, png) = fetch(login.body["results"]["qr_link"].as_str().unwrap()).await;
    let linked = gateway
        .sandbox
        .scan_qr(&decode_qr(&png))
        .await
        .expect("linked");
    api.wait_logged_in(device).await;
    linked.jid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_comes_back_after_a_restart_without_a_scan() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let jid = link(&gateway, &api, "d1").await;
    assert!(
        gateway.key_bytes(tenant, "d1").await > 0,
        "keys are in PostgreSQL"
    );

    let before = gateway.recorded_events(tenant, "d1").await.len();
    let gateway = gateway.restart().await;
    // The stored state says logged in from before the restart; the reconnect is its events.
    let reconnected = (
        "state_changed".to_string(),
        json!({ "from": "connecting", "to": "logged_in" }),
    );
    let seen = eventually("the restored device's reconnect recorded", || async {
        let seen = gateway
            .recorded_events(tenant, "d1")
            .await
            .split_off(before);
        if seen.contains(&reconnected) {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await;
    api.at(&gateway.base).wait_logged_in("d1").await;
    assert!(
        !seen.iter().any(|(t, _)| t == "logged_in"),
        "a restore is a state change, not a new login: {seen:?}"
    );
    let accounts = gateway.sandbox.accounts();
    assert_eq!(accounts.len(), 1, "no second link");
    assert_eq!(accounts[0].jid, jid);
    assert!(accounts[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_from_the_phone_wipes_the_device_keys() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let jid = link(&gateway, &api, "d1").await;

    gateway.sandbox.unlink(&jid).await.expect("unlinked");
    api.wait_state("d1", "disconnected").await;

    assert_eq!(gateway.key_rows(tenant, "d1").await, 0);
    assert!(api.get("/devices/d1").await.body["results"]["jid"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_through_the_api_wipes_the_device_keys() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    link(&gateway, &api, "d1").await;

    let logout = api.post("/devices/d1/logout").await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);

    assert_eq!(gateway.key_rows(tenant, "d1").await, 0);
    let device = api.get("/devices/d1").await;
    assert_eq!(device.body["results"]["state"], "disconnected");
    assert!(
        gateway.sandbox.accounts().is_empty(),
        "the phone no longer lists it"
    );
}
