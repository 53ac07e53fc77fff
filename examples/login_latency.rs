//! Measures the gateway's `GET /devices/{id}/login` on cold devices against the sandbox: from
//! the request to the answer with a QR code, over real HTTP, with PostgreSQL.
//!
//! `cargo run --release --features sandbox --example login_latency`

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Gateway, Options};

const DEVICES: usize = 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let gateway = Gateway::start_with(Options {
        time_scale: 1,
        ..Options::default()
    })
    .await;
    let api = gateway.tenant("bench").await;
    let mut cold = Vec::new();
    for i in 0..DEVICES {
        let id = format!("bench-{i}");
        api.create_device(&id).await;
        let started = Instant::now();
        let answer = api.get(&format!("/devices/{id}/login")).await;
        cold.push(started.elapsed());
        assert!(answer.status.is_success(), "{}", answer.body);
    }
    let started = Instant::now();
    let warm = api.get("/devices/bench-0/login").await;
    let warm_time = started.elapsed();
    assert!(warm.status.is_success());
    cold.sort();
    let mean = cold.iter().sum::<Duration>() / cold.len() as u32;
    println!(
        "GET login on {DEVICES} cold devices: min {:?}, p50 {:?}, mean {mean:?}, max {:?}; a pending code again: {warm_time:?}",
        cold[0],
        cold[cold.len() / 2],
        cold[cold.len() - 1]
    );
}
