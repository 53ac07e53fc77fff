//! The `wagate` binary in sandbox mode: the README's walk-through over HTTP, and what a
//! `kill -9` leaves for the next process.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use wagate_core::domain::DeviceId;
use wagate_core::store::{DeviceChange, Store};
use wagate_sandbox::{Sandbox, SandboxConfig};

use crate::support::process::{Wagate, refused_start};
use crate::support::receiver::{Received, Receiver};
use crate::support::{Api, decode_qr, fetch, pg, plugin_library, state_changes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_walkthrough_links_devices_over_http() {
    let qr_terminal = plugin_library("wagate-qr-terminal").await;
    let database_url = pg::fresh_database_url().await;
    let plugins = qr_terminal.to_string_lossy();
    let wagate = Wagate::start_on(
        &database_url,
        &[
            "--sandbox",
            "--sandbox-time-scale",
            "10",
            "--plugins",
            &plugins,
        ],
    );
    let api = Api::new(&wagate.base, "admin", "secret");

    api.create_device("by-qr").await;
    let login = api.get("/devices/by-qr/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let scanned = api
        .post("/sandbox/devices/by-qr/scan?phone=628912344551")
        .await;
    assert_eq!(scanned.status, StatusCode::OK, "{}", scanned.body);
    api.wait_logged_in("by-qr").await;
    // The qr-terminal plugin drew the code and reported the login on wagate's stdout.
    wagate
        .wait_for_line("device by-qr: scan this QR code")
        .await;
    wagate
        .wait_for_line("device by-qr logged in as 628912344551:")
        .await;

    api.create_device("by-code").await;
    let code = api
        .post("/devices/by-code/login/code?phone=628912344552")
        .await;
    assert_eq!(code.status, StatusCode::OK, "{}", code.body);
    let entered = api.post("/sandbox/devices/by-code/enter-code").await;
    assert_eq!(entered.status, StatusCode::OK, "{}", entered.body);
    api.wait_logged_in("by-code").await;

    let unlinked = api.post("/sandbox/devices/by-qr/unlink").await;
    assert_eq!(unlinked.status, StatusCode::OK, "{}", unlinked.body);
    // An unlinked device is logged out.
    api.wait_state("by-qr", "disconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_leaves_a_database_the_next_process_starts_from() {
    // "WhatsApp" lives in this test process and outlives every gateway process.
    let sandbox = Sandbox::start_with(SandboxConfig {
        time_scale: 10,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let database_url = pg::fresh_database_url().await;
    let ws = sandbox.ws_url();
    let args = ["--whatsapp-url", ws.as_str(), "--sandbox-time-scale", "10"];

    let first = Wagate::start_on(&database_url, &args);
    let api = Api::new(&first.base, "admin", "secret");
    api.create_device("d1").await;
    let pending = api.get("/devices/d1/login").await;
    assert_eq!(pending.status, StatusCode::OK, "{}", pending.body);
    first.kill();

    let second = Wagate::start_on(&database_url, &args);
    let api = api.at(&second.base);
    api.wait_state("d1", "disconnected").await;
    let login = api.get("/devices/d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let (_, png) = fetch(login.body["results"]["qr_link"].as_str().unwrap()).await;
    sandbox.scan_qr(&decode_qr(&png)).await.expect("linked");
    api.wait_logged_in("d1").await;
    second.kill();

    let third = Wagate::start_on(&database_url, &args);
    api.at(&third.base).wait_logged_in("d1").await;
    assert_eq!(
        sandbox.accounts().len(),
        1,
        "the device came back without a new link"
    );
}

/// `serve` in sandbox mode with loopback webhook receivers allowed.
const WEBHOOK_ARGS: [&str; 4] = [
    "--sandbox",
    "--sandbox-time-scale",
    "10",
    "--webhook-allow-private",
];

/// `wagate serve` with `WEBHOOK_ARGS` on `database_url`, its API, and a webhook endpoint for
/// `events` at `receiver`.
async fn subscribed(database_url: &str, receiver: &Receiver, events: &[&str]) -> (Wagate, Api) {
    let wagate = Wagate::start_on(database_url, &WEBHOOK_ARGS);
    let api = Api::new(&wagate.base, "admin", "secret");
    let created = api
        .post_json(
            "/webhooks",
            serde_json::json!({ "url": receiver.url, "events": events }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    (wagate, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_a_thousand_events_pending_loses_none_of_them() {
    let database_url = pg::fresh_database_url().await;
    let receiver = Receiver::start().await;
    // Slow enough that the kill lands with most events undelivered.
    receiver.slow_down(Duration::from_millis(20));
    let (first, api) = subscribed(&database_url, &receiver, &["state_changed"]).await;
    api.create_device("d1").await;

    // A thousand events recorded the way the engine records them, straight into the outbox.
    let store = Store::connect(&database_url).await.expect("store");
    let tenant = store
        .authenticate("admin", "secret")
        .await
        .expect("lookup")
        .expect("the default tenant")
        .id;
    let device = DeviceId::parse("d1").unwrap();
    let mut recorded: HashMap<String, String> = HashMap::new();
    for _ in 0..100 {
        for event in store
            .tenant(tenant)
            .record_events(&device, DeviceChange::default(), state_changes(10))
            .await
            .expect("recorded")
        {
            recorded.insert(event.id.to_string(), event.body.to_string());
        }
    }
    receiver.wait_count(50, Duration::from_secs(30)).await;
    first.kill();
    let before_kill = receiver.count();
    assert!(before_kill < 1000, "the kill landed with events pending");

    let _second = Wagate::start_on(&database_url, &WEBHOOK_ARGS);
    let distinct = |r: &[Received]| {
        r.iter()
            .map(|x| x.header("webhook-id").to_string())
            .collect::<HashSet<_>>()
            .len()
    };
    let received = receiver
        .wait_until(Duration::from_secs(60), |r| distinct(r) >= 1000)
        .await;
    for request in &received {
        let id = request.header("webhook-id");
        let body = recorded
            .get(id)
            .expect("only recorded events are delivered");
        assert_eq!(
            body.as_bytes(),
            &request.body[..],
            "a duplicate is the same event, byte for byte, under the same webhook-id"
        );
    }
    assert_eq!(distinct(&received), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_start_stops_the_gateway_with_a_clear_error() {
    let database_url = pg::fresh_database_url().await;
    let library = plugin_library("wagate-test-plugin").await;
    let path = library.to_string_lossy().to_string();

    // A sandbox build needs its sandbox: the plugins are what must stop these starts.
    let missing = refused_start(
        &database_url,
        &["--sandbox", "--plugins", "/nowhere/libgone.so"],
        &[],
    );
    assert!(
        missing.contains("/nowhere/libgone.so") && missing.contains("not found"),
        "{missing}"
    );

    let other_abi = refused_start(
        &database_url,
        &["--sandbox", "--plugins", &path],
        &[("WAGATE_TEST_PLUGIN_OTHER_ABI", "1")],
    );
    assert!(other_abi.contains(&path), "{other_abi}");
    assert!(
        other_abi.contains("version 99") && other_abi.contains("version 1"),
        "both versions are named: {other_abi}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_a_kill_interrupted_are_reported_failed_when_wagate_starts_again() {
    let database_url = pg::fresh_database_url().await;
    let receiver = Receiver::start().await;
    let (first, api) =
        subscribed(&database_url, &receiver, &["login_failed", "state_changed"]).await;
    let devices: Vec<String> = (1..=5).map(|n| format!("d{n}")).collect();
    for device in &devices {
        api.create_device(device).await;
        let login = api.get(&format!("/devices/{device}/login")).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    }

    first.kill();
    let second = Wagate::start_on(&database_url, &WEBHOOK_ARGS);

    let failed = |r: &Received| {
        let event = r.event();
        (event["type"] == "login_failed" && event["data"]["reason"] == "interrupted")
            .then(|| event["device_id"].as_str().unwrap_or_default().to_string())
    };
    let dropped = |r: &Received| {
        let event = r.event();
        (event["type"] == "state_changed" && event["data"]["to"] == "disconnected")
            .then(|| event["device_id"].as_str().unwrap_or_default().to_string())
    };
    // Deliveries may arrive in any order: wait for both events of every device.
    let received = receiver
        .wait_until(Duration::from_secs(30), |r| {
            r.iter().filter_map(failed).collect::<HashSet<_>>().len() == devices.len()
                && r.iter().filter_map(dropped).collect::<HashSet<_>>().len() == devices.len()
        })
        .await;
    let reported: HashSet<String> = received.iter().filter_map(failed).collect();
    assert_eq!(reported, devices.iter().cloned().collect());
    let api = api.at(&second.base);
    for device in &devices {
        let state = api.get(&format!("/devices/{device}")).await;
        assert_eq!(state.body["results"]["state"], "disconnected", "{device}");
        let disconnected = received.iter().any(|r| {
            let event = r.event();
            event["type"] == "state_changed"
                && event["device_id"] == device.as_str()
                && event["data"]["to"] == "disconnected"
        });
        assert!(
            disconnected,
            "{device} reported its state_changed to disconnected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_ca_file_that_cannot_be_used_stops_the_gateway_with_a_clear_error() {
    let database_url = pg::fresh_database_url().await;
    let not_pem = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(not_pem.path(), "not a certificate\n").expect("written");
    let not_pem_path = not_pem.path().to_string_lossy().to_string();

    let missing = refused_start(
        &database_url,
        &["--sandbox", "--webhook-ca-file", "/nowhere/ca.pem"],
        &[],
    );
    assert!(
        missing.contains("WAGATE_WEBHOOK_CA_FILE /nowhere/ca.pem"),
        "{missing}"
    );

    let refused = refused_start(
        &database_url,
        &["--sandbox"],
        &[("WAGATE_WEBHOOK_CA_FILE", &not_pem_path)],
    );
    assert!(
        refused.contains(&not_pem_path) && refused.contains("BEGIN CERTIFICATE"),
        "{refused}"
    );
}
