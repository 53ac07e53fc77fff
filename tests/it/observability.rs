//! `examples/observability/` and `GET /metrics` through Prometheus's own tools: the alert rules,
//! their unit tests and the example config through promtool; the Grafana dashboard's shape; the
//! scrape of a gateway that has done something of everything through `promtool check metrics`,
//! holding every metric the examples name; and a real prometheus server scraping a gateway after
//! a login, queried over its HTTP API, with the alert rules loaded and every query of the
//! dashboard run.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use wagate_core::plugins::PluginSpec;
use wagate_sandbox::AccountKind;

use crate::support::prometheus::{self, PrometheusServer, printed};
use crate::support::receiver::{Receiver, subscribe, subscribed};
use crate::support::{Gateway, Options, eventually, plugin_library, showing_qr};

/// The example dashboard, parsed.
fn dashboard() -> Value {
    let path = prometheus::examples_dir().join("grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is there");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// The panels of the dashboard that show data (not rows).
fn data_panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

/// Every query of the dashboard, as Prometheus gets it once Grafana has filled in its variables.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in data_panels(&dashboard) {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let filled = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".+");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                filled,
            ));
        }
    }
    queries
}

/// The `wagate_…` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wagate_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// A gateway with device `d1` logged in by a scanned QR code.
async fn logged_in_gateway() -> Gateway {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;
    gateway
}

/// A gateway that has done something of everything its metrics count: `d1` logged in by a
/// scanned QR code, `d2`'s login failed (a hosted account, which whatsapp-rust 0.7.0 refuses),
/// a plugin handed the events, a receiver given them, and an endpoint nothing listens at
/// holding its delivery for a retry an hour later.
async fn busy_gateway() -> Gateway {
    let gateway = Gateway::start_with(Options {
        plugins: vec![PluginSpec {
            path: plugin_library("wagate-test-plugin").await,
            config: json!({}),
            queue: 1024,
        }],
        webhook_retry_schedule: "1h",
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    let (receiver, _) = subscribed(&api, &["logged_in", "login_failed"]).await;
    let (vacant, _) = Receiver::vacant();
    subscribe(&api, &vacant, &["logged_in"], None).await;

    api.create_device("d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;

    api.create_device("d2").await;
    gateway
        .sandbox
        .set_account("628912344552", AccountKind::Hosted)
        .expect("a valid phone");
    let qr = showing_qr(&api, "d2").await;
    let refused = gateway.sandbox.scan_qr_as("628912344552", &qr).await;
    assert!(refused.is_err(), "a hosted account is refused: {refused:?}");
    receiver
        .wait_for("login_failed", Duration::from_secs(10))
        .await;
    gateway
}

#[tokio::test]
async fn the_alert_rules_their_unit_tests_and_the_example_config_pass_promtool() {
    if prometheus::skip_without(false, "check the example alert rules") {
        return;
    }
    let dir = prometheus::examples_dir();
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ] {
        let output = prometheus::promtool(&args, &dir, None).await;
        assert!(
            output.status.success(),
            "promtool {} failed:\n{}",
            args.join(" "),
            printed(&output)
        );
    }
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a Prometheus datasource input to choose on import: {inputs:?}"
    );
    assert!(dashboard["id"].is_null(), "no id, so import makes one");

    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id reused"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(x + w <= 24, "{title}: wider than the dashboard");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("wagate_"), "{title}: {expr}");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: the gateway picker applies: {expr}"
            );
        }
    }
    let titles: Vec<_> = data_panels(&dashboard)
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_string())
        .collect();
    for wanted in [
        "Login funnel",
        "Devices by state",
        "Login duration",
        "Webhook attempt duration",
        "Webhook delivery outcomes",
        "Webhook backlog by endpoint",
        "Oldest pending event by endpoint",
        "Plugin drops",
        "Requests by route",
        "Request duration by route (p95)",
        "Connection pool",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_every_family_passes_promtool_and_has_what_the_examples_use() {
    if prometheus::skip_without(false, "check the gateway's metrics") {
        return;
    }
    let gateway = busy_gateway().await;

    // Every metric the alert rules and the dashboard name is one the gateway shows. Families
    // show once they have a series, so this waits for the last of them.
    let dir = prometheus::examples_dir();
    let used: BTreeSet<String> = ["alerts.yml", "grafana-dashboard.json"]
        .iter()
        .flat_map(|file| metric_names(&std::fs::read_to_string(dir.join(file)).expect(file)))
        .collect();
    let text = eventually("a scrape with every metric the examples use", || {
        let used = &used;
        let gateway = &gateway;
        async move {
            let scrape = gateway.scrape().await;
            let known: BTreeSet<&str> = scrape.series.iter().map(|s| s.name.as_str()).collect();
            // A histogram is named by its family in descriptions, by its series in queries.
            let unknown: Vec<_> = used
                .iter()
                .filter(|n| {
                    !known.contains(n.as_str()) && !known.contains(format!("{n}_bucket").as_str())
                })
                .cloned()
                .collect();
            if unknown.is_empty() {
                Ok(scrape.text)
            } else {
                Err((unknown, scrape.text))
            }
        }
    })
    .await;

    let output = prometheus::promtool(&["check", "metrics"], &dir, Some(text.as_bytes())).await;
    assert!(
        output.status.success() && printed(&output).trim().is_empty(),
        "promtool check metrics refused the scrape:\n{}\n--- the scrape:\n{text}",
        printed(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_sees_the_logged_in_device() {
    if prometheus::skip_without(true, "scrape the gateway with prometheus") {
        return;
    }
    let gateway = logged_in_gateway().await;
    let target = gateway
        .base
        .strip_prefix("http://")
        .expect("an http base")
        .to_string();
    let server =
        PrometheusServer::start(&[&target], &[prometheus::examples_dir().join("alerts.yml")]).await;

    let expr = "wagate_devices{state=\"logged_in\"}";
    server
        .within("a scrape showing the logged-in device", || async {
            let answer = server.query(expr).await;
            let result = &answer["data"]["result"];
            match result.as_array().map(Vec::as_slice) {
                Some([one]) if one["value"][1] == "1" => Ok(()),
                _ => Err(answer),
            }
        })
        .await;
    let up = server.query("up{job=\"wagate\"}").await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    // Prometheus asks for OpenMetrics, whose counters keep the `_total` the examples use.
    let succeeded = server.query("wagate_logins_succeeded_total").await;
    assert_eq!(
        succeeded["data"]["result"][0]["value"][1], "1",
        "{succeeded}"
    );

    // The example rules load and evaluate against the real metrics.
    let rules_file =
        std::fs::read_to_string(prometheus::examples_dir().join("alerts.yml")).expect("alerts.yml");
    let alert_count = rules_file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    server
        .within("every alert rule evaluated without error", || async {
            let answer = server.api("/api/v1/rules", &[]).await;
            let rules: Vec<Value> = answer["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let healthy = rules.len() == alert_count && rules.iter().all(|r| r["health"] == "ok");
            if healthy { Ok(()) } else { Err(answer) }
        })
        .await;
    let alerts = server.api("/api/v1/alerts", &[]).await;
    let firing: Vec<_> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "a healthy gateway fires no alert: {firing:?}"
    );

    // Every query of the dashboard is one Prometheus runs.
    for (panel, expr) in dashboard_queries() {
        let answer = server.query(&expr).await;
        assert_eq!(
            answer["status"], "success",
            "panel {panel:?}: {expr}\n{answer}"
        );
    }
    // The server stops before the gateway it scrapes.
    drop(server);
    drop(gateway);
}
