//! Device slots: create, list, inspect, delete, status.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Gateway, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_created_listed_and_removed() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let created = api
        .post_json(
            "/devices",
            json!({ "device_id": "sales-1", "display_name": "Sales" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["message"], "Device added");
    assert_eq!(created.body["results"]["state"], "disconnected");
    assert_eq!(created.body["results"]["display_name"], "Sales");
    let generated = api.post_json("/devices", json!({})).await;
    let generated_id = generated.body["results"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(generated_id.len(), 36, "a UUID when no id is given");

    let list = api.get("/devices").await;
    assert_eq!(list.body["message"], "List devices");
    assert_eq!(list.body["results"].as_array().unwrap().len(), 2);
    let status = api.get("/devices/sales-1/status").await;
    assert_eq!(
        status.body["results"],
        json!({ "device_id": "sales-1", "is_connected": false, "is_logged_in": false })
    );

    let removed = api.delete("/devices/sales-1").await;
    assert_eq!(removed.body["message"], "Device removed");
    assert_eq!(
        api.get("/devices/sales-1").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/devices").await.body["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_device_id_is_a_conflict() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let again = api
        .post_json("/devices", json!({ "device_id": "d1" }))
        .await;

    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "DEVICE_ALREADY_EXISTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_device_ids_and_bodies_are_validation_errors() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    for body in [
        json!({ "device_id": "" }),
        json!({ "device_id": "has space" }),
        json!({ "device_id": "x".repeat(65) }),
        json!({ "unknown": true }),
    ] {
        let answer = api.post_json("/devices", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR", "{body}");
    }
    assert!(
        api.get("/devices").await.body["results"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_ids_dot_and_dot_dot_are_refused_as_no_url_could_name_them() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    for id in [".", ".."] {
        let answer = api.post_json("/devices", json!({ "device_id": id })).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{id}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR");
    }
    let three_dots = api
        .post_json("/devices", json!({ "device_id": "..." }))
        .await;
    assert_eq!(three_dots.status, StatusCode::OK, "{}", three_dots.body);
    assert_eq!(api.get("/devices/...").await.body["results"]["id"], "...");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_racing_deletes_logouts_and_creates_never_fail_inside_the_gateway() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..200 {
        let calls = [
            ("login", reqwest::Method::GET, "/devices/racer/login"),
            ("delete", reqwest::Method::DELETE, "/devices/racer"),
            ("logout", reqwest::Method::POST, "/devices/racer/logout"),
            ("create", reqwest::Method::POST, "/devices"),
        ]
        .map(|(name, method, path)| {
            let api = api.clone();
            tokio::spawn(async move {
                let answer = if name == "create" {
                    api.post_json(path, json!({ "device_id": "racer" })).await
                } else {
                    api.send_raw(method, path, "application/json", "").await
                };
                (name, answer)
            })
        });
        for call in calls {
            let (name, answer) = call.await.expect("the call ran");
            assert!(
                !answer.status.is_server_error(),
                "round {round}: {name} answered {}: {}",
                answer.status,
                answer.body
            );
            *seen.entry((name, answer.status.as_u16())).or_insert(0) += 1;
        }
    }
    eprintln!("answers: {seen:?}");
    // Whatever the interleaving, no session outlives its device.
    api.delete("/devices/racer").await;
    eventually("every session of the deleted device ending", || async {
        let clients = gateway.sandbox.clients();
        if clients.is_empty() {
            Ok(())
        } else {
            Err(clients)
        }
    })
    .await;
}
