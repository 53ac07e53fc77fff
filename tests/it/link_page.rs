//! The link page in a real browser (headless Chromium, `support::browser`): a customer opens the
//! `link_url` of `POST /devices/{id}/link` and links their phone by QR code or by pairing code,
//! or finds an expired link's page. The page may talk to the gateway only: no request elsewhere,
//! no console error, no uncaught exception.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use wagate_core::domain::TenantId;

use crate::support::browser::{Browser, Report};
use crate::support::{Api, Gateway, Options, decode_qr};

/// How long the page may take to show a code or the outcome.
const WAIT: Duration = Duration::from_secs(30);

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-screenshots")
        .join(name)
}

/// A link page's URL for `device`, made as an operator makes it.
async fn link_url(gateway: &Gateway, api: &Api, device: &str) -> String {
    let answer = api.post(&format!("/devices/{device}/link")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let url = answer.body["results"]["link_url"]
        .as_str()
        .expect("link_url")
        .to_string();
    assert!(
        url.starts_with(&format!("{}/link/", gateway.base)),
        "the browser opens the gateway's own address: {url}"
    );
    url
}

/// `628123456789:3@s.whatsapp.net` → `+628123456789`, as the page shows a linked number.
fn shown_number(jid: &str) -> String {
    let user = jid.split([':', '@']).next().unwrap_or_default();
    format!("+{user}")
}

/// The page talked to the gateway only and reported no error.
fn assert_well_behaved(report: &Report, base: &str) {
    assert!(
        report.foreign_requests(base).is_empty(),
        "requests beyond the gateway: {:?}",
        report.foreign_requests(base)
    );
    assert!(
        report.console_errors.is_empty(),
        "console errors: {:?}",
        report.console_errors
    );
    assert!(
        report.page_errors.is_empty(),
        "uncaught exceptions: {:?}",
        report.page_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_code_scanned_off_the_page_links_the_device_and_the_page_shows_the_number() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    // Real time: the first code lives 60 s, longer than the screenshot and the scan take.
    let gateway = Gateway::start_with(Options::real_time()).await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let url = link_url(&gateway, &api, "d1").await;

    assert_eq!(browser.open(&url).await, 200);
    let size = browser.wait_image("#qr", WAIT).await;
    assert_eq!(size, (512, 512), "the page shows the gateway's QR image");
    assert!(
        browser
            .text("#countdown")
            .await
            .parse::<u32>()
            .is_ok_and(|s| s > 0),
        "a countdown of the code's seconds is running"
    );
    let qr_view = browser
        .screenshot(&screenshot_path("link-qr-view.png"))
        .await;
    // The phone reads the code off the screen, as a camera would.
    let qr = decode_qr(&std::fs::read(&qr_view).expect("the screenshot"));
    let scanned_at = tokio::time::Instant::now();
    let linked = gateway.sandbox.scan_qr(&qr).await.expect("linked");
    browser.wait_visible("#success", WAIT).await;
    let took = scanned_at.elapsed();

    assert_eq!(
        browser.text("#linked-number").await,
        shown_number(&linked.jid),
        "the number of {}",
        linked.jid
    );
    let success_view = browser
        .screenshot(&screenshot_path("link-success-view.png"))
        .await;
    println!("link page, QR view screenshot: {}", qr_view.display());
    println!(
        "link page, success view screenshot: {}",
        success_view.display()
    );
    println!("link page, scan to success view: {} ms", took.as_millis());
    api.wait_logged_in("d1").await;
    assert_well_behaved(&browser.report().await, &gateway.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_asked_for_on_the_page_links_the_device_and_the_page_shows_the_number() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let gateway = Gateway::start_with(Options::real_time()).await;
    let api = gateway.tenant("acme").await;
    api.create_device("d1").await;
    let url = link_url(&gateway, &api, "d1").await;

    assert_eq!(browser.open(&url).await, 200);
    browser.wait_image("#qr", WAIT).await;
    // As a person types it: the page keeps the digits.
    browser.fill("#phone", "+62 891-2344-551").await;
    browser.click("#phone-submit").await;
    browser.wait_visible("#pair-code", WAIT).await;
    let code = browser.text("#pair-code").await;
    assert!(
        code.len() == 9 && code.as_bytes()[4] == b'-',
        "a code as XXXX-XXXX: {code:?}"
    );
    let linked = gateway
        .sandbox
        .enter_pair_code("628912344551", &code)
        .await
        .expect("the phone links the device with the code on the page");
    browser.wait_visible("#success", WAIT).await;

    assert_eq!(browser.text("#linked-number").await, "+628912344551");
    assert_eq!(shown_number(&linked.jid), "+628912344551");
    api.wait_logged_in("d1").await;
    let report = browser.report().await;
    assert!(
        report
            .requests
            .iter()
            .any(|url| url.ends_with("/login/code?phone=628912344551")),
        "the page asked for a code for the digits typed: {:?}",
        report.requests
    );
    assert_well_behaved(&report, &gateway.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_opens_a_page_that_says_so() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("acme").await;
    api.create_device("d1").await;
    let url = link_url(&gateway, &api, "d1").await;
    expire_links(&gateway, tenant).await;

    assert_eq!(browser.open(&url).await, 410);
    browser.wait_visible("#link-gone", WAIT).await;

    assert_eq!(
        browser
            .attribute("#link-gone", "data-reason")
            .await
            .as_deref(),
        Some("expired")
    );
    let text = browser.text("#link-gone").await;
    assert!(text.to_lowercase().contains("expired"), "{text}");
    assert!(
        text.contains("ask whoever sent you this link for a new one"),
        "{text}"
    );
    let mut report = browser.report().await;
    // Chromium notes a document's error status in the console itself; that is the page's 410,
    // not an error of the page.
    report.console_errors.retain(|(text, at)| {
        !(at == &url && text.starts_with("Failed to load resource") && text.contains("410"))
    });
    assert_well_behaved(&report, &gateway.base);
}

/// Moves the expiry of every link of `tenant` into the past.
async fn expire_links(gateway: &Gateway, tenant: TenantId) {
    let moved = gateway
        .sql()
        .await
        .execute(
            "UPDATE link_tokens SET expires_at = now() - interval '1 second' WHERE tenant_id = $1",
            &[&tenant.0],
        )
        .await
        .expect("the update");
    assert_eq!(moved, 1, "one link");
}
