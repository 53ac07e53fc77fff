//! `warm`: throughput and latency of the hot read paths under closed-loop load, each against
//! `GET /health` measured in the same run, so the ratio says what auth and the device look-up
//! cost whatever the machine.

use std::time::Duration;

use anyhow::{Context, Result};

use super::Bench;
use crate::load::{LoadResult, closed_loop};
use crate::table::{Row, Target};

/// The least share of `/health`'s throughput an authenticated endpoint should keep.
const RATIO_TARGET: f64 = 0.6;

/// Runs the scenario.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    let args = &bench.args;
    let duration = Duration::from_secs_f64(args.duration);
    let mut stack = bench.stack("warm").await?;
    let api = stack.api.clone();
    let device = "warm-0";
    api.create_device(device).await?;
    // One login call leaves the QR code pending: every later call answers from the session.
    api.login_qr(device).await?;

    let base = &api.base;
    let endpoints = [
        ("GET /health", format!("{base}/health"), false),
        (
            "GET /devices/{id}/status",
            format!("{base}/devices/{device}/status"),
            true,
        ),
        (
            "GET /devices/{id}/login (QR pending)",
            format!("{base}/devices/{device}/login"),
            true,
        ),
    ];
    let mut health: Option<f64> = None;
    let mut errors = 0;
    for (name, url, authenticated) in endpoints {
        eprintln!(
            "  {name}: {} connections for {:.0} s",
            args.connections, args.duration
        );
        let auth = authenticated.then(|| api.auth.clone());
        let result: LoadResult = closed_loop(&url, auth, args.connections, duration)
            .await
            .with_context(|| format!("loading {name}"))?;
        stack.check_alive()?;
        errors += result.errors;
        if let Some(e) = &result.first_error {
            eprintln!("  {name}: {} errors, first: {e}", result.errors);
        }
        let per_second = result.per_second();
        rows.push(Row::info(
            format!("warm: {name} throughput"),
            per_second,
            "req/s",
        ));
        rows.push(Row::info(
            format!("warm: {name} p50"),
            result.latencies.p50(),
            "ms",
        ));
        rows.push(Row::info(
            format!("warm: {name} p99"),
            result.latencies.p99(),
            "ms",
        ));
        match health {
            None => health = Some(per_second),
            Some(health) => rows.push(Row::new(
                format!("warm: {name} / GET /health throughput"),
                per_second / health,
                "×",
                Target::AtLeast(RATIO_TARGET),
            )),
        }
    }
    rows.push(Row::new(
        "warm: failed requests",
        errors as f64,
        "",
        Target::AtMost(0.0),
    ));
    Ok(())
}
