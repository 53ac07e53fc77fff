//! HTTP Basic auth and tenant scoping.

use reqwest::StatusCode;

use crate::support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_get_a_401_envelope_with_a_challenge() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    for answer in [
        gateway.anonymous().get("/devices").await,
        api.with_auth("nobody", "nothing").get("/devices").await,
        gateway.anonymous().get("/devices/d1/login").await,
    ] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.code(), "AUTHENTICATION_ERROR", "{}", answer.body);
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic"), "{challenge}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_device_is_not_found() {
    let gateway = Gateway::start().await;
    let acme = gateway.tenant("acme").await;
    let globex = gateway.tenant("globex").await;
    acme.create_device("shared-id").await;

    for path in [
        "/devices/shared-id",
        "/devices/shared-id/login",
        "/devices/shared-id/status",
    ] {
        let answer = globex.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.code(), "DEVICE_NOT_FOUND", "{path}");
    }
    let code = globex
        .post("/devices/shared-id/login/code?phone=628912344551")
        .await;
    assert_eq!(code.code(), "DEVICE_NOT_FOUND");
    assert_eq!(
        globex.delete("/devices/shared-id").await.code(),
        "DEVICE_NOT_FOUND"
    );
    assert_eq!(acme.get("/devices/shared-id").await.status, StatusCode::OK);

    globex.create_device("shared-id").await;
    assert_eq!(
        globex.get("/devices").await.body["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_a_404() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;

    let login = api.get("/devices/nope/login").await;
    assert_eq!(login.status, StatusCode::NOT_FOUND);
    assert_eq!(login.code(), "DEVICE_NOT_FOUND");
    let code = api
        .post("/devices/nope/login/code?phone=628912344551")
        .await;
    assert_eq!(code.status, StatusCode::NOT_FOUND);
    assert_eq!(code.code(), "DEVICE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_throttled_while_a_valid_credential_still_answers() {
    let gateway = Gateway::start().await;
    let api = gateway.tenant("acme").await;
    assert_eq!(api.get("/devices").await.status, StatusCode::OK);
    let guesser = api.with_auth("admin", "guess");

    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(guesser.get("/devices").await);
    }

    let refused = statuses
        .iter()
        .filter(|a| a.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused, 10, "ten failures a minute are answered 401");
    let throttled = statuses.last().expect("answers");
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.body
    );
    assert_eq!(throttled.code(), "RATE_LIMITED");
    let retry_after = throttled.retry_after();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another username from the same address waits too; the known-good credential does not.
    let other = api.with_auth("nobody", "nothing").get("/devices").await;
    assert_eq!(other.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.get("/devices").await.status, StatusCode::OK);
}
