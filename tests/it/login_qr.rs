//! `GET /devices/{device_id}/login`: the QR code login.

use std::time::Duration;

use reqwest::StatusCode;
use wagate_sandbox::AccountKind;

use crate::support::receiver::subscribed;
use crate::support::{Gateway, Options, decode_qr, eventually, fetch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanned_qr_code_logs_the_device_in() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("my-device-id").await;

    let login = api.get("/devices/my-device-id/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.code(), "SUCCESS");
    assert_eq!(login.body["message"], "QR code generated successfully");
    let results = &login.body["results"];
    assert_eq!(results["device_id"], "my-device-id");
    let duration = results["qr_duration"].as_u64().expect("qr_duration");
    assert!((1..=30).contains(&duration), "{duration}");
    let link = results["qr_link"].as_str().expect("qr_link");
    let prefix = format!("{}/statics/images/qrcode/scan-qr-", gateway.base);
    assert!(
        link.starts_with(&prefix) && link.ends_with(".png"),
        "{link}"
    );

    let (status, png) = fetch(link).await;
    assert_eq!(status, StatusCode::OK, "the image needs no credentials");
    let qr = decode_qr(&png);
    gateway
        .sandbox
        .scan_qr_as("628912344551", &qr)
        .await
        .expect("the phone links the device with the code in the image");
    api.wait_logged_in("my-device-id").await;

    let device = api.get("/devices/my-device-id").await;
    assert_eq!(device.body["results"]["state"], "logged_in");
    let jid = device.body["results"]["jid"].as_str().unwrap_or_default();
    assert!(jid.starts_with("628912344551:"), "{jid}");
    let again = api.get("/devices/my-device-id/login").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.code(), "ALREADY_LOGGED_IN");
    assert_eq!(again.body["message"], "you are already logged in.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_while_a_code_is_pending_returns_that_code() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let first = api.get("/devices/d1/login").await;
    let second = api.get("/devices/d1/login").await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.body["results"]["qr_link"],
        second.body["results"]["qr_link"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_logins_on_one_device_start_one_session() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let calls = (0..20).map(|_| {
        let api = api.clone();
        tokio::spawn(async move { api.get("/devices/d1/login").await })
    });
    let mut links = std::collections::HashSet::new();
    for call in calls {
        let answer = call.await.expect("call");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        links.insert(
            answer.body["results"]["qr_link"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    assert_eq!(links.len(), 1, "every caller got the same code: {links:?}");
    assert_eq!(
        gateway.sandbox.connections_made(),
        1,
        "one client ever connected to WhatsApp"
    );
    assert_eq!(gateway.sandbox.clients().len(), 1, "and it is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qr_image_is_gone_once_its_code_expires() {
    // At scale 20 the first code lives 3 s.
    let gateway = Gateway::start_with(Options {
        time_scale: 20,
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let login = api.get("/devices/d1/login").await;
    let link = login.body["results"]["qr_link"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fetch(&link).await.0, StatusCode::OK);

    eventually("the expired image going", || async {
        let status = fetch(&link).await.0;
        if status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_whatsapp_is_a_504_and_the_next_login_works() {
    let gateway = Gateway::start_with(Options {
        login_timeout: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    gateway.sandbox.set_outage(true);

    let refused = api.get("/devices/d1/login").await;
    assert_eq!(
        refused.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        refused.body
    );
    assert_eq!(refused.code(), "GATEWAY_TIMEOUT");
    let device = api.get("/devices/d1").await;
    assert_eq!(device.body["results"]["state"], "disconnected");

    gateway.sandbox.set_outage(false);
    let login = api.get("/devices/d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_series_runs_out_login_starts_a_new_one() {
    // One code per series, living 3 s at scale 20.
    let gateway = Gateway::start_with(Options {
        qr_refs: 1,
        time_scale: 20,
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let first = api.get("/devices/d1/login").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    api.wait_state("d1", "disconnected").await;
    let second = api.get("/devices/d1/login").await;

    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_ne!(
        first.body["results"]["qr_link"], second.body["results"]["qr_link"],
        "a new series shows a new code"
    );
    let (status, png) = fetch(second.body["results"]["qr_link"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    gateway
        .sandbox
        .scan_qr(&decode_qr(&png))
        .await
        .expect("the new code links");
    api.wait_logged_in("d1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_time_scale_20_a_later_login_call_returns_a_code_the_phone_can_still_scan() {
    // At this scale the first code lives 3 s and every later one 1 s: shorter than the engine's
    // unscaled 2 s reuse margin was, so no code counted as showing.
    let gateway = Gateway::start_with(Options {
        time_scale: 20,
        ..Options::default()
    })
    .await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let device = wagate_core::domain::DeviceId::parse("d1").unwrap();
    let first = api.get("/devices/d1/login").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    // Past the first code, as a person reading Swagger UI would be.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let later = api.get("/devices/d1/login").await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    assert!(
        later.body["results"]["qr_duration"].as_u64() >= Some(1),
        "{}",
        later.body
    );
    let showing = gateway
        .manager
        .current_qr(tenant, &device)
        .await
        .expect("the device is known")
        .expect("a code is showing, for the sandbox phone to scan");
    gateway.sandbox.scan_qr(&showing).await.expect("linked");
    api.wait_logged_in("d1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_account_fails_with_a_signature_mismatch_and_leaves_no_keys() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let (receiver, _) = subscribed(&api, &["login_failed"]).await;
    api.create_device("d1").await;
    gateway
        .sandbox
        .set_account("628912344551", AccountKind::Hosted)
        .expect("a valid phone");
    let login = api.get("/devices/d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let (_, png) = fetch(login.body["results"]["qr_link"].as_str().expect("qr_link")).await;

    let refused = gateway
        .sandbox
        .scan_qr_as("628912344551", &decode_qr(&png))
        .await;
    let failed = receiver
        .wait_for("login_failed", Duration::from_secs(10))
        .await;

    assert!(
        refused.is_err(),
        "whatsapp-rust 0.7.0 refuses the link: {refused:?}"
    );
    assert_eq!(
        failed.event()["data"]["reason"],
        "pairing_signature_mismatch",
        "not pair_code_rejected, and not a timeout"
    );
    api.wait_state("d1", "disconnected").await;
    assert_eq!(gateway.key_rows(tenant, "d1").await, 0);
}
