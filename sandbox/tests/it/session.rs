//! A linked device's life after login: unlinking, dropped sockets, returning clients.

use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::props::PropsSpec;

use crate::support::{TestClient, link_by_qr, sandbox};

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
