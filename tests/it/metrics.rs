//! `GET /metrics`: what logins, webhook attempts, plugins and HTTP requests do to the counters,
//! as deltas between two scrapes of one gateway; labels that stay bounded and free of secrets;
//! and the metrics on their own address.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wagate_core::plugins::PluginSpec;

use crate::support::receiver::{Receiver, subscribe};
use crate::support::scrape::Scrape;
use crate::support::{Api, Gateway, Options, eventually, fetch, plugin_library};

/// Scrapes until `done` holds of the scrape (what a session counts lands just after the state
/// the API shows), and returns that scrape.
async fn scrape_once(gateway: &Gateway, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(what, || async {
        let scrape = gateway.scrape().await;
        if done(&scrape) {
            Ok(scrape)
        } else {
            Err(scrape.text)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_state_is_shown_even_when_no_device_is_in_it() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let scrape = gateway.scrape().await;

    for state in [
        "disconnected",
        "connecting",
        "connected",
        "passkey_required",
        "logged_in",
    ] {
        let expected = if state == "disconnected" { 1.0 } else { 0.0 };
        assert_eq!(
            scrape.find("wagate_devices", &[("state", state)]),
            Some(expected),
            "{state}"
        );
    }
    assert_eq!(
        scrape.find(
            "wagate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_login_is_counted_once_from_its_first_call_to_logged_in() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let before = gateway.scrape().await;

    // `scan_login` asks again and is answered with the pending code: it joins the login.
    let first = api.get("/devices/d1/login").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;
    let after = scrape_once(&gateway, "the login counted", |s| {
        s.metric("wagate_logins_succeeded_total", &[])
            > before.metric("wagate_logins_succeeded_total", &[])
    })
    .await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.metric(name, labels) - before.metric(name, labels)
    };
    let qr_events = gateway
        .recorded_events(tenant, "d1")
        .await
        .iter()
        .filter(|(kind, _)| kind == "qr_refreshed")
        .count();
    assert!(qr_events >= 1);
    assert_eq!(
        delta("wagate_logins_started_total", &[("method", "qr")]),
        1.0
    );
    assert_eq!(
        delta("wagate_logins_started_total", &[("method", "pair_code")]),
        0.0
    );
    assert_eq!(delta("wagate_qr_codes_issued_total", &[]), qr_events as f64);
    assert_eq!(delta("wagate_logins_succeeded_total", &[]), 1.0);
    assert_eq!(delta("wagate_login_duration_seconds_count", &[]), 1.0);
    assert_eq!(delta("wagate_login_first_qr_seconds_count", &[]), 1.0);
    assert!(delta("wagate_login_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        after.find("wagate_devices", &[("state", "logged_in")]),
        Some(1.0)
    );
    assert_eq!(after.metric("wagate_whatsapp_connections", &[]), 1.0);
    assert_eq!(
        after.all("wagate_logins_failed_total").len(),
        0,
        "no login failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_login_is_counted_once_however_often_the_code_is_asked_for() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let before = gateway.scrape().await;

    let path = "/devices/d1/login/code?phone=628912344551";
    let login = api.post(path).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let again = api.post(path).await;
    let code = login.body["results"]["pair_code"].as_str().expect("a code");
    assert_eq!(again.body["results"]["pair_code"], code);
    gateway
        .sandbox
        .enter_pair_code("628912344551", code)
        .await
        .expect("the phone links the device");
    api.wait_logged_in("d1").await;
    let after = scrape_once(&gateway, "the login counted", |s| {
        s.metric("wagate_logins_succeeded_total", &[]) >= 1.0
    })
    .await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.metric(name, labels) - before.metric(name, labels)
    };
    assert_eq!(
        delta("wagate_logins_started_total", &[("method", "pair_code")]),
        1.0
    );
    assert_eq!(
        delta("wagate_logins_started_total", &[("method", "qr")]),
        0.0
    );
    assert_eq!(delta("wagate_pair_codes_issued_total", &[]), 1.0);
    assert_eq!(delta("wagate_logins_succeeded_total", &[]), 1.0);
    assert_eq!(delta("wagate_login_duration_seconds_count", &[]), 1.0);
    assert_eq!(
        delta("wagate_login_first_qr_seconds_count", &[]),
        0.0,
        "a QR code the client showed meanwhile is no QR login's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_webhook_attempts_are_counted_and_their_delivery_shows_as_pending() {
    // Two quick retries, then the next one an hour away: the delivery stays pending.
    let gateway = Gateway::start_with(Options {
        webhook_retry_schedule: "100ms,100ms,1h",
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_next(&[500, 500, 500]);
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;
    let before = gateway.scrape().await;

    let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    receiver.wait_count(3, Duration::from_secs(10)).await;
    let attempts = receiver.count() as f64;
    let failed = |s: &Scrape| s.metric("wagate_webhook_deliveries_total", &[("outcome", "failed")]);
    let after = scrape_once(&gateway, "the failed attempts counted", |s| {
        failed(s) - failed(&before) >= attempts
    })
    .await;

    assert_eq!(failed(&after) - failed(&before), attempts);
    for outcome in ["delivered", "dead", "expired"] {
        assert_eq!(
            after.metric("wagate_webhook_deliveries_total", &[("outcome", outcome)]),
            0.0,
            "{outcome}"
        );
    }
    let timed = |s: &Scrape| s.metric("wagate_webhook_attempt_duration_seconds_count", &[]);
    assert_eq!(timed(&after) - timed(&before), attempts);
    let at_endpoint = [("endpoint_id", endpoint.as_str())];
    assert_eq!(
        after.find("wagate_webhook_pending", &at_endpoint),
        Some(1.0)
    );
    let age = after
        .find("wagate_webhook_oldest_pending_age_seconds", &at_endpoint)
        .expect("the oldest pending delivery's age");
    assert!(age > 0.0, "{age}");
    assert_eq!(after.metric("wagate_webhook_in_flight", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_queue_is_full_shows_the_events_it_dropped() {
    // Room for one event, and the plugin takes none until this file exists: it is stuck.
    let release = std::env::temp_dir().join(format!("wagate-metrics-{}", uuid::Uuid::new_v4()));
    let gateway = Gateway::start_with(Options {
        plugins: vec![PluginSpec {
            path: plugin_library("wagate-test-plugin").await,
            config: json!({ "hold_until": release }),
            queue: 1,
        }],
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    for device in ["d1", "d2"] {
        api.create_device(device).await;
        let login = api.get(&format!("/devices/{device}/login")).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    }

    // QR codes keep coming: the scrape is compared with the host's counters read on either
    // side of it, once they did not move meanwhile.
    let (dropped, scrape) = eventually("drops counted and still for a moment", || async {
        let seen = plugin_dropped(&api).await;
        let scrape = gateway.scrape().await;
        let then = plugin_dropped(&api).await;
        if seen > 0 && seen == then {
            Ok((seen, scrape))
        } else {
            Err((seen, then))
        }
    })
    .await;
    std::fs::write(&release, "").unwrap();

    let labels = |outcome| [("plugin", "test-plugin"), ("outcome", outcome)];
    assert_eq!(
        scrape.find("wagate_plugin_events_total", &labels("dropped")),
        Some(dropped as f64)
    );
    assert_eq!(
        scrape.find("wagate_plugin_events_total", &labels("delivered")),
        Some(0.0)
    );
    let _ = std::fs::remove_file(&release);
}

/// The test plugin's `dropped`, as `GET /plugins` shows it.
async fn plugin_dropped(api: &Api) -> u64 {
    let answer = api.get("/plugins").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["results"][0]["dropped"]
        .as_u64()
        .expect("dropped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_counted_under_their_route_template_with_their_status() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("device-7f3a").await;
    let before = gateway.scrape().await;

    assert_eq!(api.get("/devices/device-7f3a").await.status, StatusCode::OK);
    assert_eq!(api.get("/devices/device-7f3a").await.status, StatusCode::OK);
    assert_eq!(
        api.get("/devices/no-such-device").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/no/such/path/device-7f3a").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gateway.anonymous().get("/devices").await.status,
        StatusCode::UNAUTHORIZED
    );
    let after = gateway.scrape().await;

    let delta = |labels: &[(&str, &str)]| {
        after.metric("wagate_http_requests_total", labels)
            - before.metric("wagate_http_requests_total", labels)
    };
    let device = |status| {
        [
            ("route", "/devices/{device_id}"),
            ("method", "GET"),
            ("status", status),
        ]
    };
    assert_eq!(delta(&device("200")), 2.0);
    assert_eq!(delta(&device("404")), 1.0);
    assert_eq!(
        delta(&[("route", "other"), ("method", "GET"), ("status", "404")]),
        1.0
    );
    assert_eq!(
        delta(&[("route", "/devices"), ("method", "GET"), ("status", "401")]),
        1.0
    );
    let timed = [("route", "/devices/{device_id}"), ("method", "GET")];
    let count = |s: &Scrape| s.metric("wagate_http_request_duration_seconds_count", &timed);
    assert_eq!(count(&after) - count(&before), 3.0);
    for sample in after.all("wagate_http_requests_total") {
        let route = &sample.labels.iter().find(|(k, _)| k == "route").unwrap().1;
        assert!(!route.contains("device-7f3a"), "{route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_of_a_scrape_carries_a_secret_or_a_concrete_id() {
    let gateway = Gateway::start().await;
    let (tenant, credential) = gateway.store.create_tenant("acme").await.expect("a tenant");
    let api = Api::new(&gateway.base, &credential.username, &credential.secret);
    api.create_device("device-5c1e").await;
    let receiver = Receiver::start().await;
    let (_, webhook_secret) = subscribe(&api, &receiver.url, &["logged_in"], None).await;
    let link = api.post("/devices/device-5c1e/link").await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);
    let link_url = link.body["results"]["link_url"].as_str().expect("link_url");
    let token = link_url.rsplit('/').next().expect("a token").to_string();
    assert_eq!(fetch(link_url).await.0, StatusCode::OK);
    let login = api.get("/devices/device-5c1e/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    // A wrong password is a label's worth of nothing too.
    let wrong = api.with_auth(&credential.username, "not-the-secret");
    assert_eq!(wrong.get("/devices").await.status, StatusCode::UNAUTHORIZED);

    let scrape = gateway.scrape().await;

    let tenant_id = tenant.id.0.to_string();
    let forbidden = [
        credential.secret.as_str(),
        "not-the-secret",
        webhook_secret.as_str(),
        token.as_str(),
        tenant_id.as_str(),
    ];
    assert!(!scrape.series.is_empty());
    for sample in &scrape.series {
        for (label, value) in &sample.labels {
            for secret in forbidden {
                assert!(
                    !value.contains(secret),
                    "{}{{{label}={value:?}}} carries {secret:?}",
                    sample.name
                );
            }
            if label == "route" {
                assert!(!value.contains("device-5c1e"), "{value}");
            }
        }
    }
    assert!(
        scrape
            .find(
                "wagate_http_requests_total",
                &[
                    ("route", "/link/{token}"),
                    ("method", "GET"),
                    ("status", "200")
                ]
            )
            .is_some(),
        "the link page counted under its template"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_a_label_only_with_the_per_tenant_opt_in() {
    let gateway = Gateway::start_with(Options {
        metrics_per_tenant: true,
        ..Options::default()
    })
    .await;
    let (acme, api) = gateway.tenant_with_id("acme").await;
    let (other, other_api) = gateway.tenant_with_id("other").await;
    api.create_device("d1").await;
    api.create_device("d2").await;
    other_api.create_device("d1").await;

    let scrape = gateway.scrape().await;

    let acme = acme.0.to_string();
    let other = other.0.to_string();
    let of = |tenant: &str, state| {
        scrape.find(
            "wagate_tenant_devices",
            &[("tenant_id", tenant), ("state", state)],
        )
    };
    assert_eq!(of(&acme, "disconnected"), Some(2.0));
    assert_eq!(of(&acme, "logged_in"), Some(0.0));
    assert_eq!(of(&other, "disconnected"), Some(1.0));
    assert_eq!(
        scrape.find("wagate_devices", &[("state", "disconnected")]),
        Some(3.0),
        "the totals are the tenants' sums"
    );

    let without = Gateway::start().await;
    let api = without.tenant("acme").await;
    api.create_device("d1").await;
    let scrape = without.scrape().await;
    assert!(scrape.all("wagate_tenant_devices").is_empty());
    assert!(
        scrape
            .series
            .iter()
            .all(|s| s.labels.iter().all(|(k, _)| k != "tenant_id")),
        "no tenant label without the opt-in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_the_metrics_there_and_not_on_the_api_port() {
    let gateway = Gateway::start_with(Options {
        metrics_listen: Some("127.0.0.1:0".parse().expect("an address")),
        ..Options::default()
    })
    .await;

    let url = gateway.metrics_url();
    assert!(!url.starts_with(&gateway.base), "{url}");
    let scrape = gateway.scrape().await;
    assert!(
        scrape
            .find(
                "wagate_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            )
            .is_some()
    );
    let (status, _) = fetch(&format!("{}/metrics", gateway.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the API's port");
    let elsewhere = url.replace("/metrics", "/devices");
    assert_eq!(
        fetch(&elsewhere).await.0,
        StatusCode::NOT_FOUND,
        "nothing else there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_for_a_scraper_that_asks_for_it() {
    let gateway = Gateway::start().await;

    let response = reqwest::Client::new()
        .get(gateway.metrics_url())
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("the metrics are served");

    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.expect("a body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE wagate_logins_started counter"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shows_its_restore_and_counts_the_linked_device_as_reconnected() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;

    let gateway = gateway.restart().await;
    // A scrape reads the database before the engine's counters, so the device's state may
    // trail the restore's end by one scrape.
    let scrape = scrape_once(&gateway, "the restore finished", |s| {
        s.metric("wagate_restore_finished", &[]) == 1.0
            && s.metric("wagate_whatsapp_connections", &[]) == 1.0
            && s.find("wagate_devices", &[("state", "logged_in")]) == Some(1.0)
    })
    .await;

    assert_eq!(
        scrape.find("wagate_restore_devices", &[("stage", "total")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.find("wagate_restore_devices", &[("stage", "done")]),
        Some(1.0)
    );
    assert_eq!(scrape.metric("wagate_whatsapp_reconnects_total", &[]), 1.0);
    assert_eq!(
        scrape.metric("wagate_logins_succeeded_total", &[]),
        0.0,
        "a reconnect is no new login"
    );
}
