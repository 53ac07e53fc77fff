//! Webhooks: signed deliveries from the durable outbox to a real HTTP receiver, retries, the
//! delivery log, tenant isolation, filters, address checks and HTTPS receivers.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::{Received, Receiver, subscribe};
use crate::support::tls::TEST_CA_PEM;
use crate::support::{Api, Gateway, Options, eventually, fetch};

/// The endpoint's delivery log, newest first.
async fn deliveries(api: &Api, endpoint: &str) -> Vec<Value> {
    let answer = api.get(&format!("/webhooks/{endpoint}/deliveries")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["results"]["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// The endpoint's newest delivery once its first attempt is logged.
async fn first_attempt_logged(api: &Api, endpoint: &str) -> Value {
    eventually("a first attempt being logged", || async {
        let log = deliveries(api, endpoint).await[0].clone();
        if log["attempts"].as_i64() >= Some(1) {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await
}

/// Verifies `X-Hub-Signature-256` with an HMAC computed here, not by wagate's code.
fn hub_signature_holds(received: &Received, secret: &str) -> bool {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&received.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    received
        .headers
        .get_all("x-hub-signature-256")
        .iter()
        .any(|v| v.to_str().ok() == Some(&format!("sha256={expected}")))
}

/// Verifies the Standard Webhooks headers with the reference implementation.
fn standard_signature_holds(received: &Received, secret: &str) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .verify(&received.body, &received.headers)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_reaches_the_receiver_within_a_second_of_the_scan_signed_both_ways() {
    // Real time: the sandbox phone shares its app-state keys at once, as a phone does, so the
    // second is wagate's and the protocol's, not a wait for a share. This is also the QR
    // login's real-time bound (the pairing code's is in login_code).
    let gateway = Gateway::start_with(Options::real_time()).await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(&api, &receiver.url, &["logged_in"], None).await;
    api.create_device("d1").await;

    let (jid, scanned_at) = gateway.scan_login(&api, "d1").await;
    let logged_in = receiver
        .wait_for("logged_in", Duration::from_secs(10))
        .await;

    // How much sooner is a benchmark's question (examples/webhook_bench.rs).
    let took = logged_in.arrived_after(scanned_at);
    assert!(
        took < Duration::from_secs(1),
        "logged_in arrived {took:?} after the scan"
    );
    assert!(standard_signature_holds(&logged_in, &secret));
    assert!(hub_signature_holds(&logged_in, &secret));
    let event = logged_in.event();
    assert_eq!(logged_in.header("webhook-id"), event["id"]);
    assert_eq!(logged_in.header("content-type"), "application/json");
    assert_eq!(event["tenant"], tenant.0.to_string());
    assert_eq!(event["device_id"], "d1");
    assert_eq!(event["data"]["jid"], jid);
    assert!(event["seq"].as_i64().unwrap() > 0);
    assert!(event["data"].get("push_name").is_some() && event["data"].get("platform").is_some());
    assert_eq!(
        receiver.received().len(),
        1,
        "only the subscribed event type"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_next(&[500, 500]);
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    let received = receiver
        .wait_until(Duration::from_secs(10), |r| r.len() >= 3)
        .await;

    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id on every attempt: {ids:?}"
    );
    assert_eq!(received[0].event()["type"], "ping");
    assert!(
        received[1].at - received[0].at >= Duration::from_millis(80),
        "a back-off"
    );
    let delivery_id = test.body["results"]["delivery_id"].as_str().unwrap();
    let log = eventually("the delivery being logged as delivered", || async {
        let log = deliveries(&api, &endpoint).await[0].clone();
        if log["status"] == "delivered" {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!(log["id"], delivery_id);
    assert_eq!(log["status"], "delivered", "{log}");
    assert_eq!(log["attempts"], 3);
    assert_eq!(log["last_status_code"], 200);
    assert_eq!(log["event"]["type"], "ping");
    assert_eq!(log["event_id"], ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_receiver_that_is_down_arrives_once_it_is_up() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let (url, addr) = Receiver::vacant();
    let (endpoint, _) = subscribe(&api, &url, &["logged_in"], None).await;
    let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);

    let failed = first_attempt_logged(&api, &endpoint).await;
    assert_eq!(failed["status"], "pending", "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "{failed}"
    );
    assert!(failed["next_attempt_at"].is_string(), "{failed}");

    let receiver = Receiver::start_on(addr).await;
    let ping = receiver.wait_for("ping", Duration::from_secs(10)).await;
    assert_eq!(ping.header("webhook-id"), test.body["results"]["event_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_only_their_tenants_events_that_pass_their_filters() {
    let gateway = Gateway::start().await;
    let (tenant_a, a) = gateway.tenant_with_id("tenant-a").await;
    let b = gateway.tenant("tenant-b").await;
    let receiver_a = Receiver::start().await;
    let receiver_b = Receiver::start().await;
    let (endpoint_a, _) = subscribe(&a, &receiver_a.url, &["state_changed"], Some(&["a1"])).await;
    let (endpoint_b, _) = subscribe(
        &b,
        &receiver_b.url,
        &["qr_refreshed", "state_changed"],
        None,
    )
    .await;
    for (api, device) in [(&a, "a1"), (&a, "a2"), (&b, "b1")] {
        api.create_device(device).await;
        let login = api.get(&format!("/devices/{device}/login")).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    }

    // Each login's events were recorded, with their deliveries, before it answered.
    let log_a = deliveries(&a, &endpoint_a).await;
    assert!(!log_a.is_empty());
    for d in &log_a {
        assert_eq!(d["event"]["type"], "state_changed", "{d}");
        assert_eq!(d["event"]["device_id"], "a1", "{d}");
        assert_eq!(d["event"]["tenant"], tenant_a.0.to_string(), "{d}");
    }
    let log_b = deliveries(&b, &endpoint_b).await;
    assert!(log_b.iter().any(|d| d["event"]["type"] == "qr_refreshed"));
    assert!(
        log_b.iter().all(|d| d["event"]["device_id"] == "b1"),
        "{log_b:?}"
    );

    let got_a = receiver_a
        .wait_until(Duration::from_secs(10), |r| r.len() >= log_a.len())
        .await;
    assert!(got_a.iter().all(|r| r.event()["device_id"] == "a1"));
    receiver_b
        .wait_until(Duration::from_secs(10), |r| r.len() >= log_b.len())
        .await;
    assert!(
        receiver_b
            .received()
            .iter()
            .all(|r| r.event()["device_id"] == "b1")
    );
    let qr = receiver_b
        .wait_for("qr_refreshed", Duration::from_secs(10))
        .await
        .event();
    let (status, _) = fetch(qr["data"]["qr_link"].as_str().unwrap()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the event's qr_link serves the image"
    );

    let foreign = b.get(&format!("/webhooks/{endpoint_a}")).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(foreign.code(), "WEBHOOK_NOT_FOUND");
    let foreign_log = b.get(&format!("/webhooks/{endpoint_a}/deliveries")).await;
    assert_eq!(foreign_log.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_urls_are_refused_unless_the_operator_allows_them() {
    let gateway = Gateway::start_with(Options {
        webhook_allow_private: false,
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
    ] {
        let answer = api
            .post_json("/webhooks", json!({ "url": url, "events": ["logged_in"] }))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{url}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.contains("WAGATE_WEBHOOK_ALLOW_PRIVATE"),
            "{message}"
        );
    }
    let listed = api.get("/webhooks").await;
    assert_eq!(listed.body["results"], json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_input_is_refused_with_a_clear_error() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    for (body, needle) in [
        (
            json!({ "url": "http://127.0.0.1/x", "events": [] }),
            "at least 1 item",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "events": ["logged_on"] }),
            "logged_on",
        ),
        (
            json!({ "url": "ftp://127.0.0.1/x", "events": ["logged_in"] }),
            "http or https",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "events": ["logged_in"], "device_ids": ["a b"] }),
            "device_id",
        ),
        (
            json!({ "url": "http://127.0.0.1/x", "events": ["logged_in"], "device_ids": [] }),
            "device_ids",
        ),
        (json!({ "events": ["logged_in"] }), "CreateWebhookRequest"),
    ] {
        let answer = api.post_json("/webhooks", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(api.get("/webhooks").await.body["results"], json!([]));
    let missing = api
        .get("/webhooks/5b1c1f8e-8d0f-4c43-9d1a-0d5c1e2f3a4b")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let malformed = api.get("/webhooks/not-a-uuid").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.code(), "VALIDATION_ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_both_secrets_sign_and_the_old_one_is_never_shown_again() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, old) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    let rotated = api
        .post(&format!("/webhooks/{endpoint}/rotate-secret"))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["results"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    let shown = api.get(&format!("/webhooks/{endpoint}")).await;
    assert!(
        shown.body["results"].get("secret").is_none(),
        "{}",
        shown.body
    );

    api.post(&format!("/webhooks/{endpoint}/test")).await;
    let ping = receiver.wait_for("ping", Duration::from_secs(10)).await;
    assert!(standard_signature_holds(&ping, &new));
    assert!(standard_signature_holds(&ping, &old));
    assert!(hub_signature_holds(&ping, &new));
    assert!(hub_signature_holds(&ping, &old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answers_gone_is_disabled_until_re_enabled() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_next(&[410]);
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    api.post(&format!("/webhooks/{endpoint}/test")).await;
    receiver
        .wait_until(Duration::from_secs(10), |r| !r.is_empty())
        .await;
    let shown = eventually("the endpoint being disabled", || async {
        let shown = api.get(&format!("/webhooks/{endpoint}")).await.body["results"].clone();
        if shown["enabled"] == false {
            Ok(shown)
        } else {
            Err(shown)
        }
    })
    .await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"));
    assert_eq!(deliveries(&api, &endpoint).await[0]["status"], "dead");

    let enabled = api
        .patch_json(&format!("/webhooks/{endpoint}"), json!({ "enabled": true }))
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    assert_eq!(enabled.body["results"]["enabled"], true);
    assert!(enabled.body["results"]["disabled_reason"].is_null());
    let delivery = deliveries(&api, &endpoint).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let retried = api
        .post(&format!("/webhooks/{endpoint}/deliveries/{delivery}/retry"))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    receiver
        .wait_until(Duration::from_secs(10), |r| r.len() >= 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_pages_newest_first() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;
    let mut events = Vec::new();
    for _ in 0..5 {
        let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
        events.push(
            test.body["results"]["event_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    let mut seen = Vec::new();
    let mut path = format!("/webhooks/{endpoint}/deliveries?limit=2");
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let results = &page.body["results"];
        for d in results["deliveries"].as_array().unwrap() {
            seen.push(d["event_id"].as_str().unwrap().to_string());
        }
        match results["next_before"].as_str() {
            Some(before) => {
                path = format!("/webhooks/{endpoint}/deliveries?limit=2&before={before}")
            }
            None => break,
        }
    }
    events.reverse();
    assert_eq!(seen, events);
    let bad = api
        .get(&format!("/webhooks/{endpoint}/deliveries?limit=0"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = api
        .get(&format!("/webhooks/{endpoint}/deliveries?status=lost"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_prints_who_logged_in() {
    let gateway = Gateway::start_with(Options {
        time_scale: 20,
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    let (_, addr) = Receiver::vacant();
    let url = format!("http://{addr}/webhook");
    let (_, secret) = subscribe(&api, &url, &["logged_in", "state_changed"], None).await;
    let example = std::sync::Arc::new(
        wagate_webhook_receiver::Receiver::new(&secret).expect("the secret is accepted"),
    );
    let mut handled = example.subscribe();
    let app = wagate_webhook_receiver::app(std::sync::Arc::clone(&example));
    let server = tokio::spawn(poem::Server::new(poem::listener::TcpListener::bind(addr)).run(app));
    api.create_device("d1").await;

    let (jid, _) = gateway.scan_login(&api, "d1").await;
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = handled.recv().await.expect("the receiver runs");
            if event.event_type == "logged_in" {
                return event.line;
            }
        }
    })
    .await
    .expect("the login was reported");
    server.abort();
    assert_eq!(line, format!("device d1 logged in as {jid}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_not_followed() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    receiver.redirect_to(&elsewhere.url);
    receiver.answer_next(&[307]);
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    api.post(&format!("/webhooks/{endpoint}/test")).await;
    let received = receiver
        .wait_until(Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );

    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    let log = eventually("the delivery being logged as delivered", || async {
        let log = deliveries(&api, &endpoint).await[0].clone();
        if log["status"] == "delivered" {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!(log["status"], "delivered", "{log}");
    assert_eq!(log["attempts"], 2, "the 307 counted as a failed attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_shows_each_event_byte_for_byte_as_the_endpoint_received_it() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = subscribe(&api, &receiver.url, &["state_changed"], None).await;

    let queued = api.post(&format!("/webhooks/{endpoint}/test")).await;
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.body);
    let received = receiver.wait_for("ping", Duration::from_secs(10)).await;

    let log = deliveries(&api, &endpoint).await;
    assert_eq!(log[0]["event_type"], "ping");
    let shown = serde_json::to_string(&log[0]["event"]).expect("JSON");
    assert_eq!(shown, String::from_utf8_lossy(&received.body));
    let occurred_at = log[0]["event"]["occurred_at"].as_str().expect("a time");
    assert!(occurred_at.ends_with('Z'), "{occurred_at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_that_offers_http2_gets_signed_deliveries_over_it() {
    let gateway = Gateway::start_with(Options {
        webhook_ca_pem: Some(TEST_CA_PEM),
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start_https().await;
    let (endpoint, secret) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    for _ in 0..2 {
        let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
        assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    }
    let received = receiver
        .wait_until(Duration::from_secs(10), |r| r.len() >= 2)
        .await;

    for ping in &received {
        assert_eq!(ping.version, reqwest::Version::HTTP_2, "negotiated by ALPN");
        assert_eq!(ping.event()["type"], "ping");
        assert!(standard_signature_holds(ping, &secret));
        assert!(hub_signature_holds(ping, &secret));
    }
    assert_eq!(receiver.handshakes_failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_whose_certificate_is_not_trusted_gets_nothing_and_the_log_says_why() {
    // The receiver's authority is not the gateway's to trust: nothing is configured.
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = Receiver::start_https().await;
    let (endpoint, _) = subscribe(&api, &receiver.url, &["logged_in"], None).await;

    let test = api.post(&format!("/webhooks/{endpoint}/test")).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    let log = first_attempt_logged(&api, &endpoint).await;

    assert_ne!(log["status"], "delivered", "{log}");
    assert!(log["last_status_code"].is_null(), "no answer: {log}");
    let error = log["last_error"].as_str().expect("an error");
    assert!(error.contains("certificate"), "{error}");
    assert!(receiver.handshakes_failed() >= 1);
    assert!(receiver.received().is_empty());
}
