//! `storm`: many devices' first logins at once, as after a fleet-wide onboarding: every call
//! starts a session and a WhatsApp connection while the others are still being set up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Bench, create_devices};
use crate::load::Latencies;
use crate::table::{Row, Target};

/// Runs the scenario.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    let n = bench.args.storm_devices;
    let workers = bench.args.storm_concurrency.max(1);
    let mut stack = bench.stack("storm").await?;
    let api = stack.api.clone();
    create_devices(&api, "storm", n, 16)
        .await
        .context("creating the storm's devices")?;

    eprintln!("  {n} first logins, {workers} at a time");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (api, next) = (api.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut samples: Vec<Duration> = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let sent = Instant::now();
                match api.login_qr(&format!("storm-{i}")).await {
                    Ok(_) => samples.push(sent.elapsed()),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            (samples, failures)
        });
    }
    let (mut samples, mut failures) = (Vec::with_capacity(n), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (s, f) = done.context("a storm worker panicked")?;
        samples.extend(s);
        failures.extend(f);
    }
    let elapsed = started.elapsed();
    stack.check_alive()?;
    if let Some(first) = failures.first() {
        eprintln!("  {} logins failed; first: {first}", failures.len());
    }
    let latencies = Latencies::new(samples);
    rows.push(Row::new(
        format!("storm: first logins/s ({n} devices, {workers} at a time)"),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        "/s",
        Target::AtLeast(500.0),
    ));
    rows.push(Row::info("storm: login p50", latencies.p50(), "ms"));
    rows.push(Row::new(
        "storm: login p99",
        latencies.p99(),
        "ms",
        Target::AtMost(250.0),
    ));
    rows.push(Row::new(
        "storm: failed logins",
        failures.len() as f64,
        "",
        Target::AtMost(0.0),
    ));
    Ok(())
}
