//! Measures logins against the sandbox with the real client at real time (time scale 1):
//! one QR login, then 50 concurrent logins (25 by QR, 25 by pairing code).
//!
//! `cargo run --release -p wagate-sandbox --example login_bench`

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{TestClient, sandbox};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sandbox = std::sync::Arc::new(sandbox(6, 1).await);

    let started = Instant::now();
    let mut client = TestClient::new(&sandbox).await;
    let (qr, _) = client.next_qr().await;
    let first_qr = started.elapsed();
    let scanned = Instant::now();
    sandbox.scan_qr(&qr).await.expect("linked");
    let linked = scanned.elapsed();
    client.connected().await;
    let connected = scanned.elapsed();
    client.stop().await;
    println!(
        "one QR login: first QR after {first_qr:?}; scan→pair-success {linked:?}; scan→Connected {connected:?}"
    );

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let sandbox = std::sync::Arc::clone(&sandbox);
        tasks.spawn(async move {
            let begun = Instant::now();
            let mut client = TestClient::new(&sandbox).await;
            if i % 2 == 0 {
                let (qr, _) = client.next_qr().await;
                sandbox.scan_qr(&qr).await.expect("linked");
            } else {
                let phone = format!("6289200{i:05}");
                let code = client.request_pair_code(&phone).await;
                sandbox
                    .enter_pair_code(&phone, &code)
                    .await
                    .expect("linked");
            }
            client.connected().await;
            client.stop().await;
            begun.elapsed()
        });
    }
    let mut each: Vec<Duration> = Vec::new();
    while let Some(d) = tasks.join_next().await {
        each.push(d.expect("login task"));
    }
    each.sort();
    println!(
        "50 concurrent logins: all Connected after {:?}; per login p50 {:?}, max {:?}; {} accounts linked",
        started.elapsed(),
        each[each.len() / 2],
        each[each.len() - 1],
        sandbox.accounts().len()
    );
}
