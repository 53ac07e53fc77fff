//! Plugins loaded by the gateway: events in order, panics and slowness contained, start-up
//! refusals that name the file, and the NATS plugin against a real nats-server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wagate_core::plugins::{PluginError, PluginHost, PluginSpec};

use futures_util::StreamExt;

use crate::support::nats::NatsServer;
use crate::support::{Api, Gateway, Options, eventually, plugin_library};

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

    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;
    let events = eventually("the plugin recording the login", || async {
        let events = recorded(&file);
        if events.iter().any(|e| e["type"] == "logged_in") {
            Ok(events)
        } else {
            Err(events)
        }
    })
    .await;
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
    // The host counts an event once the plugin has returned from it, just after the line.
    let recorded = events.len() as u64;
    counters_once(&api, |seen| seen["delivered"].as_u64() >= Some(recorded)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_on_every_event_is_counted_and_the_gateway_keeps_serving() {
    let gateway = gateway_with(json!({ "panic": true }), 1024).await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let login = api.get("/devices/d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let seen = counters_once(&api, |seen| seen["panicked"].as_u64() >= Some(2)).await;
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
async fn a_plugin_stuck_on_an_event_drops_events_and_never_delays_a_login() {
    // Room for one event, and the plugin takes none until the file exists: it is stuck.
    let release = record_file();
    let gateway = gateway_with(json!({ "hold_until": release }), 1).await;
    let api = gateway.tenant("acme").await;

    // Had the engine waited for the plugin, the first login would never have got its code.
    for device in ["d1", "d2", "d3"] {
        api.create_device(device).await;
        let login = api.get(&format!("/devices/{device}/login")).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    }
    let stuck = counters_once(&api, |seen| seen["dropped"].as_u64() >= Some(1)).await;
    assert_eq!(stuck["delivered"], 0, "{stuck}");

    std::fs::write(&release, "").unwrap();
    counters_once(&api, |seen| seen["delivered"].as_u64() >= Some(1)).await;
    let _ = std::fs::remove_file(&release);
}

/// The plugin counters once `condition` holds of them.
async fn counters_once(api: &Api, condition: impl Fn(&Value) -> bool) -> Value {
    eventually("the plugin counters getting there", || async {
        let seen = counters(api).await;
        if condition(&seen) {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
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

/// A gateway with the NATS plugin pointed at `nats`.
async fn gateway_with_nats(nats: &NatsServer) -> Gateway {
    let path = plugin_library("wagate-nats").await;
    Gateway::start_with(Options {
        plugins: vec![PluginSpec {
            path,
            config: json!({ "url": nats.url, "publish_timeout_ms": 1000 }),
            queue: 1024,
        }],
        ..Options::default()
    })
    .await
}

/// Waits until the stream holds a message on `subject`; returns its payload.
async fn stored_on(js: &async_nats::jetstream::Context, subject: &str) -> Value {
    eventually(&format!("a message arriving on {subject}"), || async {
        let stream = js.get_stream("WAGATE").await.map_err(|e| e.to_string())?;
        let message = stream
            .get_last_raw_message_by_subject(subject)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<Value, String>(serde_json::from_slice(&message.payload).expect("JSON"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_login_reach_nats_on_their_subjects_once_each() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url.as_str())
        .await
        .expect("connect");
    let mut published = client.subscribe("wagate.>").await.expect("subscribe");
    let gateway = gateway_with_nats(&nats).await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;

    gateway.scan_login(&api, "d1").await;
    let mut messages = Vec::new();
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = published.next().await {
            let done = message.subject.ends_with(".logged_in");
            messages.push(message);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "logged_in reached NATS; got {} messages",
        messages.len()
    );

    let mut ids = std::collections::HashSet::new();
    for message in &messages {
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        let expected = format!("wagate.{}.d1.{}", tenant.0, event["type"].as_str().unwrap());
        assert_eq!(message.subject.as_str(), expected);
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string());
        assert_eq!(
            id.as_deref(),
            event["id"].as_str(),
            "the event id is the message id"
        );
        assert!(ids.insert(id), "each event once");
    }
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("WAGATE")
        .await
        .expect("the plugin made the stream");
    let stored = stream.info().await.expect("info").state.messages;
    assert_eq!(
        stored,
        messages.len() as u64,
        "the stream holds each event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_nats_restarts_arrive_once_it_is_back() {
    let mut nats = NatsServer::start().await;
    let gateway = gateway_with_nats(&nats).await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let client = async_nats::connect(nats.url.as_str())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    api.create_device("d1").await;
    api.get("/devices/d1/login").await;
    stored_on(&js, &format!("wagate.{}.d1.qr_refreshed", tenant.0)).await;

    nats.stop();
    api.create_device("d2").await;
    let login = api.get("/devices/d2/login").await;
    assert_eq!(
        login.status,
        StatusCode::OK,
        "the gateway does not wait for NATS"
    );
    nats.resume().await;

    let event = stored_on(&js, &format!("wagate.{}.d2.qr_refreshed", tenant.0)).await;
    assert_eq!(event["device_id"], "d2");
}
