//! Measures how long a restarted gateway takes to bring N linked devices back (default 100;
//! `-- 1000` for more), and the bytes of key material stored per device.
//!
//! `cargo run --release --features sandbox --example restore_bench -- 100`

use std::time::Instant;

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Gateway, Options};
use wagate_core::domain::DeviceId;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let gateway = Gateway::start_with(Options {
        time_scale: 10,
        ..Options::default()
    })
    .await;
    let (tenant, api) = gateway.tenant_with_id("bench").await;

    let linking = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..n {
        let (api, manager, limit) = (api.clone(), gateway.manager.clone(), limit.clone());
        let sandbox_phone = format!("6281300{i:06}");
        let ws = gateway.sandbox.http_url();
        tasks.spawn(async move {
            let _permit = limit.acquire().await.expect("permit");
            let id = format!("dev-{i}");
            api.create_device(&id).await;
            let device = DeviceId::parse(&id).expect("id");
            manager.login_qr(tenant, &device).await.expect("qr");
            let qr = manager
                .current_qr(tenant, &device)
                .await
                .expect("qr")
                .expect("showing");
            let linked = reqwest::Client::new()
                .post(format!("{ws}/phone/scan"))
                .json(&serde_json::json!({ "qr": qr, "phone": sandbox_phone }))
                .send()
                .await
                .expect("scan");
            assert!(linked.status().is_success());
            api.wait_logged_in(&id).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("link task");
    }
    println!("linked {n} devices in {:?}", linking.elapsed());

    let mut bytes = 0i64;
    for i in 0..n.min(20) {
        bytes += gateway.key_bytes(tenant, &format!("dev-{i}")).await;
    }
    println!(
        "key material per device: {} bytes (mean of {})",
        bytes / n.min(20) as i64,
        n.min(20)
    );

    let restarted = Instant::now();
    let gateway = gateway.restart().await;
    let api = api.at(&gateway.base);
    for i in 0..n {
        api.wait_logged_in(&format!("dev-{i}")).await;
    }
    println!(
        "restart: all {n} devices logged in again after {:?}",
        restarted.elapsed()
    );
}
