//! `cold`: the first login of a new device, one device at a time: the call starts a session,
//! connects to "WhatsApp" and answers with the first QR code. Nothing else runs meanwhile, so
//! this is the latency a single user sees.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Bench;
use crate::load::Latencies;
use crate::table::{Row, Target};

/// Runs the scenario.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    let n = bench.args.cold_devices;
    let mut stack = bench.stack("cold").await?;
    let api = stack.api.clone();
    let mut samples: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("cold-{i}");
        api.create_device(&id).await?;
        let started = Instant::now();
        api.login_qr(&id)
            .await
            .with_context(|| format!("the first login of {id}"))?;
        samples.push(started.elapsed());
    }
    stack.check_alive()?;
    let latencies = Latencies::new(samples);
    rows.push(Row::new(
        format!("cold: first QR of a new device p50 ({n} devices)"),
        latencies.p50(),
        "ms",
        Target::AtMost(4.0),
    ));
    rows.push(Row::new(
        "cold: first QR p99",
        latencies.p99(),
        "ms",
        Target::AtMost(8.0),
    ));
    rows.push(Row::info("cold: first QR max", latencies.max(), "ms"));
    Ok(())
}
