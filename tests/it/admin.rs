//! The operator's admin API: tenants and their credentials under `/admin/…`, behind its own
//! credential, off unless `WAGATE_ADMIN_AUTH` is set.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wagate_core::domain::TenantId;

use crate::support::receiver::Receiver;
use crate::support::{Answer, Api, Gateway, Options};

/// The admin credential of these tests' gateways.
const ADMIN: (&str, &str) = ("operator", "correct-horse-battery-staple");

/// An id no tenant has.
const UNKNOWN_TENANT: &str = "5b1c1f8e-8d0f-4c43-9d1a-0d5c1e2f3a4b";

/// A gateway with the admin API on.
async fn gateway() -> Gateway {
    Gateway::start_with(Options {
        admin: Some(ADMIN),
        ..Options::default()
    })
    .await
}

/// Creates tenant `name` through the admin API; returns the answer's results and a client
/// holding the new credential.
async fn add_tenant(gateway: &Gateway, name: &str) -> (Value, Api) {
    let created = gateway
        .admin()
        .post_json("/admin/tenants", json!({ "name": name }))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let results = created.body["results"].clone();
    let api = signed_in(gateway, &results["credential"]);
    (results, api)
}

/// A client holding `credential` (`{username, password}` as the admin API shows it).
fn signed_in(gateway: &Gateway, credential: &Value) -> Api {
    Api::new(
        &gateway.base,
        credential["username"].as_str().expect("a username"),
        credential["password"].as_str().expect("a password"),
    )
}

/// The tenant id in `results`.
fn id_of(results: &Value) -> String {
    results["id"].as_str().expect("an id").to_string()
}

/// The tenants `GET /admin/tenants` lists.
async fn listed(gateway: &Gateway) -> Vec<Value> {
    let list = gateway.admin().get("/admin/tenants").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    list.body["results"].as_array().expect("a list").clone()
}

fn assert_refused(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.code(), code, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_credential_every_admin_path_is_a_404_saying_how_to_turn_it_on() {
    let gateway = Gateway::start().await;
    let tenant = gateway.tenant("acme").await;
    let anonymous = gateway.anonymous();

    let answers = [
        anonymous.get("/admin/tenants").await,
        tenant
            .with_auth(ADMIN.0, ADMIN.1)
            .post_json("/admin/tenants", json!({ "name": "globex" }))
            .await,
        tenant.get("/admin/tenants").await,
        anonymous
            .delete(&format!("/admin/tenants/{UNKNOWN_TENANT}"))
            .await,
        anonymous.delete("/admin/tenants/not-a-uuid").await,
        anonymous.get("/admin/anything").await,
    ];

    for answer in &answers {
        assert_refused(answer, StatusCode::NOT_FOUND, "NOT_FOUND");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("admin API is off") && message.contains("WAGATE_ADMIN_AUTH"),
            "{message}"
        );
    }
    let tenants = gateway.store.list_tenants().await.expect("tenants");
    assert_eq!(tenants.len(), 1, "nothing was created: {tenants:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_password_is_a_401_and_the_eleventh_in_a_minute_a_429() {
    let gateway = gateway().await;
    let guesser = gateway.admin().with_auth(ADMIN.0, "wrong");

    let mut answers = Vec::new();
    for _ in 0..11 {
        answers.push(guesser.get("/admin/tenants").await);
    }

    for answer in &answers[..10] {
        assert_refused(answer, StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR");
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic"), "{challenge}");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("WAGATE_ADMIN_AUTH"), "{message}");
    }
    let throttled = &answers[10];
    assert_refused(throttled, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry_after = throttled.retry_after();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The throttle answers before any comparison, so the right password waits too.
    let right = gateway.admin().get("/admin/tenants").await;
    assert_refused(&right, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_credential_is_refused_on_the_admin_api() {
    let gateway = gateway().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    assert_eq!(api.get("/devices").await.status, StatusCode::OK);

    let answers = [
        api.get("/admin/tenants").await,
        api.post_json("/admin/tenants", json!({ "name": "globex" }))
            .await,
        api.post(&format!("/admin/tenants/{tenant}/credentials"))
            .await,
        api.delete(&format!("/admin/tenants/{tenant}")).await,
    ];

    for answer in &answers {
        assert_refused(answer, StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR");
    }
    let tenants = gateway.store.list_tenants().await.expect("tenants");
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0].credentials, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_credential_is_refused_on_tenant_routes() {
    let gateway = gateway().await;
    let admin = gateway.admin();
    assert_eq!(admin.get("/admin/tenants").await.status, StatusCode::OK);

    let answers = [
        admin.get("/devices").await,
        admin
            .post_json("/devices", json!({ "device_id": "d1" }))
            .await,
        admin.get("/webhooks").await,
        admin.get("/plugins").await,
    ];

    for answer in &answers {
        assert_refused(answer, StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_created_with_a_working_credential_and_listed_with_what_they_hold() {
    let gateway = gateway().await;

    let created = gateway
        .admin()
        .post_json("/admin/tenants", json!({ "name": "  Acme Support " }))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["message"], "Tenant added");
    let acme = &created.body["results"];
    assert_eq!(acme["name"], "Acme Support", "the name is trimmed");
    assert_eq!(
        (&acme["devices"], &acme["credentials"]),
        (&json!(0), &json!(1))
    );
    assert!(
        acme["created_at"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z')
    );
    let username = acme["credential"]["username"].as_str().unwrap_or_default();
    assert!(username.starts_with("wg_"), "{username}");
    let password = acme["credential"]["password"].as_str().unwrap_or_default();
    assert_eq!(password.len(), 32);
    let acme_api = signed_in(&gateway, &acme["credential"]);
    acme_api.create_device("d1").await;
    let (globex, _) = add_tenant(&gateway, "Globex").await;

    let tenants = listed(&gateway).await;

    assert_eq!(tenants.len(), 2, "{tenants:?}");
    assert_eq!(tenants[0]["id"], acme["id"]);
    assert_eq!(tenants[0]["name"], "Acme Support");
    assert_eq!(tenants[0]["created_at"], acme["created_at"]);
    assert_eq!(
        (&tenants[0]["devices"], &tenants[0]["credentials"]),
        (&json!(1), &json!(1))
    );
    assert!(
        tenants[0].get("credential").is_none(),
        "no secret in the list"
    );
    assert_eq!(tenants[1]["id"], globex["id"]);
    assert_eq!(
        (&tenants[1]["devices"], &tenants[1]["credentials"]),
        (&json!(0), &json!(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_credential_signs_in_as_its_tenant_beside_the_first() {
    let gateway = gateway().await;
    let (acme, first) = add_tenant(&gateway, "acme").await;
    first.create_device("d1").await;

    let added = gateway
        .admin()
        .post(&format!("/admin/tenants/{}/credentials", id_of(&acme)))
        .await;

    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["message"], "Credential added");
    assert_ne!(
        added.body["results"]["username"],
        acme["credential"]["username"]
    );
    let second = signed_in(&gateway, &added.body["results"]);
    let devices = second.get("/devices").await;
    assert_eq!(devices.status, StatusCode::OK, "{}", devices.body);
    assert_eq!(devices.body["results"][0]["id"], "d1", "the same tenant");
    assert_eq!(first.get("/devices").await.status, StatusCode::OK);
    assert_eq!(listed(&gateway).await[0]["credentials"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_is_refused_on_the_very_next_request() {
    let gateway = gateway().await;
    let admin = gateway.admin();
    let (acme, first) = add_tenant(&gateway, "acme").await;
    let tenant = id_of(&acme);
    let added = admin
        .post(&format!("/admin/tenants/{tenant}/credentials"))
        .await;
    let second = signed_in(&gateway, &added.body["results"]);
    // Verified once, so the gateway remembers it.
    assert_eq!(first.get("/devices").await.status, StatusCode::OK);
    let username = acme["credential"]["username"].as_str().expect("a username");

    let revoked = admin
        .delete(&format!("/admin/tenants/{tenant}/credentials/{username}"))
        .await;

    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["message"], "Credential revoked");
    assert_eq!(
        revoked.body["results"],
        json!({ "tenant_id": tenant, "username": username })
    );
    let refused = first.get("/devices").await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR");
    assert_eq!(second.get("/devices").await.status, StatusCode::OK);
    let again = admin
        .delete(&format!("/admin/tenants/{tenant}/credentials/{username}"))
        .await;
    assert_refused(&again, StatusCode::NOT_FOUND, "CREDENTIAL_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_revoked_only_through_its_own_tenant() {
    let gateway = gateway().await;
    let (acme, _) = add_tenant(&gateway, "acme").await;
    let (globex, globex_api) = add_tenant(&gateway, "globex").await;
    let globex_user = globex["credential"]["username"].as_str().expect("a user");

    let crossed = gateway
        .admin()
        .delete(&format!(
            "/admin/tenants/{}/credentials/{globex_user}",
            id_of(&acme)
        ))
        .await;

    assert_refused(&crossed, StatusCode::NOT_FOUND, "CREDENTIAL_NOT_FOUND");
    assert_eq!(globex_api.get("/devices").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_is_a_404() {
    let gateway = gateway().await;
    let admin = gateway.admin();

    let answers = [
        admin
            .post(&format!("/admin/tenants/{UNKNOWN_TENANT}/credentials"))
            .await,
        admin
            .delete(&format!("/admin/tenants/{UNKNOWN_TENANT}/credentials/wg_x"))
            .await,
        admin
            .delete(&format!("/admin/tenants/{UNKNOWN_TENANT}"))
            .await,
    ];

    for answer in &answers {
        assert_refused(answer, StatusCode::NOT_FOUND, "TENANT_NOT_FOUND");
    }
    assert!(listed(&gateway).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_logs_out_and_removes_all_it_had_and_leaves_other_tenants_alone() {
    let gateway = gateway().await;
    let (doomed, doomed_api) = add_tenant(&gateway, "doomed").await;
    let (_, kept_api) = add_tenant(&gateway, "kept").await;
    let receiver = Receiver::start().await;
    let endpoint = doomed_api
        .post_json(
            "/webhooks",
            json!({ "url": receiver.url, "events": ["logged_in"] }),
        )
        .await;
    assert_eq!(endpoint.status, StatusCode::OK, "{}", endpoint.body);
    doomed_api.create_device("linked").await;
    doomed_api.create_device("idle").await;
    gateway.scan_login(&doomed_api, "linked").await;
    doomed_api.wait_logged_in("linked").await;
    receiver
        .wait_for("logged_in", Duration::from_secs(10))
        .await;
    kept_api.create_device("k1").await;
    let (kept_jid, _) = gateway.scan_login(&kept_api, "k1").await;
    kept_api.wait_logged_in("k1").await;
    assert_eq!(gateway.sandbox.accounts().len(), 2);
    let doomed_id = TenantId(id_of(&doomed).parse().expect("a UUID"));
    assert!(!gateway.tenant_rows(doomed_id).await.is_empty());

    let removed = gateway
        .admin()
        .delete(&format!("/admin/tenants/{}", id_of(&doomed)))
        .await;

    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(removed.body["message"], "Tenant removed");
    assert_eq!(removed.body["results"]["id"], doomed["id"]);
    let refused = doomed_api.get("/devices").await;
    assert_refused(&refused, StatusCode::UNAUTHORIZED, "AUTHENTICATION_ERROR");
    assert_eq!(
        gateway.tenant_rows(doomed_id).await,
        Vec::<(String, i64)>::new(),
        "devices, webhooks, events, deliveries and credentials are gone"
    );
    let accounts = gateway.sandbox.accounts();
    assert_eq!(
        accounts.len(),
        1,
        "the doomed device was logged out: {accounts:?}"
    );
    assert_eq!(accounts[0].jid, kept_jid);
    assert!(accounts[0].connected);
    let kept = kept_api.get("/devices/k1/status").await;
    assert_eq!(
        kept.body["results"],
        json!({ "device_id": "k1", "is_connected": true, "is_logged_in": true })
    );
    let tenants = listed(&gateway).await;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0]["name"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenant_input_is_a_400_and_stores_nothing() {
    let gateway = gateway().await;
    let admin = gateway.admin();

    for (body, needle) in [
        (json!({ "name": "a\u{0}b" }), "NUL"),
        (json!({ "name": "x".repeat(257) }), "256"),
        (json!({ "name": "" }), "whitespace"),
        (json!({ "name": " \t " }), "whitespace"),
        (json!({ "name": 7 }), "string"),
        (json!({}), "string"),
        (json!({ "name": "acme", "extra": true }), "extra"),
    ] {
        let answer = admin.post_json("/admin/tenants", body.clone()).await;
        assert_refused(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
    for (method, path) in [
        (reqwest::Method::DELETE, "/admin/tenants/not-a-uuid"),
        (
            reqwest::Method::POST,
            "/admin/tenants/not-a-uuid/credentials",
        ),
        (
            reqwest::Method::DELETE,
            "/admin/tenants/not-a-uuid/credentials/wg_x",
        ),
    ] {
        let answer = admin
            .send_raw(method.clone(), path, "application/json", "")
            .await;
        assert_refused(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`tenant_id`"),
            "{method} {path}: {message}"
        );
    }
    let tenants = gateway.store.list_tenants().await.expect("tenants");
    assert!(tenants.is_empty(), "{tenants:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_of_256_characters_is_taken() {
    let gateway = gateway().await;

    let (created, _) = add_tenant(&gateway, &"é".repeat(256)).await;

    assert_eq!(
        created["name"].as_str().map(|n| n.chars().count()),
        Some(256)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_tenant_name_is_a_conflict() {
    let gateway = gateway().await;
    add_tenant(&gateway, "acme").await;

    let again = gateway
        .admin()
        .post_json("/admin/tenants", json!({ "name": " acme" }))
        .await;

    assert_refused(&again, StatusCode::CONFLICT, "TENANT_EXISTS");
    let tenants = listed(&gateway).await;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(
        tenants[0]["credentials"], 1,
        "no credential was left behind"
    );
}
