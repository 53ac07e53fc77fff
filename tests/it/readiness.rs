//! Readiness: `GET /ready` answers 503 `NOT_READY`, saying what is not ready and with the
//! start-up restore's progress, until the database answers with every migration applied,
//! webhook delivery runs and the restore has finished; then 200. `/health` (liveness) stays 200
//! throughout.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Answer, Api, Gateway, Options, eventually, pg};

/// Linked devices the restore test brings back.
const DEVICES: usize = 50;

/// Polls `/ready` until it is 200 and returns that answer.
async fn ready(public: &Api) -> Answer {
    eventually("/ready answering 200", || async {
        let answer = public.get("/ready").await;
        if answer.status == StatusCode::OK {
            Ok(answer)
        } else {
            Err((answer.status, answer.body))
        }
    })
    .await
}

/// Polls `/ready` until it is 503 with a message containing `about`, and returns that answer.
async fn not_ready(public: &Api, about: &str) -> Answer {
    eventually(&format!("/ready answering 503 about {about}"), || async {
        let answer = public.get("/ready").await;
        let message = answer.body["message"].as_str().unwrap_or_default();
        if answer.status == StatusCode::SERVICE_UNAVAILABLE && message.contains(about) {
            Ok(answer)
        } else {
            Err((answer.status, answer.body))
        }
    })
    .await
}

/// The envelope of a 503: `NOT_READY`, no `results`, the restore's progress in `restore`.
fn assert_not_ready_envelope(answer: &Answer) {
    assert_eq!(answer.code(), "NOT_READY", "{}", answer.body);
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not ready: ")),
        "{}",
        answer.body
    );
    assert!(answer.body["passkey_request_options"].is_null());
    assert!(answer.body.get("results").is_none(), "{}", answer.body);
    let restore = &answer.body["restore"];
    for field in ["total", "done"] {
        assert!(restore[field].is_u64(), "{field}: {}", answer.body);
    }
    assert!(restore["finished"].is_boolean(), "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_fifty_linked_devices_are_restored_and_200_once_they_are() {
    // A batch waits for its devices up to the login timeout: longer than the test needs, so the
    // restore ends only by the devices coming back.
    let gateway = Gateway::start_with(Options {
        login_timeout: Duration::from_secs(120),
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("acme").await;
    let first = ready(&gateway.anonymous()).await;
    assert_eq!(
        first.body["results"],
        json!({ "status": "ready", "restore": { "total": 0, "done": 0, "finished": true } })
    );

    let ids: Vec<String> = (0..DEVICES).map(|i| format!("d{i:02}")).collect();
    for group in ids.chunks(10) {
        join_all(group.iter().map(|id| async {
            api.create_device(id).await;
            gateway.scan_login(&api, id).await;
            api.wait_logged_in(id).await;
        }))
        .await;
    }

    // The sandbox plays an outage across the restart: no restored device can reconnect until it
    // ends, so the restore is seen running whatever the machine's speed.
    gateway.sandbox.set_outage(true);
    let gateway = gateway.restart().await;
    let public = gateway.anonymous();
    let restoring = not_ready(&public, "the linked devices are being restored").await;
    assert_not_ready_envelope(&restoring);
    let progress = restoring.body["restore"].clone();
    assert_eq!(progress["total"], DEVICES, "{progress}");
    assert!(
        progress["done"].as_u64().unwrap() < DEVICES as u64,
        "{progress}"
    );
    assert_eq!(progress["finished"], false);
    let message = restoring.body["message"].as_str().unwrap();
    assert!(message.contains(&format!("of {DEVICES} done")), "{message}");
    assert!(
        !message.contains("database") && !message.contains("webhook"),
        "only the restore is not ready: {message}"
    );
    // Liveness is not readiness.
    let health = public.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);

    gateway.sandbox.set_outage(false);
    let back = ready(&public).await;
    assert_eq!(back.code(), "SUCCESS");
    assert_eq!(back.body["message"], "ready");
    assert_eq!(
        back.body["results"],
        json!({ "status": "ready", "restore": { "total": DEVICES, "done": DEVICES, "finished": true } })
    );
    let devices = api.at(&gateway.base).get("/devices").await;
    let states: Vec<&Value> = devices.body["results"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| &d["state"])
        .collect();
    assert_eq!(states.len(), DEVICES);
    assert!(
        states.iter().all(|s| *s == "logged_in"),
        "every restored device is back: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_database_refuses_connections_and_200_once_it_is_back() {
    let gateway = Gateway::start().await;
    let public = gateway.anonymous();
    ready(&public).await;

    // From another database: a database cannot refuse the connection that alters it.
    let sql = pg::sql(&pg::with_database(gateway.database_url(), "postgres")).await;
    let database = gateway
        .sql()
        .await
        .query_one("SELECT current_database()", &[])
        .await
        .expect("the database's name")
        .get::<_, String>(0);
    sql.batch_execute(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}';"
    ))
    .await
    .expect("the database refuses connections");

    let down = not_ready(&public, "the database").await;
    assert_not_ready_envelope(&down);
    assert_eq!(
        down.body["restore"],
        json!({ "total": 0, "done": 0, "finished": true }),
        "the restore had finished"
    );
    let health = public.get("/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);

    sql.batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .await
        .expect("the database takes connections again");
    ready(&public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_database_does_not_answer_in_time() {
    let gateway = Gateway::start().await;
    let public = gateway.anonymous();
    ready(&public).await;

    // The readiness statement waits for this lock: the database is up but does not answer.
    let mut sql = gateway.sql().await;
    let locking = sql.transaction().await.expect("a transaction");
    locking
        .batch_execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("the lock");

    let slow = not_ready(&public, "the database did not answer within 1000 ms").await;
    assert_not_ready_envelope(&slow);

    locking.rollback().await.expect("the lock is released");
    ready(&public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_database_lacks_a_migration() {
    let gateway = Gateway::start().await;
    let public = gateway.anonymous();
    ready(&public).await;

    let sql = gateway.sql().await;
    let newest = sql
        .query_one(
            "DELETE FROM schema_migrations
              WHERE version = (SELECT max(version) FROM schema_migrations)
             RETURNING version, name",
            &[],
        )
        .await
        .expect("a migration's row is gone");
    let (version, name): (i32, String) = (newest.get(0), newest.get(1));

    let lacking = not_ready(&public, "lacks 1 of this wagate's migrations").await;
    assert_not_ready_envelope(&lacking);

    sql.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
        &[&version, &name],
    )
    .await
    .expect("the row is back");
    ready(&public).await;
}
