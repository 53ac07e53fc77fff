//! Plugins loaded by the gateway: events in order, panics and slowness contained, and start-up
//! refusals that name the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wagate_core::plugins::{PluginError, PluginHost, PluginSpec};

use crate::support::{Api, Gateway, Options, decode_qr, fetch, plugin_library};

/// A gateway with the test plugin configured with `config`, and a queue of `queue`.
async fn gateway_with(config: Value, queue: usize) -> Gateway {
    let path = plugin_library("wagate-test-plugin").await;
    Gateway::start_with(Options {
        plugins: vec![PluginSpec {
            path,
            config,
            queue,
        }],
        ..Options::default()
    })
    .await
}

/// The test plugin's counters, as `GET /plugins` shows them.
async fn counters(api: &Api) -> Value {
    let answer = api.get("/plugins").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["results"][0].clone()
}

/// A fresh file path for the test plugin to record into.
fn record_file() -> PathBuf {
    std::env::temp_dir().join(format!("wagate-plugin-{}.jsonl", uuid::Uuid::new_v4()))
}

fn recorded(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_login_reach_a_plugin_in_order() {
    let file = record_file();
    let gateway = gateway_with(json!({ "record": file }), 1024).await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let login = api.get("/devices/d1/login").await;
    let (_, png) = fetch(login.body["results"]["qr_link"].as_str().unwrap()).await;
    gateway
        .sandbox
        .scan_qr(&decode_qr(&png))
        .await
        .expect("linked");
    api.wait_logged_in("d1").await;
    let mut events = Vec::new();
    for _ in 0..100 {
        events = recorded(&file);
        if events.iter().any(|e| e["type"] == "logged_in") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&file);

    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every event, once, in order");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"state_changed"), "{types:?}");
    let qr = types
        .iter()
        .position(|t| *t == "qr_refreshed")
        .expect("a QR code");
    let logged_in = types
        .iter()
        .position(|t| *t == "logged_in")
        .expect("the login");
    assert!(qr < logged_in, "{types:?}");
    assert_eq!(events[logged_in]["device_id"], "d1");
    assert_eq!(counters(&api).await["delivered"], events.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_on_every_event_is_counted_and_the_gateway_keeps_serving() {
    let gateway = gateway_with(json!({ "panic": true }), 1024).await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let login = api.get("/devices/d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = counters(&api).await;
        if seen["panicked"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen["panicked"].as_u64() >= Some(2), "{seen}");
    assert_eq!(seen["delivered"], 0);
    assert_eq!(seen["name"], "test-plugin");
    assert_eq!(
        api.get("/devices/d1").await.status,
        StatusCode::OK,
        "still serving"
    );
    api.create_device("d2").await;
    assert_eq!(api.get("/devices/d2/login").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_sleeps_on_every_event_drops_events_and_never_delays_a_login() {
    // Two seconds per event and room for one: the plugin falls behind at once.
    let gateway = gateway_with(json!({ "sleep_ms": 2000 }), 1).await;
    let api = gateway.tenant("acme").await;

    let started = Instant::now();
    for device in ["d1", "d2", "d3"] {
        api.create_device(device).await;
        let login = api.get(&format!("/devices/{device}/login")).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    }
    let took = started.elapsed();

    // Each login records at least two events; had the engine waited for the plugin, three
    // logins would have taken at least 2 × 3 × 2 s.
    assert!(took < Duration::from_secs(6), "the logins took {took:?}");
    let seen = counters(&api).await;
    assert!(seen["dropped"].as_u64() >= Some(1), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_cannot_start_are_refused_naming_the_file() {
    let load = |path: &Path, config: Value| {
        PluginHost::load(&[PluginSpec {
            path: path.to_path_buf(),
            config,
            queue: 8,
        }])
        .expect_err("refused")
    };
    let missing = load(Path::new("/nowhere/libgone.so"), json!({}));
    assert!(matches!(missing, PluginError::NotFound(_)), "{missing}");
    assert!(missing.to_string().contains("/nowhere/libgone.so"));

    let dir = std::env::temp_dir().join(format!("wagate-not-plugins-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("libtext.so");
    std::fs::write(&text, "not a library").unwrap();
    let not_a_library = load(&text, json!({}));
    assert!(
        matches!(not_a_library, PluginError::Load { .. }),
        "{not_a_library}"
    );
    assert!(not_a_library.to_string().contains("libtext.so"));

    // A real shared library without wagate's entry symbol.
    let source = dir.join("stranger.rs");
    std::fs::write(
        &source,
        "#[unsafe(no_mangle)] pub extern \"C\" fn stranger() {}\n",
    )
    .unwrap();
    let stranger = dir.join("libstranger.so");
    let built = std::process::Command::new("rustc")
        .args(["--edition", "2024", "--crate-type", "cdylib", "-o"])
        .arg(&stranger)
        .arg(&source)
        .status()
        .expect("rustc runs");
    assert!(built.success());
    let no_symbol = load(&stranger, json!({}));
    assert!(
        matches!(no_symbol, PluginError::MissingSymbol(_)),
        "{no_symbol}"
    );
    assert!(no_symbol.to_string().contains("wagate_plugin_entry"));

    let refusing = load(
        &plugin_library("wagate-test-plugin").await,
        json!({ "refuse": "no broker configured" }),
    );
    assert!(matches!(refusing, PluginError::Init { .. }), "{refusing}");
    assert!(refusing.to_string().contains("no broker configured"));
    let _ = std::fs::remove_dir_all(&dir);
}
