//! schemathesis against the real gateway: every operation of the committed spec is called with
//! generated requests (its examples, the coverage phase's boundary values and fuzzed ones), and
//! every answer must be one the spec declares, in its declared content type and schema, and no
//! 5xx. The pinned version is in `tests/schemathesis/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::process::Wagate;
use crate::support::receiver::Receiver;
use crate::support::{Api, pg, tools};

/// `python3 -m schemathesis.cli` with `args`, run in `dir`.
fn schemathesis(dir: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new("python3")
        .args(["-m", "schemathesis.cli"])
        .args(args)
        .current_dir(dir)
        // Plain output at a fixed width, to read in a test log.
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        .output()
}

/// The test cases schemathesis ran, from its summary: `Test cases:` then e.g.
/// `  1234 generated, 1200 passed, 34 failed`.
fn cases_generated(output: &str) -> Option<u64> {
    let mut lines = output.lines();
    lines.find(|line| line.trim() == "Test cases:")?;
    let (count, rest) = lines.next()?.trim().split_once(' ')?;
    rest.starts_with("generated")
        .then(|| count.parse().ok())
        .flatten()
}

/// What the test created through the API for the generated requests to find.
struct Seeded {
    /// An endpoint on the live receiver, with one delivered ping in its log.
    webhook: String,
    /// That ping's delivery.
    delivery: String,
    /// An endpoint only `DELETE /webhooks/{id}` gets, so the other operations keep theirs.
    webhook_to_delete: String,
    /// Where the receiver listens.
    receiver_url: String,
}

/// schemathesis's configuration: path parameters, the pairing phone and webhook URLs are drawn
/// half of the time from what was seeded, otherwise generated. Without it nearly every call on
/// a webhook or device would be a 404 or a rejected URL. The deletes get their own victims and
/// do not reuse ids seen in answers, so they cannot take the seeded data from the others.
fn config(seeded: &Seeded) -> String {
    let Seeded {
        webhook,
        delivery,
        webhook_to_delete,
        receiver_url,
    } = seeded;
    format!(
        r#"[dictionaries.device]
values = ["my-device-id"]
[dictionaries.device-to-delete]
values = ["device-to-delete"]
[dictionaries.webhook]
values = ["{webhook}"]
[dictionaries.webhook-to-delete]
values = ["{webhook_to_delete}"]
[dictionaries.delivery]
values = ["{delivery}"]
[dictionaries.phone]
values = ["628912344551"]
[dictionaries.receiver]
values = ["{receiver_url}"]

[parameters]
"path.device_id" = {{ dictionary = "device", probability = 0.5 }}
"path.id" = {{ dictionary = "webhook", probability = 0.5 }}
"path.delivery_id" = {{ dictionary = "delivery", probability = 0.5 }}
"query.phone" = {{ dictionary = "phone", probability = 0.5 }}
"body.url" = {{ dictionary = "receiver", probability = 0.5 }}

[[operations]]
include-name = "DELETE /devices/{{device_id}}"
parameters = {{ "path.device_id" = {{ dictionary = "device-to-delete", probability = 0.5 }} }}
phases.examples.extra-data-sources.responses = false
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false

[[operations]]
include-name = "DELETE /webhooks/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "webhook-to-delete", probability = 0.5 }} }}
phases.examples.extra-data-sources.responses = false
phases.coverage.extra-data-sources.responses = false
phases.fuzzing.extra-data-sources.responses = false

# An event stream stays open until the client closes it, so every call would run into the
# request timeout; `streams` tests its answers (the stream, 400, 401, 404) instead.
[[operations]]
include-name = "GET /devices/{{device_id}}/login/events"
enabled = false

# The tenant's stream, likewise.
[[operations]]
include-name = "GET /events"
enabled = false

# The link page's stream, likewise; `link_tokens` tests its answers.
[[operations]]
include-name = "GET /link/{{token}}/events"
enabled = false

[[operations]]
include-name = "POST /webhooks/{{id}}/deliveries/{{delivery_id}}/retry"
parameters = {{ "path.id" = {{ dictionary = "webhook", probability = 0.75 }}, "path.delivery_id" = {{ dictionary = "delivery", probability = 0.75 }} }}
"#
    )
}

/// Registers an endpoint for `logged_in` at `url`; returns its id.
async fn add_webhook(api: &Api, url: &str) -> String {
    let answer = api
        .post_json(
            "/webhooks",
            json!({ "url": url, "events": ["logged_in"], "description": "schemathesis" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["results"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_nonconformance() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let missing = match schemathesis(&dir, &["--version"]) {
        Err(_) => true,
        Ok(o) => !o.status.success(),
    };
    let hint: &[&str] = if missing {
        &["pip install -r tests/schemathesis/requirements.txt"]
    } else {
        &[]
    };
    if tools::skip_for(hint, "run schemathesis") {
        return;
    }

    let wagate = Wagate::start_with_env(
        &pg::fresh_database_url().await,
        &["--sandbox", "--sandbox-time-scale", "10"],
        &[("WAGATE_WEBHOOK_ALLOW_PRIVATE", "true")],
    );
    let api = Api::new(&wagate.base, "admin", "secret");

    // Data for the generated requests to find (see `config`).
    api.create_device("my-device-id").await;
    api.create_device("device-to-delete").await;
    let receiver = Receiver::start().await;
    let webhook = add_webhook(&api, &receiver.url).await;
    let webhook_to_delete = add_webhook(&api, &receiver.url).await;
    let ping = api.post(&format!("/webhooks/{webhook}/test")).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.body);
    let delivery = ping.body["results"]["delivery_id"]
        .as_str()
        .expect("delivery_id")
        .to_string();
    receiver.wait_for("ping", Duration::from_secs(10)).await;
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(
        &config_file,
        config(&Seeded {
            webhook,
            delivery,
            webhook_to_delete,
            receiver_url: receiver.url.clone(),
        }),
    )
    .expect("the config is written");

    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml");
    let base = wagate.base.clone();
    let started = Instant::now();
    // On a blocking thread: the receiver keeps answering on this runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        schemathesis(
            &dir,
            &[
                "--config-file",
                config_file.to_str().expect("a UTF-8 path"),
                "run",
                spec.to_str().expect("a UTF-8 path"),
                "--url",
                &base,
                "--auth",
                "admin:secret",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "50",
                "--seed",
                "20240601",
                // One at a time: reproducible from the seed, and no call races another on
                // the same device.
                "--workers",
                "1",
                "--continue-on-failure",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--no-color",
            ],
        )
    })
    .await
    .expect("schemathesis finishes")
    .expect("schemathesis runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("schemathesis ran {:.0?}:\n{printed}", started.elapsed());
    assert!(
        output.status.success(),
        "schemathesis found nonconformance (its output is above)"
    );
    assert!(
        cases_generated(&printed).is_some_and(|n| n > 0),
        "schemathesis ran no test cases (its output is above)"
    );
}
