//! `POST /devices/{device_id}/login/code?phone=…`: the pairing-code login.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::receiver::subscribed;
use crate::support::{Gateway, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entered_pairing_code_logs_the_device_in() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("my-device-id").await;

    let login = api
        .post("/devices/my-device-id/login/code?phone=628912344551")
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.code(), "SUCCESS");
    assert_eq!(login.body["message"], "Pairing code generated successfully");
    assert_eq!(login.body["results"]["device_id"], "my-device-id");
    let code = login.body["results"]["pair_code"]
        .as_str()
        .expect("pair_code")
        .to_string();
    assert_eq!(code.len(), 9, "{code}");
    assert_eq!(&code[4..5], "-", "{code}");

    let again = api
        .post("/devices/my-device-id/login/code?phone=628912344551")
        .await;
    assert_eq!(
        again.body["results"]["pair_code"],
        code.as_str(),
        "the outstanding code is returned"
    );

    gateway
        .sandbox
        .enter_pair_code("628912344551", &code)
        .await
        .expect("the phone links the device");
    api.wait_logged_in("my-device-id").await;
    let device = api.get("/devices/my-device-id").await;
    assert_eq!(device.body["results"]["state"], "logged_in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_phone_numbers_are_rejected_and_change_nothing() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let before = api.get("/devices/d1").await.body;

    for phone in ["abc", "0812345678", "123", "12345678901234567890", ""] {
        let answer = api
            .post(&format!("/devices/d1/login/code?phone={phone}"))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{phone}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR", "{phone}");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("phone")
        );
    }
    let missing = api.post("/devices/d1/login/code").await;
    assert_eq!(missing.code(), "VALIDATION_ERROR");

    assert_eq!(
        api.get("/devices/d1").await.body,
        before,
        "the device is untouched"
    );
    assert_eq!(
        gateway.sandbox.connections_made(),
        0,
        "no connection to WhatsApp was opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_while_a_pairing_code_is_requested_cancels_that_login_at_once() {
    let gateway = Gateway::start_with(Options {
        login_timeout: Duration::from_secs(10),
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    // WhatsApp is unreachable, so the code cannot arrive before the reconnect.
    gateway.sandbox.set_outage(true);
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/devices/d1/login/code?phone=628912344551").await })
    };
    api.wait_state("d1", "connecting").await;

    let reconnect = api.post("/devices/d1/reconnect").await;

    assert_eq!(reconnect.status, StatusCode::OK, "{}", reconnect.body);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered long before the login timeout")
        .expect("the call ran");
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert_eq!(answer.code(), "LOGIN_CANCELLED");
    gateway.sandbox.set_outage(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_real_time_a_device_is_logged_in_within_a_second_of_the_code_being_entered() {
    let gateway = Gateway::start_with(Options::real_time()).await;
    let api = gateway.tenant("acme").await;
    let (receiver, _) = subscribed(&api, &["logged_in"]).await;
    api.create_device("d1").await;
    let login = api.post("/devices/d1/login/code?phone=628912344551").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let code = login.body["results"]["pair_code"]
        .as_str()
        .expect("pair_code");

    let entered_at = tokio::time::Instant::now();
    gateway
        .sandbox
        .enter_pair_code("628912344551", code)
        .await
        .expect("the phone links the device");
    let logged_in = receiver
        .wait_for("logged_in", Duration::from_secs(10))
        .await;

    let took = logged_in.arrived_after(entered_at);
    assert!(
        took < Duration::from_secs(1),
        "logged_in reached the receiver {took:?} after the code was entered"
    );
}
