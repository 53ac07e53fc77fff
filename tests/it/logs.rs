//! The real binary's logs: `--log-format json` writes one JSON object a line, with the current
//! span's fields and the span list, so a login's lines name its tenant and device; `RUST_LOG`
//! chooses what is logged; probes (`/health`, `/ready`) are logged at DEBUG only.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::process::Wagate;
use crate::support::{Api, pg};

/// `wagate serve --sandbox --log-format json` with `RUST_LOG=rust_log`, recording its output.
async fn json_logging(rust_log: &str) -> (Wagate, Api) {
    let database_url = pg::fresh_database_url().await;
    let wagate = Wagate::start_recording(
        &database_url,
        &[
            "--sandbox",
            "--sandbox-time-scale",
            "10",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", rust_log)],
    );
    let api = Api::new(&wagate.base, "admin", "secret");
    (wagate, api)
}

/// Every line `wagate` printed but the one saying where it listens, each parsed as JSON: a
/// line that is not JSON fails the test.
fn parsed(wagate: &Wagate) -> Vec<Value> {
    wagate
        .lines()
        .iter()
        .filter(|line| !line.starts_with("listening on "))
        .map(|line| {
            let log: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            for field in ["timestamp", "level", "target"] {
                assert!(log[field].is_string(), "no {field}: {line}");
            }
            assert!(log["fields"].is_object(), "no fields: {line}");
            log
        })
        .collect()
}

/// The `answered` lines of requests to `path`.
fn answers_to<'a>(logs: &'a [Value], path: &str) -> Vec<&'a Value> {
    logs.iter()
        .filter(|l| l["fields"]["message"] == "answered" && l["span"]["path"] == path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_a_logins_lines_name_its_device() {
    let (wagate, api) = json_logging("info").await;
    for probe in ["/health", "/ready", "/health"] {
        api.get(probe).await;
    }
    api.create_device("logs-d1").await;
    let login = api.get("/devices/logs-d1/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let scanned = api
        .post("/sandbox/devices/logs-d1/scan?phone=628912344551")
        .await;
    assert_eq!(scanned.status, StatusCode::OK, "{}", scanned.body);
    api.wait_logged_in("logs-d1").await;
    wagate.wait_for_line("\"logged_in\"").await;

    let logs = parsed(&wagate);
    assert!(
        logs.iter()
            .all(|l| l["level"] != "DEBUG" && l["level"] != "TRACE"),
        "RUST_LOG=info logs nothing below INFO"
    );

    // The request that started the login: its span names the tenant and the device.
    let login_lines = answers_to(&logs, "/devices/logs-d1/login");
    assert_eq!(login_lines.len(), 1, "{login_lines:?}");
    let line = login_lines[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
    assert_eq!(line["span"]["device"], "logs-d1", "{line}");
    let tenant = line["span"]["tenant"]
        .as_str()
        .expect("the tenant")
        .to_string();
    assert_eq!(line["spans"][0]["name"], "request", "{line}");

    // The session's lines, on its own tasks, name the device and tenant in their span too.
    let events: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "device event" && l["fields"]["device"] == "logs-d1")
        .collect();
    let kinds: Vec<&Value> = events.iter().map(|l| &l["fields"]["event"]).collect();
    assert!(kinds.iter().any(|k| *k == "qr_refreshed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| *k == "logged_in"), "{kinds:?}");
    for line in &events {
        assert_eq!(line["span"]["name"], "session", "{line}");
        assert_eq!(line["span"]["device"], "logs-d1", "{line}");
        assert_eq!(line["span"]["tenant"], tenant.as_str(), "{line}");
        let spans = line["spans"].as_array().expect("the span list");
        assert!(
            spans.iter().all(|s| s["name"] != "request"),
            "a session is no child of the request that started it: {line}"
        );
    }

    // Every line about the device, from wagate's own code, says so in its span.
    for line in logs.iter().filter(|l| {
        l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("wagate"))
            && (l["fields"]["device"] == "logs-d1"
                || l["span"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/devices/logs-d1")))
    }) {
        assert_eq!(line["span"]["device"], "logs-d1", "{line}");
    }

    // Probes are not logged at INFO.
    for probe in ["/health", "/ready"] {
        assert_eq!(answers_to(&logs, probe), Vec::<&Value>::new(), "{probe}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_logged_at_debug() {
    let (wagate, api) = json_logging("warn,wagate_openapi::request_span=debug").await;
    for probe in ["/health", "/ready"] {
        api.get(probe).await;
    }
    api.get("/devices").await;
    let logged = || async {
        let logs = parsed(&wagate);
        let seen = |path| answers_to(&logs, path).len();
        if seen("/health") > 0 && seen("/ready") > 0 && seen("/devices") > 0 {
            Ok(logs)
        } else {
            Err(logs.len())
        }
    };
    let logs = crate::support::eventually("the requests logged", logged).await;
    for probe in ["/health", "/ready"] {
        for line in answers_to(&logs, probe) {
            assert_eq!(line["level"], "DEBUG", "{line}");
        }
    }
    for line in answers_to(&logs, "/devices") {
        assert_eq!(line["level"], "INFO", "{line}");
    }
}
