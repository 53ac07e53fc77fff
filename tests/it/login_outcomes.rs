//! What a consumer sees for each way a real login can go besides the plain scan: a business
//! account, a registration WhatsApp rotates mid-series, a first app-state sync WhatsApp refuses,
//! a rate-limited registration, the client's expiration date and an outdated client.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use wagate_sandbox::AccountKind;

use wagate_core::domain::TenantId;

use crate::support::receiver::{Receiver, subscribed};
use crate::support::{Api, Gateway, Options, showing_qr};

const PHONE: &str = "628912344551";
const WAIT: Duration = Duration::from_secs(15);

/// The reasons of the `login_failed` events recorded for `d1` of `tenant`, oldest first.
async fn failure_reasons(gateway: &Gateway, tenant: TenantId) -> Vec<serde_json::Value> {
    gateway
        .recorded_events(tenant, "d1")
        .await
        .into_iter()
        .filter(|(t, _)| t == "login_failed")
        .map(|(_, data)| data["reason"].clone())
        .collect()
}

/// A tenant of `gateway` with device `d1` and a receiver of `events`.
async fn device_watched(gateway: &Gateway, events: &[&str]) -> (TenantId, Api, Receiver) {
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    let (receiver, _) = subscribed(&api, events).await;
    api.create_device("d1").await;
    (tenant, api, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_account_links_and_logged_in_names_the_business() {
    let gateway = Gateway::start().await;
    let (_, api, receiver) = device_watched(&gateway, &["logged_in"]).await;
    gateway
        .sandbox
        .set_account(PHONE, AccountKind::Business)
        .expect("a valid phone");

    let qr = showing_qr(&api, "d1").await;
    let linked = gateway
        .sandbox
        .scan_qr_as(PHONE, &qr)
        .await
        .expect("linked");
    let logged_in = receiver.wait_for("logged_in", WAIT).await.event();

    let business = linked.business_name.expect("the phone named its business");
    assert_eq!(logged_in["data"]["business_name"], business.as_str());
    assert_eq!(logged_in["data"]["jid"], linked.jid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_account_has_no_business_name() {
    let gateway = Gateway::start().await;
    let (_, api, receiver) = device_watched(&gateway, &["logged_in"]).await;

    gateway.scan_login(&api, "d1").await;
    let logged_in = receiver.wait_for("logged_in", WAIT).await.event();

    assert!(logged_in["data"]["business_name"].is_null(), "{logged_in}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_rotated_mid_series_shows_the_same_position_again_and_links() {
    let gateway = Gateway::start().await;
    let (tenant, api, receiver) = device_watched(&gateway, &["qr_refreshed", "logged_in"]).await;
    let first = showing_qr(&api, "d1").await;

    let reference = gateway
        .sandbox
        .refresh_registration(&first)
        .await
        .expect("the client showing it is connected");
    let received = receiver
        .wait_until(WAIT, |r| {
            r.iter()
                .filter(|x| x.event()["type"] == "qr_refreshed")
                .count()
                >= 2
        })
        .await;
    // The rotated code is the one on offer now, and it links.
    let second = showing_qr(&api, "d1").await;
    gateway
        .sandbox
        .scan_qr_as(PHONE, &second)
        .await
        .expect("the rotated code links");
    receiver.wait_for("logged_in", WAIT).await;

    let mut codes: Vec<_> = received
        .iter()
        .map(|r| r.event())
        .filter(|e| e["type"] == "qr_refreshed")
        .collect();
    codes.sort_by_key(|e| e["seq"].as_i64());
    let (before, after) = (&codes[0]["data"], &codes[1]["data"]);
    assert_eq!(before["index"], 0);
    assert_eq!(before["refreshed"], false);
    assert_eq!(after["index"], 0, "a refresh is not a new position");
    assert_eq!(after["refreshed"], true);
    assert_ne!(after["qr_code"], before["qr_code"], "a new secret");
    assert!(
        after["qr_code"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{reference},"))),
        "the same ref: {after}"
    );
    assert_eq!(after["qr_code"], second.as_str());
    let recorded = gateway.recorded_events(tenant, "d1").await;
    assert_eq!(
        recorded.iter().filter(|(t, _)| t == "qr_refreshed").count(),
        2,
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_app_state_sync_still_logs_in_and_is_reported() {
    let gateway = Gateway::start().await;
    let (tenant, api, receiver) =
        device_watched(&gateway, &["logged_in", "app_state_sync_failed"]).await;
    gateway
        .sandbox
        .refuse_next_app_state_sync(PHONE)
        .expect("a valid phone");

    let qr = showing_qr(&api, "d1").await;
    gateway
        .sandbox
        .scan_qr_as(PHONE, &qr)
        .await
        .expect("linked");
    let failed = receiver
        .wait_for("app_state_sync_failed", WAIT)
        .await
        .event();
    api.wait_logged_in("d1").await;

    assert_eq!(
        failed["data"],
        serde_json::json!({ "fatal": ["critical_block"], "retryable": [], "connected": true })
    );
    let types: Vec<String> = gateway
        .recorded_events(tenant, "d1")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| t == "logged_in" || t == "app_state_sync_failed")
        .collect();
    assert_eq!(types, ["logged_in", "app_state_sync_failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_registration_answers_429_with_retry_after_and_pauses_logins() {
    // At real time, so the pause outlasts the second call by far.
    let gateway = Gateway::start_with(Options::real_time()).await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    gateway.sandbox.set_rate_limited(true);

    let refused = api.get("/devices/d1/login").await;
    let connections = gateway.sandbox.connections_made();
    let again = api.get("/devices/d1/login").await;
    let by_code = api.post("/devices/d1/login/code?phone=628912344551").await;

    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.code(), "RATE_LIMITED");
    assert!(
        (1..=8).contains(&refused.retry_after()),
        "{}",
        refused.retry_after()
    );
    for answer in [&again, &by_code] {
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            answer.body
        );
        assert_eq!(answer.code(), "RATE_LIMITED");
    }
    assert_eq!(
        gateway.sandbox.connections_made(),
        connections,
        "no new attempt during the pause"
    );
    api.wait_state("d1", "disconnected").await;
    let failures = failure_reasons(&gateway, tenant).await;
    assert_eq!(failures, ["rate_limited"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_expiration_date_reaches_consumers() {
    let gateway = Gateway::start().await;
    let (_, api, receiver) = device_watched(&gateway, &["client_expiring"]).await;
    let (jid, _) = gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;
    let at: u64 = 1_900_000_000;

    gateway
        .sandbox
        .announce_client_expiration(&jid, at)
        .await
        .expect("the device is online");
    let expiring = receiver.wait_for("client_expiring", WAIT).await.event();

    let said: DateTime<Utc> = expiring["data"]["expires_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    assert_eq!(said.timestamp(), at as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_client_is_refused_at_once_not_timed_out() {
    let gateway = Gateway::start().await;
    let (tenant, api, _) = device_watched(&gateway, &["login_failed"]).await;
    gateway.sandbox.set_client_outdated(true);

    let refused = api.get("/devices/d1/login").await;

    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    assert_eq!(refused.code(), "WHATSAPP_REFUSED");
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("update wagate")),
        "{}",
        refused.body
    );
    api.wait_state("d1", "disconnected").await;
    let failures = failure_reasons(&gateway, tenant).await;
    assert_eq!(failures, ["client_outdated"], "and no timeout after it");
}
