//! Measures webhook delivery through the durable outbox to a local receiver: event-to-delivery
//! latency at low load (p50/p99), then sustained deliveries per second with events recorded
//! as fast as four writers can.
//!
//! `cargo run --release --features sandbox --example webhook_bench -- 20000`

use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::receiver::Receiver;
use support::{Gateway, state_changes};
use wagate_core::domain::{DeviceId, TenantId};
use wagate_core::store::{DeviceChange, Store};

const WRITERS: usize = 4;
const BATCH: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn record(store: &Store, tenant: TenantId, device: &DeviceId, n: usize) {
    store
        .tenant(tenant)
        .record_events(device, DeviceChange::default(), state_changes(n))
        .await
        .expect("recorded");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let gateway = Gateway::start().await;
    let (tenant, api) = gateway.tenant_with_id("bench").await;
    let receiver = Receiver::start().await;
    let created = api
        .post_json(
            "/webhooks",
            serde_json::json!({ "url": receiver.url, "events": ["state_changed"] }),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.body);
    let mut devices = Vec::new();
    for i in 0..WRITERS {
        let id = format!("bench-{i}");
        api.create_device(&id).await;
        devices.push(DeviceId::parse(&id).unwrap());
    }

    // Latency: one event at a time, each recorded after the previous one arrived.
    let samples = 500;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let recorded_at = Instant::now();
        record(&gateway.store, tenant, &devices[0], 1).await;
        let arrived = receiver.wait_count(i + 1, Duration::from_secs(10)).await;
        latencies.push(arrived.into_std() - recorded_at);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    println!(
        "event-to-delivery latency at low load ({samples} events, one at a time): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    // Throughput: writers record `total` events in batches while the dispatcher delivers.
    let already = receiver.count();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for device in devices.clone() {
        let store = gateway.store.clone();
        writers.spawn(async move {
            for _ in 0..total / WRITERS / BATCH {
                record(&store, tenant, &device, BATCH).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let written = started.elapsed();
    let expected = already + (total / WRITERS / BATCH) * WRITERS * BATCH;
    let last = receiver
        .wait_count(expected, Duration::from_secs(600))
        .await;
    let delivered = last.into_std() - started;
    let n = expected - already;
    println!(
        "recorded {n} events in {:.2} s ({:.0}/s); all delivered after {:.2} s: {:.0} deliveries/s sustained",
        written.as_secs_f64(),
        n as f64 / written.as_secs_f64(),
        delivered.as_secs_f64(),
        n as f64 / delivered.as_secs_f64(),
    );
}
