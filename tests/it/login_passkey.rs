//! Linking an account that confirms links with a passkey: `passkey_required`, the assertion
//! posted to `POST /devices/{device_id}/login/passkey`, and what a consumer sees either way.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wagate_sandbox::AccountKind;

use crate::support::receiver::{Receiver, subscribed};
use crate::support::{Api, Gateway, showing_qr};

const PHONE: &str = "628912344551";
const WAIT: Duration = Duration::from_secs(15);

/// A gateway whose sandbox phone `PHONE` holds a passkey account, a tenant with device `d1`,
/// and a receiver of every event.
async fn passkey_account() -> (Gateway, Api, Receiver) {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let (receiver, _) = subscribed(
        &api,
        &[
            "state_changed",
            "qr_refreshed",
            "passkey_requested",
            "passkey_confirmation",
            "logged_in",
            "login_failed",
        ],
    )
    .await;
    api.create_device("d1").await;
    gateway
        .sandbox
        .set_account(PHONE, AccountKind::Passkey)
        .expect("a valid phone");
    (gateway, api, receiver)
}

/// Waits for WhatsApp's passkey request and returns its options, as the event carries them.
async fn requested_options(receiver: &Receiver) -> Value {
    let requested = receiver.wait_for("passkey_requested", WAIT).await.event();
    requested["data"]["request_options"].clone()
}

/// The assertion the user's authenticator (the sandbox phone's passkey) makes for `options`.
fn assertion_for(gateway: &Gateway, options: &Value) -> Value {
    let assertion = gateway
        .sandbox
        .passkey_assertion(PHONE, &options.to_string())
        .expect("the phone holds the passkey");
    serde_json::from_str(&assertion).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_account_links_once_its_assertion_is_posted() {
    let (gateway, api, receiver) = passkey_account().await;
    let qr = showing_qr(&api, "d1").await;

    let (linked, confirmed) = tokio::join!(gateway.sandbox.scan_qr_as(PHONE, &qr), async {
        let options = requested_options(&receiver).await;
        api.wait_state("d1", "passkey_required").await;
        // A caller asking for a code meanwhile is told what the login waits for.
        let waiting = api.get("/devices/d1/login").await;
        assert_eq!(waiting.status, StatusCode::CONFLICT, "{}", waiting.body);
        assert_eq!(waiting.code(), "PASSKEY_REQUIRED");
        assert_eq!(waiting.body["passkey_request_options"], options);
        let assertion = assertion_for(&gateway, &options);
        api.post_json("/devices/d1/login/passkey", assertion).await
    });

    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(confirmed.body["message"], "Passkey accepted");
    assert_eq!(confirmed.body["results"]["state"], "passkey_required");
    let linked = linked.expect("linked after the passkey");
    receiver.wait_for("logged_in", WAIT).await;
    api.wait_logged_in("d1").await;
    let mut events: Vec<Value> = receiver.received().iter().map(|r| r.event()).collect();
    events.sort_by_key(|e| e["seq"].as_i64());
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e["type"].as_str()? {
            "state_changed" => Some(format!("→{}", e["data"]["to"].as_str()?)),
            "qr_refreshed" => None,
            other => Some(other.to_string()),
        })
        .collect();
    // From the request on; the reconnect WhatsApp asks for after linking passes through
    // `connecting`, as every login does.
    let passkey_part: Vec<&str> = steps
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != "→passkey_required")
        .filter(|s| *s != "→connecting")
        .collect();
    assert_eq!(
        passkey_part,
        [
            "→passkey_required",
            "passkey_requested",
            "passkey_confirmation",
            "→logged_in",
            "logged_in",
        ],
        "all steps: {steps:?}"
    );
    let confirmation = events
        .iter()
        .find(|e| e["type"] == "passkey_confirmation")
        .expect("a confirmation");
    assert_eq!(
        confirmation["data"]["code"],
        linked.passkey_code.as_deref().expect("the phone's code"),
        "the code the user compares with the phone's"
    );
    assert_eq!(confirmation["data"]["show_code"], true, "a first link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passkey_assertion_fails_the_login_and_leaves_no_keys() {
    let (gateway, api, receiver) = passkey_account().await;
    let qr = showing_qr(&api, "d1").await;

    let (linked, refused) = tokio::join!(gateway.sandbox.scan_qr_as(PHONE, &qr), async {
        let options = requested_options(&receiver).await;
        let mut assertion = assertion_for(&gateway, &options);
        // Well-formed, but not the credential's signature.
        assertion["response"]["signature"] =
            json!("MEQCIBadSignatureBadSignatureBadSignatureBadSg");
        api.post_json("/devices/d1/login/passkey", assertion).await
    });

    assert!(linked.is_err(), "nothing linked: {linked:?}");
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    assert_eq!(refused.code(), "WHATSAPP_REFUSED");
    let failed = receiver.wait_for("login_failed", WAIT).await.event();
    assert_eq!(failed["data"]["reason"], "passkey_failed");
    api.wait_state("d1", "disconnected").await;
    assert!(gateway.sandbox.accounts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_for_a_device_not_waiting_for_one_is_refused_and_changes_nothing() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let assertion = json!({
        "id": "Y3JlZA",
        "rawId": "Y3JlZA",
        "type": "public-key",
        "response": { "clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "MEUCIQ" },
    });

    let not_waiting = api.post_json("/devices/d1/login/passkey", assertion).await;
    let malformed = api
        .post_json("/devices/d1/login/passkey", json!({ "rawId": "Y3JlZA" }))
        .await;
    let unknown = api
        .post_json("/devices/nobody/login/passkey", json!({}))
        .await;

    assert_eq!(
        not_waiting.status,
        StatusCode::CONFLICT,
        "{}",
        not_waiting.body
    );
    assert_eq!(not_waiting.code(), "NO_PASSKEY_REQUESTED");
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.body
    );
    assert_eq!(malformed.code(), "VALIDATION_ERROR");
    assert!(
        malformed.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("response")),
        "{}",
        malformed.body
    );
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "malformed before unknown: {}",
        unknown.body
    );
    let status = api.get("/devices/d1").await;
    assert_eq!(
        status.body["results"]["state"], "disconnected",
        "{}",
        status.body
    );
}
