//! A linked device's life after login: unlinking, dropped sockets, returning clients, a second
//! login replacing the first.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::props::PropsSpec;

use crate::support::{TestClient, eventually, link_by_qr, sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_from_the_phone_logs_the_client_out() {
    let sandbox = sandbox(6, 10).await;
    let (mut client, linked) = link_by_qr(&sandbox).await;

    sandbox
        .unlink(&linked.jid)
        .await
        .expect("the device was linked");
    let (on_connect, stanza) = client
        .wait_for("LoggedOut", |e| match e {
            Event::LoggedOut(out) => Some((out.on_connect, out.raw.clone())),
            _ => None,
        })
        .await;

    assert!(
        !on_connect,
        "an online device is logged out where it stands"
    );
    let stanza = stanza.expect("the stream error that logged it out");
    let code = stanza.attrs.get("code").map(|c| c.as_str().into_owned());
    assert_eq!(
        code.as_deref(),
        Some("401"),
        "as WhatsApp sends it: {stanza:?}"
    );
    let conflict = stanza
        .children()
        .and_then(|c| c.iter().find(|n| n.tag == "conflict"))
        .and_then(|c| c.attrs.get("type").map(|t| t.as_str().into_owned()));
    assert_eq!(conflict.as_deref(), Some("device_removed"), "{stanza:?}");
    assert!(sandbox.accounts().is_empty());
    let again = sandbox.unlink(&linked.jid).await;
    assert!(
        matches!(again, Err(wagate_sandbox::PhoneError::NotLinked(_))),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_without_a_new_scan() {
    let sandbox = sandbox(6, 10).await;
    let (mut client, linked) = link_by_qr(&sandbox).await;

    sandbox.set_outage(true);
    client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    sandbox.set_outage(false);
    client.connected().await;

    let accounts = sandbox.accounts();
    assert_eq!(accounts.len(), 1, "no second device was linked");
    assert_eq!(accounts[0].jid, linked.jid);
    assert!(accounts[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_logs_back_in_from_its_store() {
    let sandbox = sandbox(6, 10).await;
    let (client, linked) = link_by_qr(&sandbox).await;
    let store = client.stop().await;

    let mut restarted = TestClient::with_backend(&sandbox, store).await;
    restarted.connected().await;

    assert_eq!(
        restarted.client.pn().map(|j| j.to_string()).as_deref(),
        Some(linked.jid.as_str())
    );
    assert!(sandbox.accounts()[0].connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_device_is_refused_at_login() {
    let sandbox = sandbox(6, 10).await;
    let (client, linked) = link_by_qr(&sandbox).await;
    let store = client.stop().await;
    sandbox.unlink(&linked.jid).await.expect("linked");

    let mut restarted = TestClient::with_backend(&sandbox, store).await;
    let on_connect = restarted
        .wait_for("LoggedOut", |e| match e {
            Event::LoggedOut(out) => Some(out.on_connect),
            _ => None,
        })
        .await;

    assert!(on_connect, "the refusal comes at login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ab_config_has_a_version_and_is_not_resent_to_a_client_that_holds_it() {
    let sandbox = sandbox(6, 10).await;
    let (client, _) = link_by_qr(&sandbox).await;

    let first = client
        .client
        .execute(PropsSpec::new())
        .await
        .expect("the config is answered");
    let hash = first.hash.clone().expect("a version to ask with next time");
    let again = client
        .client
        .execute(PropsSpec::with_hash(hash.clone()))
        .await
        .expect("the config is answered");

    assert!(first.refresh.is_some_and(|r| r > 0), "{first:?}");
    assert!(!first.experiment_props.is_empty(), "{first:?}");
    assert_eq!(again.hash.as_deref(), Some(hash.as_str()));
    assert!(again.experiment_props.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_as_the_same_device_replaces_the_first_in_the_history() {
    let started_ms = wall_clock_ms();
    let sandbox = sandbox(6, 10).await;
    let (mut first, linked) = link_by_qr(&sandbox).await;

    // The same store, so the same device and Noise key: the server takes it for the same device
    // logging in again from elsewhere.
    let mut second = TestClient::with_backend(&sandbox, Arc::clone(&first.backend)).await;
    second.connected().await;
    first
        .wait_for("StreamReplaced", |e| {
            matches!(e, Event::StreamReplaced(_)).then_some(())
        })
        .await;
    second.stop().await;
    eventually("every connection is closed", || {
        sandbox.history().iter().all(|r| r.closed_at_ms.is_some())
    })
    .await;

    let history = sandbox.history();
    let logins: Vec<_> = history
        .iter()
        .filter(|r| r.jid.as_deref() == Some(linked.jid.as_str()))
        .collect();
    let [old, new] = logins[..] else {
        panic!("one login per client: {history:#?}");
    };
    assert!(old.replaced && !new.replaced, "{history:#?}");
    assert_eq!(sandbox.replaced_total(), 1);
    for r in [old, new] {
        let logged_in = r.logged_in_at_ms.expect("a login time");
        let closed = r.closed_at_ms.expect("a close time");
        assert!(
            started_ms <= r.opened_at_ms && r.opened_at_ms <= logged_in && logged_in <= closed,
            "wall-clock times in order, from {started_ms}: {r:?}"
        );
    }
    assert!(
        new.logged_in_at_ms <= old.closed_at_ms,
        "the old socket is closed for the new login: {history:#?}"
    );
    assert!(
        history.iter().any(|r| r.jid.is_none() && !r.replaced),
        "the registration before pairing logged in as nobody: {history:#?}"
    );
}

fn wall_clock_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970");
    u64::try_from(since_epoch.as_millis()).expect("milliseconds fit in u64")
}
