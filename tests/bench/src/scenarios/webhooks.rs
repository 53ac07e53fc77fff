//! `webhooks`: delivery through the durable outbox to a receiver inside the bench, once over
//! plain HTTP/1.1 and once over HTTPS with HTTP/2, each on a fresh stack. The bench records
//! the events itself, straight into the scenario's database as the engine would (the same
//! store call, in one transaction with a device change), so the figures are the outbox's and
//! the dispatcher's alone, not the login engine's.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_postgres::NoTls;
use wagate_core::domain::{DeviceId, DeviceState, TenantId};
use wagate_core::events::{EngineEventKind, NewEvent};
use wagate_core::store::{DeviceChange, Store};

use super::Bench;
use crate::load::Latencies;
use crate::receiver::{Receiver, Transport};
use crate::table::{Row, Target};

/// Writers recording at once in the throughput run, each on a device of its own.
const WRITERS: usize = 4;
/// Events per transaction in the throughput run.
const BATCH: usize = 50;

/// Runs the scenario.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    run_over(bench, Transport::Http1, rows).await?;
    run_over(bench, Transport::Https2, rows).await
}

/// Measures deliveries to a receiver reached over `transport`; the targets are judged on plain
/// HTTP/1.1, the figures of HTTPS are for comparison.
async fn run_over(bench: &Bench, transport: Transport, rows: &mut Vec<Row>) -> Result<()> {
    let samples = bench.args.webhook_samples;
    let total = bench.args.webhook_events;
    let (label, target) = match transport {
        Transport::Http1 => ("webhooks", true),
        Transport::Https2 => ("webhooks over https (HTTP/2)", false),
    };
    let judged = |target_value| {
        if target { target_value } else { Target::None }
    };
    eprintln!("  {label}");
    let mut stack = bench.stack("webhooks").await?;
    let receiver = Receiver::start(transport).await?;
    stack.api.create_webhook(&receiver.url).await?;
    let mut devices = Vec::new();
    for i in 0..WRITERS {
        let id = format!("hooks-{i}");
        stack.api.create_device(&id).await?;
        devices.push(DeviceId::parse(&id).with_context(|| format!("device id {id}"))?);
    }
    let tenant = default_tenant(&stack.database_url).await?;
    // The gateway migrated the database already; connecting applies nothing.
    let store = Store::connect(&stack.database_url)
        .await
        .context("connecting the bench's store")?;

    // Latency: one event at a time, each recorded once the previous one arrived.
    eprintln!("  latency: {samples} events one at a time");
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let recorded_at = Instant::now();
        record(&store, tenant, &devices[0], 1).await?;
        let arrived = receiver
            .wait_count(i + 1, Duration::from_secs(10))
            .await
            .with_context(|| format!("waiting for latency sample {i}"))?;
        latencies.push(arrived.saturating_duration_since(recorded_at));
    }
    let latencies = Latencies::new(latencies);
    rows.push(Row::info(
        format!("{label}: event→delivery p50 ({samples} one at a time)"),
        latencies.p50(),
        "ms",
    ));
    rows.push(Row::new(
        format!("{label}: event→delivery p99"),
        latencies.p99(),
        "ms",
        judged(Target::AtMost(3.0)),
    ));

    // Throughput: writers record batches as fast as they can while the dispatcher delivers.
    let per_writer = total / WRITERS / BATCH;
    let n = per_writer * WRITERS * BATCH;
    if n == 0 {
        bail!("--webhook-events {total} is fewer than one batch of {BATCH} per writer");
    }
    eprintln!("  throughput: {n} events, {WRITERS} writers, batches of {BATCH}");
    let already = receiver.count();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for device in devices {
        let store = store.clone();
        writers.spawn(async move {
            for _ in 0..per_writer {
                record(&store, tenant, &device, BATCH).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("a writer panicked")??;
    }
    let written = started.elapsed();
    let last = receiver
        .wait_count(already + n, Duration::from_secs(300))
        .await
        .context("waiting for the throughput run's deliveries")?;
    let delivered = last.saturating_duration_since(started);
    stack.check_alive()?;
    rows.push(Row::info(
        format!("{label}: events recorded/s ({WRITERS} writers)"),
        n as f64 / written.as_secs_f64(),
        "/s",
    ));
    rows.push(Row::new(
        format!("{label}: deliveries/s sustained ({n} events)"),
        n as f64 / delivered.as_secs_f64(),
        "/s",
        judged(Target::AtLeast(12_000.0)),
    ));
    Ok(())
}

/// Records `n` state changes of `device` with their outbox rows, as the engine does.
async fn record(store: &Store, tenant: TenantId, device: &DeviceId, n: usize) -> Result<()> {
    let kind = EngineEventKind::StateChanged {
        from: DeviceState::Disconnected,
        to: DeviceState::Connecting,
    };
    let events = (0..n).map(|_| NewEvent::from_kind(&kind)).collect();
    store
        .tenant(tenant)
        .record_events(device, DeviceChange::default(), events)
        .await
        .context("recording events")?;
    Ok(())
}

/// The id of the tenant `--basic-auth` made: the one named `default`.
async fn default_tenant(database_url: &str) -> Result<TenantId> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .context("connecting to the scenario's database")?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT id FROM tenants WHERE name = 'default'", &[])
        .await
        .context("looking up the default tenant")?;
    drop(client);
    let _ = connection.await;
    Ok(TenantId(row.get(0)))
}
