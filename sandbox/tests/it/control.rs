//! The standalone `wagate-sandbox` binary and its JSON control API.

use serde_json::{Value, json};
use wagate_sandbox::ConnectionRecord;

use crate::standalone::Standalone;

async fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    crate::support::control_post(base, path, body).await
}

async fn get<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> T {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("control API answers")
        .json()
        .await
        .expect("JSON body of the expected shape")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_input_gets_a_400_with_a_message() {
    let sandbox = Standalone::start();
    for (path, body) in [
        ("/phone/scan", "not json"),
        ("/phone/scan", r#"{"qr": 5}"#),
        ("/phone/scan", r#"{"qr": "garbage"}"#),
        (
            "/phone/pair-code",
            r#"{"phone": "0812345678", "code": "ABCD-1234"}"#,
        ),
        (
            "/phone/pair-code",
            r#"{"phone": "628912344551", "code": "nope"}"#,
        ),
        ("/phone/unlink", r#"{}"#),
        ("/rate-limit", r#"{"on": "yes"}"#),
        ("/phone/refuse-app-state-sync", r#"{"phone": "12"}"#),
        ("/server/refresh-registration", r#"{"qr": "garbage"}"#),
        ("/server/client-expiration", r#"{"jid": "x", "at": -1}"#),
    ] {
        let (status, body) = post(&sandbox.base, path, body).await;
        assert_eq!(status, 400, "{path} {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{path}: {body}");
    }
    let (status, body) = post(
        &sandbox.base,
        "/phone/unlink",
        r#"{"jid": "1:1@s.whatsapp.net"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_links_through_the_standalone_binary() {
    let sandbox = Standalone::start();
    let mut client = crate::support::TestClient::at(&sandbox.ws, 10).await;
    let (qr, _) = client.next_qr().await;

    let (status, linked) = post(
        &sandbox.base,
        "/phone/scan",
        &json!({ "qr": qr }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{linked}");
    client.connected().await;

    let accounts: Value = reqwest::get(format!("{}/accounts", sandbox.base))
        .await
        .expect("accounts")
        .json()
        .await
        .expect("JSON");
    assert_eq!(accounts[0]["jid"], linked["jid"]);
    assert_eq!(accounts[0]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_incidents_are_played_through_the_control_api() {
    let sandbox = Standalone::start();
    let mut client = crate::support::TestClient::at(&sandbox.ws, 10).await;
    let (qr, _) = client.next_qr().await;

    let (status, refreshed) = post(
        &sandbox.base,
        "/server/refresh-registration",
        &json!({ "qr": qr }).to_string(),
    )
    .await;
    let (rotated, _) = client.next_qr().await;
    let (limit_status, limited) = post(&sandbox.base, "/rate-limit", r#"{"on": true}"#).await;
    let (refuse_status, refused) = post(
        &sandbox.base,
        "/phone/refuse-app-state-sync",
        r#"{"phone": "628912344551"}"#,
    )
    .await;
    let (offline_status, _) = post(
        &sandbox.base,
        "/server/client-expiration",
        r#"{"jid": "628912344551:9@s.whatsapp.net", "at": 1900000000}"#,
    )
    .await;

    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        refreshed["refreshed"].as_str(),
        qr.split(',').next(),
        "the ref it rotated"
    );
    assert_ne!(rotated, qr, "the client shows the ref under a new secret");
    assert_eq!((limit_status, limited), (200, json!({ "on": true })));
    assert_eq!(
        (refuse_status, refused),
        (200, json!({ "refused": "critical_block" }))
    );
    assert_eq!(offline_status, 404, "no such companion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_history_and_stats_are_served_as_json() {
    let sandbox = Standalone::start();
    let mut client = crate::support::TestClient::at(&sandbox.ws, 10).await;
    let (qr, _) = client.next_qr().await;
    let (status, linked) = post(
        &sandbox.base,
        "/phone/scan",
        &json!({ "qr": qr }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{linked}");
    client.connected().await;

    // The client may reconnect once more right after its first login (its pairing connection
    // and the restart it was asked for both lead to one), so the record of the connection it
    // stays on is waited for; once it is there, no other connection opens.
    let mut history: Vec<ConnectionRecord> = Vec::new();
    for _ in 0..250 {
        history = get(&sandbox.base, "/history").await;
        if history
            .iter()
            .any(|r| r.jid.as_deref() == linked["jid"].as_str() && r.closed_at_ms.is_none())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stats: Value = get(&sandbox.base, "/stats").await;

    let login = history
        .iter()
        .rfind(|r| r.jid.as_deref() == linked["jid"].as_str())
        .unwrap_or_else(|| panic!("a record of the login: {history:#?}"));
    assert!(login.logged_in_at_ms.is_some(), "{login:?}");
    assert_eq!(login.closed_at_ms, None, "still online: {history:#?}");
    assert_eq!(
        stats,
        json!({ "connections_made": history.len(), "replaced_total": 0 })
    );
}
