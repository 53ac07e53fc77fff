//! Passkey accounts (WhatsApp's SHORTCAKE_PASSKEY linking): the real client proves the phone's
//! passkey before `pair-success`, and the phone refuses an assertion that does not verify.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use whatsapp_rust::passkey::{AssertionRequest, CallbackAuthenticator};
use whatsapp_rust::types::events::Event;

use wagate_sandbox::{AccountKind, PhoneError, Sandbox};

use crate::support::{TestClient, assertion, control_post, sandbox};

const PHONE: &str = "628912344551";

/// A sandbox whose phone `PHONE` holds a passkey account; clients' timers run `time_scale`
/// times faster, and so does the phone's wait for each passkey step.
async fn passkey_sandbox(qr_refs: usize, time_scale: u32) -> Sandbox {
    let sandbox = sandbox(qr_refs, time_scale).await;
    sandbox
        .set_account(PHONE, AccountKind::Passkey)
        .expect("a valid phone");
    sandbox
}

/// Registers an authenticator on `client` that answers every passkey request with what
/// `answer` makes of the sandbox and the request options: the client then drives the link
/// itself and reports a refused assertion as `PairPasskeyError`.
async fn authenticate_with(
    client: &TestClient,
    sandbox: &Arc<Sandbox>,
    answer: impl Fn(&Sandbox, &str) -> String + Send + Sync + 'static,
) {
    let sandbox = Arc::clone(sandbox);
    let authenticator = CallbackAuthenticator::new(move |request: AssertionRequest| {
        let json = answer(&sandbox, &request.raw_options_json);
        Box::pin(std::future::ready(Ok(assertion(&json))))
    });
    client
        .client
        .set_passkey_authenticator(Arc::new(authenticator))
        .await;
}

/// Waits for the client's report of a failed passkey link: its text and whether it failed in
/// the continuation (after the prologue was accepted).
async fn passkey_error(client: &mut TestClient) -> (String, bool) {
    client
        .wait_for("PairPasskeyError", |e| match e {
            Event::PairPasskeyError(err) => Some((err.error.clone(), err.continuation)),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_account_links_by_qr_once_the_client_proves_the_passkey() {
    let sandbox = passkey_sandbox(6, 5).await;
    let mut client = TestClient::new(&sandbox).await;
    let (qr, _) = client.next_qr().await;

    let scan = sandbox.scan_qr_as(PHONE, &qr);
    let companion = async {
        let code = client.prove_passkey(&sandbox, PHONE).await;
        (code, client.paired().await)
    };
    let (linked, (code, paired)) = tokio::join!(scan, companion);
    let linked = linked.expect("the phone links the client");
    client.connected().await;

    assert_eq!(linked.passkey_code.as_deref(), Some(code.as_str()));
    assert_eq!(code.len(), 9, "shown as XXXX-XXXX: {code}");
    assert_eq!(paired.id.to_string(), linked.jid);
    assert!(linked.jid.starts_with("628912344551:"), "{}", linked.jid);
    let accounts = sandbox.accounts();
    assert_eq!(accounts.len(), 1);
    assert!(accounts[0].connected, "{accounts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_with_an_altered_signature_is_refused_and_links_nothing() {
    let sandbox = Arc::new(passkey_sandbox(6, 5).await);
    let mut client = TestClient::new(&sandbox).await;
    authenticate_with(&client, &sandbox, |sandbox, options| {
        let signed = sandbox
            .passkey_assertion(PHONE, options)
            .expect("the phone holds the passkey");
        let mut forged: Value = serde_json::from_str(&signed).expect("JSON");
        let mut signature = URL_SAFE_NO_PAD
            .decode(
                forged["response"]["signature"]
                    .as_str()
                    .expect("a signature"),
            )
            .expect("base64url");
        // The last byte is the low byte of the DER's `s`: the signature still parses, but no
        // longer verifies.
        *signature.last_mut().expect("not empty") ^= 0x01;
        forged["response"]["signature"] = json!(URL_SAFE_NO_PAD.encode(signature));
        forged.to_string()
    })
    .await;
    let (qr, _) = client.next_qr().await;

    let outcome = sandbox.scan_qr_as(PHONE, &qr).await;
    let (error, continuation) = passkey_error(&mut client).await;

    match &outcome {
        Err(PhoneError::PasskeyRejected(why)) => {
            assert!(why.contains("signature"), "{why}");
            assert!(why.contains(PHONE), "{why}");
        }
        other => panic!("expected PasskeyRejected, got {other:?}"),
    }
    assert!(!continuation, "refused at the prologue: {error}");
    assert!(error.contains("passkey_prologue"), "{error}");
    assert!(sandbox.accounts().is_empty(), "nothing was linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_for_another_challenge_is_refused_and_links_nothing() {
    let sandbox = Arc::new(passkey_sandbox(6, 5).await);
    let mut client = TestClient::new(&sandbox).await;
    authenticate_with(&client, &sandbox, |sandbox, options| {
        let mut replayed: Value = serde_json::from_str(options).expect("JSON options");
        replayed["challenge"] = json!(URL_SAFE_NO_PAD.encode(b"a challenge from another link"));
        sandbox
            .passkey_assertion(PHONE, &replayed.to_string())
            .expect("the phone signs any challenge")
    })
    .await;
    let (qr, _) = client.next_qr().await;

    let outcome = sandbox.scan_qr_as(PHONE, &qr).await;
    let (error, continuation) = passkey_error(&mut client).await;

    match &outcome {
        Err(PhoneError::PasskeyRejected(why)) => assert!(why.contains("challenge"), "{why}"),
        other => panic!("expected PasskeyRejected, got {other:?}"),
    }
    assert!(!continuation, "refused at the prologue: {error}");
    assert!(sandbox.accounts().is_empty(), "nothing was linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_request_nobody_answers_ends_the_link_at_its_timeout() {
    // At scale 50 the phone waits 60 s / 50 = 1.2 s; 30 refs keep the client's QR series
    // (1.2 s + 29 × 0.4 s) from ending first.
    let sandbox = passkey_sandbox(30, 50).await;
    let mut client = TestClient::new(&sandbox).await;
    let (qr, _) = client.next_qr().await;

    let outcome = sandbox.scan_qr_as(PHONE, &qr).await;
    let options = client.passkey_request().await;

    match &outcome {
        Err(PhoneError::PasskeyTimeout {
            waiting_for, after, ..
        }) => {
            assert_eq!(*waiting_for, "passkey_prologue");
            assert_eq!(after.as_millis(), 1_200);
        }
        other => panic!("expected PasskeyTimeout, got {other:?}"),
    }
    assert!(options.contains("web.whatsapp.com"), "{options}");
    assert!(sandbox.accounts().is_empty(), "nothing was linked");
}

async fn post(sandbox: &Sandbox, body: Value) -> (u16, Value) {
    control_post(
        &sandbox.http_url(),
        "/phone/passkey/assert",
        &body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_signs_an_assertion_with_a_passkey_phones_passkey() {
    let sandbox = passkey_sandbox(6, 1).await;
    let challenge = URL_SAFE_NO_PAD.encode(b"thirty-two bytes of a challenge!");
    let options = json!({
        "challenge": challenge,
        "rpId": "web.whatsapp.com",
        "userVerification": "required",
        "timeout": 60000,
    });

    let (status, as_object) = post(&sandbox, json!({ "phone": PHONE, "options": options })).await;
    let (status_of_string, as_string) = post(
        &sandbox,
        json!({ "phone": PHONE, "options": options.to_string() }),
    )
    .await;

    assert_eq!(status, 200, "{as_object}");
    assert_eq!(status_of_string, 200, "{as_string}");
    for assertion in [&as_object, &as_string] {
        assert_eq!(assertion["type"], "public-key");
        assert_eq!(assertion["id"], assertion["rawId"]);
        let response = &assertion["response"];
        for field in ["authenticatorData", "signature", "userHandle"] {
            let value = response[field].as_str().unwrap_or_default();
            assert!(
                URL_SAFE_NO_PAD.decode(value).is_ok(),
                "{field}: {assertion}"
            );
        }
        let client_data = URL_SAFE_NO_PAD
            .decode(response["clientDataJSON"].as_str().unwrap_or_default())
            .expect("clientDataJSON is base64url");
        let client_data: Value = serde_json::from_slice(&client_data).expect("JSON");
        assert_eq!(client_data["type"], "webauthn.get");
        assert_eq!(client_data["challenge"], challenge);
        assert_eq!(client_data["origin"], "https://web.whatsapp.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_refuses_assertions_for_personal_phones_and_malformed_options() {
    let sandbox = passkey_sandbox(6, 1).await;
    sandbox
        .set_account("628912344552", AccountKind::Personal)
        .expect("a valid phone");
    let options = json!({ "challenge": URL_SAFE_NO_PAD.encode(b"challenge") });

    let (status, body) = post(
        &sandbox,
        json!({ "phone": "628912344552", "options": options }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("passkey"), "{body}");

    for malformed in [
        json!({ "rpId": "web.whatsapp.com" }),
        json!({ "challenge": "not base64url!" }),
        json!({ "challenge": "YWJj", "rpId": "example.com" }),
        json!("not json"),
        json!(5),
    ] {
        let (status, body) = post(&sandbox, json!({ "phone": PHONE, "options": malformed })).await;
        assert_eq!(status, 400, "{malformed}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("options"), "{malformed}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_account_chosen_in_the_control_api_links_by_pairing_code() {
    let sandbox = sandbox(6, 5).await;
    let mut client = TestClient::new(&sandbox).await;
    let code = client.request_pair_code(PHONE).await;

    let body = json!({ "phone": PHONE, "code": code, "account": "passkey" }).to_string();
    let base = sandbox.http_url();
    let enter = control_post(&base, "/phone/pair-code", &body);
    let companion = client.prove_passkey(&sandbox, PHONE);
    let ((status, linked), passkey_code) = tokio::join!(enter, companion);
    client.connected().await;

    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["passkey_code"], passkey_code);
    assert_eq!(sandbox.accounts().len(), 1);
}
