//! What the spec promises about every answer, checked over real HTTP: the envelope and its codes
//! for what poem itself refuses, parameters named in errors, strict JSON types, nulls sent as
//! `null`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let answer = api
        .send_raw(Method::PUT, "/devices", "application/json", "{}")
        .await;

    assert_eq!(
        answer.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "METHOD_NOT_ALLOWED");
    assert_eq!(answer.headers["allow"], "GET, POST");
    let on_a_device = api
        .send_raw(
            Method::PUT,
            "/devices/my-device-id",
            "application/json",
            "{}",
        )
        .await;
    assert_eq!(on_a_device.headers["allow"], "GET, DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_415_and_changes_nothing() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let answer = api
        .send_raw(Method::POST, "/devices", "text/plain", "device_id=x")
        .await;

    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(api.get("/devices").await.body["results"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_path_parameter_is_named_in_the_error() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let webhook = api.get("/webhooks/not-a-uuid/deliveries").await;
    let delivery = api
        .post("/webhooks/0b6f6f2e-5c1e-4c1a-9d8e-2f1b5a7c9d30/deliveries/nope/retry")
        .await;
    let device = api.get("/devices/no%20spaces").await;

    for (answer, name) in [
        (&webhook, "`id`"),
        (&delivery, "`delivery_id`"),
        (&device, "device_id"),
    ] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{message} names {name}");
        assert!(!message.contains("param0"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pairing_code_login_requires_a_phone_and_says_so() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("my-device-id").await;

    let answer = api.post("/devices/my-device-id/login/code").await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.code(), "VALIDATION_ERROR");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`phone`"),
        "{}",
        answer.body
    );
    let device = api.get("/devices/my-device-id").await;
    assert_eq!(device.body["results"]["state"], "disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_is_not_a_device_id_nor_a_label() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    for body in [json!({ "device_id": 0 }), json!({ "display_name": true })] {
        let answer = api.post_json("/devices", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR");
    }
    assert_eq!(api.get("/devices").await.body["results"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_without_a_value_is_sent_as_null() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("my-device-id").await;

    let device = api.get("/devices/my-device-id").await;

    let results = device.body["results"].as_object().expect("a device");
    assert_eq!(results.get("jid"), Some(&Value::Null));
    assert_eq!(results.get("display_name"), Some(&Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_utc_with_a_z() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("my-device-id").await;

    let device = api.get("/devices/my-device-id").await;

    let created = device.body["results"]["created_at"]
        .as_str()
        .expect("a time");
    assert!(created.ends_with('Z'), "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_text_field_is_refused_naming_the_field() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let receiver = crate::support::receiver::Receiver::start().await;
    let created = api
        .post_json(
            "/webhooks",
            json!({ "url": receiver.url, "events": ["logged_in"] }),
        )
        .await;
    let webhook = created.body["results"]["id"].as_str().expect("an id");

    let device = api
        .post_json("/devices", json!({ "display_name": "a\u{0}b" }))
        .await;
    let new_webhook = api
        .post_json(
            "/webhooks",
            json!({ "url": receiver.url, "events": ["logged_in"], "description": "a\u{0}b" }),
        )
        .await;
    let changed = api
        .patch_json(
            &format!("/webhooks/{webhook}"),
            json!({ "description": "a\u{0}b" }),
        )
        .await;

    for (answer, field) in [
        (&device, "`display_name`"),
        (&new_webhook, "`description`"),
        (&changed, "`description`"),
    ] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains("NUL"),
            "{message}"
        );
    }
    assert_eq!(api.get("/devices").await.body["results"], json!([]));
    let webhooks = api.get("/webhooks").await.body["results"].clone();
    assert_eq!(webhooks.as_array().map(Vec::len), Some(1));
    assert_eq!(webhooks[0]["description"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_fields_are_bounded_and_say_by_how_much() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let long_name = api
        .post_json("/devices", json!({ "display_name": "x".repeat(257) }))
        .await;
    let long_url = api
        .post_json(
            "/webhooks",
            json!({ "url": format!("https://example.com/{}", "x".repeat(2048)), "events": ["logged_in"] }),
        )
        .await;
    let longest_name = api
        .post_json("/devices", json!({ "display_name": "é".repeat(256) }))
        .await;

    for (answer, needle) in [(&long_name, "256"), (&long_url, "2048")] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(longest_name.status, StatusCode::OK, "{}", longest_name.body);
    assert_eq!(
        api.get("/devices").await.body["results"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_413_and_changes_nothing() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let answer = api
        .post_json(
            "/devices",
            json!({ "display_name": "x".repeat(1024 * 1024) }),
        )
        .await;

    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "PAYLOAD_TOO_LARGE");
    assert_eq!(api.get("/devices").await.body["results"], json!([]));
}
