//! Link tokens over HTTP: `POST`/`DELETE /devices/{device_id}/link` (the operator's side) and
//! the token-scoped side, `/link/{token}` (the page) and its `/login`, `/login/code` and
//! `/events`, called without credentials: the token is the only one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Api, Gateway, decode_qr, fetch, fetch_page};

const WAIT: Duration = Duration::from_secs(15);

/// A link for `device` made with `api`'s tenant; returns its token and `link_url`.
async fn new_link(api: &Api, device: &str) -> (String, String) {
    let answer = api.post(&format!("/devices/{device}/link")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let url = answer.body["results"]["link_url"]
        .as_str()
        .expect("link_url")
        .to_string();
    let token = url.rsplit('/').next().expect("a token").to_string();
    (token, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_is_under_the_public_base_and_works_for_ten_minutes_by_default() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;

    let before = Utc::now();
    let answer = api.post("/devices/d1/link").await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.code(), "SUCCESS");
    let results = &answer.body["results"];
    assert_eq!(results["device_id"], "d1");
    let url = results["link_url"].as_str().expect("link_url");
    let token = url
        .strip_prefix(&format!("{}/link/", gateway.base))
        .unwrap_or_else(|| panic!("{url} is a link page under the public base"));
    assert_eq!(token.len(), 43, "32 bytes in base64url: {token}");
    let written = results["expires_at"].as_str().expect("expires_at");
    assert!(written.ends_with('Z'), "RFC 3339 UTC: {written}");
    let expires_at: DateTime<Utc> = written.parse().expect("RFC 3339");
    let expected = before + chrono::TimeDelta::seconds(600);
    assert!(
        (expires_at - expected).num_seconds().abs() <= 5,
        "{expires_at} is about {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expires_in_out_of_range_is_refused_naming_it_and_makes_no_link() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;

    for expires_in in [59, 86_401, 0] {
        let answer = api
            .post_json("/devices/d1/link", json!({ "expires_in": expires_in }))
            .await;

        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{expires_in}: {}",
            answer.body
        );
        assert_eq!(answer.code(), "VALIDATION_ERROR");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("expires_in"), "{message}");
    }
    let rows = gateway.tenant_rows(tenant).await;
    assert!(
        !rows.iter().any(|(table, _)| table == "link_tokens"),
        "no link was made: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_page_is_html_with_its_security_headers() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (_, url) = new_link(&api, "d1").await;

    let page = fetch_page(&url).await;

    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        page.header("content-security-policy"),
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(page.html.contains("<html"), "{}", page.html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_script_and_style_are_served_without_credentials() {
    let gateway = Gateway::start().await;

    for (path, content_type) in [
        (
            "/statics/link/link.js",
            "application/javascript; charset=utf-8",
        ),
        ("/statics/link/link.css", "text/css; charset=utf-8"),
    ] {
        let asset = fetch_page(&format!("{}{path}", gateway.base)).await;

        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert_eq!(asset.header("content-type"), content_type, "{path}");
        assert_eq!(asset.header("cache-control"), "no-cache", "{path}");
        assert_eq!(asset.header("x-content-type-options"), "nosniff", "{path}");
        assert!(!asset.html.is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_the_qr_code_of_a_links_login_logs_its_device_in() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (token, _) = new_link(&api, "d1").await;

    let login = gateway
        .anonymous()
        .get(&format!("/link/{token}/login"))
        .await;

    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.code(), "SUCCESS");
    assert_eq!(login.body["message"], "QR code generated successfully");
    assert_eq!(login.body["results"]["device_id"], "d1");
    assert!(login.body["results"]["qr_duration"].as_u64().unwrap_or(0) > 0);
    let (status, png) = fetch(login.body["results"]["qr_link"].as_str().expect("qr_link")).await;
    assert_eq!(status, StatusCode::OK);
    gateway
        .sandbox
        .scan_qr(&decode_qr(&png))
        .await
        .expect("the phone links the device");
    api.wait_logged_in("d1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_its_device_logged_in_a_link_is_used_up() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (token, url) = new_link(&api, "d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;

    let page = fetch_page(&url).await;
    let login = gateway
        .anonymous()
        .get(&format!("/link/{token}/login"))
        .await;

    assert_eq!(page.status, StatusCode::GONE);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.html.contains("data-reason=\"used\""), "{}", page.html);
    assert_eq!(login.status, StatusCode::GONE, "{}", login.body);
    assert_eq!(login.code(), "LINK_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_open_stream_ends_when_the_link_expires() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let (token, _) = new_link(&api, "d1").await;
    gateway
        .sql()
        .await
        .execute(
            "UPDATE link_tokens SET expires_at = now() + interval '2 seconds'
             WHERE tenant_id = $1",
            &[&tenant.0],
        )
        .await
        .expect("the expiry moves");

    let mut stream = gateway
        .anonymous()
        .stream(&format!("/link/{token}/events"), None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let opened = stream.next(WAIT).await.expect("the state first");
    let after_expiry = stream.next(WAIT).await;

    assert_eq!(opened.event, "state");
    assert!(
        after_expiry.is_none(),
        "the stream ends with its link: {after_expiry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_link_still_follows_its_devices_events_until_it_expires() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let (token, _) = new_link(&api, "d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;
    let anonymous = gateway.anonymous();
    let path = format!("/link/{token}/events");

    let mut stream = anonymous
        .stream(&path, None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let opened = stream.next(WAIT).await.expect("the state first");
    gateway.expire_link_tokens(tenant).await;
    let expired = anonymous.stream(&path, None).await.err().expect("refused");

    assert_eq!(opened.event, "state");
    assert_eq!(opened.data["state"], "logged_in");
    assert_eq!(expired.status, StatusCode::GONE, "{}", expired.body);
    assert_eq!(expired.code(), "LINK_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_answers_the_gone_page_saying_expired() {
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let answer = api
        .post_json("/devices/d1/link", json!({ "expires_in": 60 }))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let url = answer.body["results"]["link_url"]
        .as_str()
        .expect("link_url");
    assert_eq!(gateway.expire_link_tokens(tenant).await, 1);

    let token = url.rsplit('/').next().expect("a token");

    let page = fetch_page(url).await;
    let login = gateway
        .anonymous()
        .get(&format!("/link/{token}/login"))
        .await;

    assert_eq!(page.status, StatusCode::GONE);
    assert!(
        page.html.contains("data-reason=\"expired\""),
        "{}",
        page.html
    );
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(login.status, StatusCode::GONE, "{}", login.body);
    assert_eq!(login.code(), "LINK_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_answers_the_gone_page_saying_revoked() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (token, url) = new_link(&api, "d1").await;

    let revoke = api.delete("/devices/d1/link").await;
    let page = fetch_page(&url).await;
    let events = gateway
        .anonymous()
        .stream(&format!("/link/{token}/events"), None)
        .await
        .err()
        .expect("refused");

    assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.body);
    assert_eq!(
        revoke.body["results"],
        json!({ "device_id": "d1", "revoked": 1 })
    );
    assert_eq!(page.status, StatusCode::GONE);
    assert!(
        page.html.contains("data-reason=\"revoked\""),
        "{}",
        page.html
    );
    assert_eq!(events.status, StatusCode::GONE, "{}", events.body);
    assert_eq!(events.code(), "LINK_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_answers_not_found() {
    let gateway = Gateway::start().await;
    let anonymous = gateway.anonymous();
    let token = "A".repeat(43);

    let page = fetch_page(&format!("{}/link/{token}", gateway.base)).await;
    let malformed = fetch_page(&format!("{}/link/nonsense", gateway.base)).await;
    let login = anonymous.get(&format!("/link/{token}/login")).await;
    let code = anonymous
        .post(&format!("/link/{token}/login/code?phone=628912344551"))
        .await;

    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.html.contains("data-reason=\"unknown\""),
        "{}",
        page.html
    );
    assert!(
        !page.header("content-security-policy").is_empty(),
        "the gone page carries the page's headers"
    );
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    for answer in [login, code] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert_eq!(answer.code(), "NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_device_gets_no_link() {
    let gateway = Gateway::start().await;
    let (owner, acme) = gateway.tenant_with_id("acme").await;
    let globex = gateway.tenant("globex").await;
    acme.create_device("d1").await;

    let create = globex.post("/devices/d1/link").await;
    let revoke = globex.delete("/devices/d1/link").await;

    for answer in [create, revoke] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert_eq!(answer.code(), "DEVICE_NOT_FOUND");
    }
    let rows = gateway.tenant_rows(owner).await;
    assert!(
        !rows.iter().any(|(table, _)| table == "link_tokens"),
        "no link was made: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_device_gets_no_link() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    gateway.scan_login(&api, "d1").await;
    api.wait_logged_in("d1").await;

    let answer = api.post("/devices/d1/link").await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.code(), "ALREADY_LOGGED_IN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_from_a_links_login_logs_its_device_in() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (token, _) = new_link(&api, "d1").await;

    let login = gateway
        .anonymous()
        .post(&format!("/link/{token}/login/code?phone=628912344551"))
        .await;

    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.body["message"], "Pairing code generated successfully");
    assert_eq!(login.body["results"]["device_id"], "d1");
    let code = login.body["results"]["pair_code"]
        .as_str()
        .expect("pair_code");
    gateway
        .sandbox
        .enter_pair_code("628912344551", code)
        .await
        .expect("the phone links the device");
    api.wait_logged_in("d1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_event_stream_opens_with_its_devices_state() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let (token, _) = new_link(&api, "d1").await;

    let mut stream = gateway
        .anonymous()
        .stream(&format!("/link/{token}/events"), None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let opened = stream.next(WAIT).await.expect("the state first");

    assert!(stream.content_type().starts_with("text/event-stream"));
    assert_eq!(opened.event, "state");
    assert_eq!(opened.data["device_id"], "d1");
    assert_eq!(opened.data["state"], "disconnected");
}
