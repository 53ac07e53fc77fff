//! Many nodes, one PostgreSQL: real `wagate serve` processes sharing a database and a sandbox.
//! Devices spread over the nodes, any node answers for any device, a dead or paused node's
//! devices come back on the others without a scan, a stopping node hands its devices over, a
//! joining node takes its share, and webhooks lose nothing through it all.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::support::cluster::{Cluster, LEASE_EXPIRY_SECS, names, past_moves, wait_secs};
use crate::support::receiver::Receiver;
use crate::support::{eventually, showing_qr};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_devices_and_any_node_answers_for_any_of_them() {
    let cluster = Cluster::start(3).await;
    let devices = names("spread", 300);
    cluster.link(&devices, 24).await;

    let shares = cluster.shares(&devices).await;
    assert_eq!(shares.values().sum::<usize>(), devices.len(), "{shares:?}");
    for node in cluster.running_ids() {
        let share = shares.get(&node).copied().unwrap_or(0) * 100 / devices.len();
        assert!(
            (20..=45).contains(&share),
            "node {node} owns {share} % of the devices: {shares:?}"
        );
    }
    assert_eq!(
        cluster.sandbox.accounts().len(),
        devices.len(),
        "one link per device"
    );

    // Every node answers for every device, whichever owns it.
    for i in cluster.running() {
        let api = cluster.api(i);
        for device in devices.iter().step_by(37) {
            let status = api.get(&format!("/devices/{device}/status")).await;
            assert_eq!(status.status, StatusCode::OK, "{}", status.body);
            assert_eq!(
                status.body["results"]["is_logged_in"], true,
                "{device} via {i}"
            );
        }
    }

    // A pending login through one node continues through another.
    let api = cluster.api(0);
    api.create_device("pending").await;
    let first = api.get("/devices/pending/login").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let again = cluster.api(1).get("/devices/pending/login").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let link = |answer: &crate::support::Answer| {
        answer.body["results"]["qr_link"]
            .as_str()
            .expect("qr_link")
            .to_string()
    };
    let (first_link, again_link) = (link(&first), link(&again));
    assert!(
        first_link.starts_with(&cluster.node(0).process.base),
        "{first_link}"
    );
    assert!(
        again_link.starts_with(&cluster.node(1).process.base),
        "the link is on the node that answered: {again_link}"
    );
    let image = |link: &str| link.rsplit('/').next().unwrap_or_default().to_string();
    assert_eq!(
        image(&first_link),
        image(&again_link),
        "the same code, from the one session of the device"
    );

    // Logout and delete through nodes other than the owner.
    let owners = cluster.devices().await;
    let ids: HashMap<usize, i32> = cluster
        .running()
        .into_iter()
        .map(|i| (i, cluster.node(i).id))
        .collect();
    let via_other = |device: &str| -> usize {
        let owner = owners[device].0.expect("owned");
        *ids.iter()
            .find(|(_, id)| **id != owner)
            .expect("another node")
            .0
    };
    let logout = past_moves(|| async {
        cluster
            .api(via_other(&devices[0]))
            .post(&format!("/devices/{}/logout", devices[0]))
            .await
    })
    .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    cluster.api(0).wait_state(&devices[0], "disconnected").await;
    let deleted = past_moves(|| async {
        cluster
            .api(via_other(&devices[1]))
            .delete(&format!("/devices/{}", devices[1]))
            .await
    })
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let gone = cluster
        .api(2)
        .get(&format!("/devices/{}", devices[1]))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    cluster.assert_one_connection_per_device(0);
}

/// A node whose lease of a device another node took, before its heartbeat has noticed, neither
/// unlinks the device on WhatsApp nor answers its logout as done: the caller is told the device
/// is moving, and the device stays linked as its new owner runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_a_node_that_lost_the_devices_lease_is_not_answered_as_done() {
    // Heartbeats a minute apart: the node cannot notice the loss before the logout.
    let cluster = Cluster::start_with_leases(1, 60, 180).await;
    let devices = names("fenced", 1);
    cluster.link(&devices, 1).await;
    let device = &devices[0];
    let sql = cluster.sql().await;
    // Another node, alive as nodes are while they hold their lock, takes the device's lease.
    let other: i32 = sql
        .query_one(
            "INSERT INTO nodes (public_url) VALUES ('http://other.invalid') RETURNING id",
            &[],
        )
        .await
        .expect("another node")
        .get(0);
    sql.execute(
        "SELECT pg_advisory_lock($1, $2)",
        &[&wagate_core::store::NODE_LOCK_CLASS, &other],
    )
    .await
    .expect("its lock");
    let taken = sql
        .execute(
            "UPDATE devices SET lease_node = $1, lease_epoch = lease_epoch + 1,
                lease_expires_at = now() + interval '1 hour'
             WHERE device_id = $2",
            &[&other, device],
        )
        .await
        .expect("take the lease");
    assert_eq!(taken, 1);

    let logout = cluster
        .api(0)
        .post(&format!("/devices/{device}/logout"))
        .await;
    assert_eq!(
        logout.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        logout.body
    );
    assert_eq!(logout.body["code"], "DEVICE_MOVING", "{}", logout.body);
    let row = sql
        .query_one(
            "SELECT state, jid IS NOT NULL FROM devices WHERE device_id = $1",
            &[device],
        )
        .await
        .expect("the device");
    assert_eq!(row.get::<_, String>(0), "logged_in");
    assert!(row.get::<_, bool>(1), "the device keeps its link");
    assert_eq!(
        cluster.sandbox.accounts().len(),
        1,
        "the account still has its companion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_devices_are_back_on_the_survivors_without_a_scan() {
    let mut cluster = Cluster::start(3).await;
    let devices = names("failover", 60);
    cluster.link(&devices, 16).await;
    let accounts = cluster.sandbox.accounts().len();
    let victim = cluster.node(0).id;
    let moved = cluster.shares(&devices).await[&victim];

    cluster.take(0).process.kill();
    let survivors = cluster.running_ids();
    cluster.wait_logged_in_on(&devices, &survivors).await;

    assert_eq!(
        cluster.sandbox.accounts().len(),
        accounts,
        "no device was linked again"
    );
    for device in devices.iter().step_by(7) {
        let status = cluster
            .api(1)
            .get(&format!("/devices/{device}/status"))
            .await;
        assert_eq!(status.body["results"]["is_logged_in"], true, "{device}");
    }
    cluster.assert_one_connection_per_device(moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_devices_over_within_two_seconds_each() {
    let mut cluster = Cluster::start(3).await;
    let devices = names("handover", 60);
    cluster.link(&devices, 16).await;
    let leaving = cluster.node(0).id;
    let owners = cluster.devices().await;
    let moving: Vec<&String> = devices
        .iter()
        .filter(|d| owners[*d].0 == Some(leaving))
        .collect();
    assert!(!moving.is_empty());
    let jids: HashMap<String, String> = cluster
        .sql()
        .await
        .query("SELECT device_id, jid FROM devices", &[])
        .await
        .expect("jids")
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get::<_, Option<String>>(1).unwrap_or_default(),
            )
        })
        .collect();

    let stopped_at = now_ms();
    let status = cluster.take(0).process.terminate();
    assert!(status.success(), "a clean exit: {status:?}");
    cluster
        .wait_logged_in_on(&devices, &cluster.running_ids())
        .await;

    // The gap of each device, as WhatsApp saw it: from its old connection closing to its new
    // one logging in.
    let connections = cluster.connections_by_jid();
    let mut gaps = Vec::new();
    for device in &moving {
        let records = &connections[&jids[*device]];
        let closed = records
            .iter()
            .filter_map(|r| r.closed_at_ms)
            .filter(|at| *at >= stopped_at)
            .min()
            .unwrap_or_else(|| panic!("{device}'s connection closed: {records:?}"));
        let back = records
            .iter()
            .filter_map(|r| r.logged_in_at_ms)
            .filter(|at| *at >= closed)
            .min()
            .unwrap_or_else(|| panic!("{device} logged in again: {records:?}"));
        gaps.push(back - closed);
    }
    gaps.sort_unstable();
    assert!(
        gaps.last().copied().unwrap_or(0) < 2000,
        "gaps in ms: {gaps:?}"
    );
    cluster.assert_one_connection_per_device(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_loses_its_leases_writes_nothing_after_and_closes_its_sessions() {
    let mut cluster = Cluster::start(3).await;
    let devices = names("paused", 30);
    cluster.link(&devices, 16).await;
    let paused = cluster.take(0);
    let owners = cluster.devices().await;
    let moving: Vec<String> = devices
        .iter()
        .filter(|d| owners[*d].0 == Some(paused.id))
        .cloned()
        .collect();
    assert!(!moving.is_empty());

    let paused_at = now_ms();
    paused.process.signal("STOP");
    wait_secs(LEASE_EXPIRY_SECS + 1).await;
    cluster
        .wait_logged_in_on(&devices, &cluster.running_ids())
        .await;
    let sql = cluster.sql().await;
    let taken_over: HashMap<String, i64> = sql
        .query(
            "SELECT device_id, event_seq FROM devices WHERE device_id = ANY($1)",
            &[&moving],
        )
        .await
        .expect("snapshot")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // It wakes up to connections WhatsApp replaced and leases other nodes hold: whatever its
    // old sessions try to write is fenced, and they close. Alive again, it may take its share
    // back, as a node that joins does.
    paused.process.signal("CONT");
    let mut all = cluster.running_ids();
    all.insert(paused.id);
    wait_secs(2).await;
    cluster.wait_logged_in_on(&devices, &all).await;
    let connections = cluster.connections_by_jid();
    eventually("one open connection per device", || async {
        let open = cluster
            .sandbox
            .history()
            .into_iter()
            .filter(|r| r.jid.is_some() && r.closed_at_ms.is_none())
            .count();
        if open == devices.len() {
            Ok(())
        } else {
            Err(open)
        }
    })
    .await;
    let moved_jids: Vec<String> = sql
        .query(
            "SELECT jid FROM devices WHERE device_id = ANY($1)",
            &[&moving],
        )
        .await
        .expect("jids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for jid in &moved_jids {
        for old in connections[jid]
            .iter()
            .filter(|r| r.opened_at_ms < paused_at)
        {
            assert!(
                old.closed_at_ms.is_some(),
                "the paused node's connection closed: {old:?}"
            );
        }
    }
    for device in &moving {
        let after: Vec<serde_json::Value> = sql
            .query(
                "SELECT body::jsonb FROM events WHERE device_id = $1 AND seq > $2 ORDER BY seq",
                &[device, &taken_over[device]],
            )
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let dropped = after.iter().any(|e| {
            e["type"] == "logged_out"
                || (e["type"] == "state_changed" && e["data"]["to"] == "disconnected")
        });
        assert!(
            !dropped,
            "{device}: the paused node's stale session wrote: {after:?}"
        );
    }
    cluster.assert_one_connection_per_device(moving.len());
    drop(paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_its_share_without_a_login_being_lost() {
    let mut cluster = Cluster::start(2).await;
    let devices = names("join", 60);
    cluster.link(&devices, 16).await;
    // A login in progress while the node joins.
    let api = cluster.api(0);
    api.create_device("linking").await;
    let first = api.get("/devices/linking/login").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    let joined = cluster.start_node().await;
    let newcomer = cluster.node(joined).id;
    eventually("the new node taking its share", || async {
        let shares = cluster.shares(&devices).await;
        let share = shares.get(&newcomer).copied().unwrap_or(0) * 100 / devices.len();
        if (20..=45).contains(&share) {
            Ok(())
        } else {
            Err(shares)
        }
    })
    .await;
    cluster
        .wait_logged_in_on(&devices, &cluster.running_ids())
        .await;
    // The login carried on where it began (a device in the middle of one does not move):
    // scanned through the new node, it completes, and nothing interrupted it.
    cluster.scan(&cluster.api(joined), "linking").await;
    cluster.api(joined).wait_logged_in("linking").await;
    let interrupted: i64 = cluster
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE device_id = 'linking' AND type = 'login_failed'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(interrupted, 0, "the login in progress was not lost");
    cluster.assert_one_connection_per_device(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_recorded_through_a_failover() {
    let mut cluster = Cluster::start(3).await;
    let receiver = Receiver::start().await;
    let created = cluster
        .api(0)
        .post_json(
            "/webhooks",
            serde_json::json!({ "url": receiver.url, "events": ["logged_in", "state_changed", "login_failed"] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let devices = names("hooks", 30);
    cluster.link(&devices, 10).await;
    // A login left pending on the node that dies.
    let api = cluster.api(1);
    api.create_device("stranded").await;
    showing_qr(&api, "stranded").await;

    let owner_of_stranded = cluster.devices().await["stranded"].0.expect("owned");
    let victim = cluster
        .running()
        .into_iter()
        .find(|i| cluster.node(*i).id == owner_of_stranded)
        .expect("its node");
    cluster.take(victim).process.kill();
    cluster
        .wait_logged_in_on(&devices, &cluster.running_ids())
        .await;
    cluster
        .api_by(0)
        .wait_state("stranded", "disconnected")
        .await;

    let recorded: HashSet<String> = cluster
        .sql()
        .await
        .query(
            "SELECT id::text FROM events
             WHERE type IN ('logged_in', 'state_changed', 'login_failed')",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let received = receiver
        .wait_until(Duration::from_secs(30), |r| {
            r.iter()
                .map(|r| r.header("webhook-id").to_string())
                .collect::<HashSet<_>>()
                .is_superset(&recorded)
        })
        .await;
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    for delivery in &received {
        let id = delivery.header("webhook-id").to_string();
        assert_eq!(
            delivery.event()["id"],
            id.as_str(),
            "the body's id is its webhook-id"
        );
        if let Some(first) = bodies.insert(id.clone(), delivery.body.clone()) {
            assert_eq!(
                first, delivery.body,
                "a duplicate of {id} is the same event"
            );
        }
    }
    let delivered: HashSet<String> = bodies.into_keys().collect();
    let lost: Vec<_> = recorded.difference(&delivered).collect();
    assert!(lost.is_empty(), "recorded but never delivered: {lost:?}");
    let interrupted = received.iter().any(|r| {
        let event = r.event();
        event["type"] == "login_failed"
            && event["device_id"] == "stranded"
            && event["data"]["reason"] == "interrupted"
    });
    assert!(interrupted, "the stranded login was reported failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_stream_on_one_node_shows_the_logins_of_devices_on_every_node() {
    let cluster = Cluster::start(3).await;
    let mut stream = cluster
        .api(0)
        .stream("/events?types=logged_in", None)
        .await
        .unwrap_or_else(|a| panic!("a stream: {} {}", a.status, a.body));
    let devices = names("streamed", 12);
    cluster.link(&devices, 6).await;

    let owners: HashSet<i32> = cluster
        .devices()
        .await
        .values()
        .filter_map(|(owner, _)| *owner)
        .collect();
    assert!(
        owners.len() > 1,
        "the devices are on several nodes: {owners:?}"
    );
    let mut logged_in = HashSet::new();
    while logged_in.len() < devices.len() {
        let message = stream
            .next(Duration::from_secs(20))
            .await
            .expect("the stream goes on");
        if message.event == "logged_in" {
            let device = message.data["device_id"].as_str().unwrap_or_default();
            assert!(
                logged_in.insert(device.to_string()),
                "{device}'s login came once"
            );
        }
    }
    assert_eq!(logged_in, devices.into_iter().collect::<HashSet<_>>());
}
