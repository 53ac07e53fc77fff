//! `memory`: what a linked device costs the gateway process at rest. One fresh gateway links
//! devices up to each N in turn (1,000, then 9,000 more for 10,000); once they are all logged
//! in and the process had time to settle, its resident memory is compared with what it held
//! right after start with none, and its CPU time is read over an idle window (keepalives and
//! timers only). Growing one gateway rather than starting one per N saves linking the smaller
//! counts twice, and the larger count is measured on a process that has lived longer, as a
//! real one does.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{Bench, Stack, link_devices};
use crate::processes::{cpu_time, rss_bytes};
use crate::table::{Row, Target};

const MIB: f64 = 1024.0 * 1024.0;
/// How long after "listening on" the empty process is left before its memory is read: the
/// start-up's background tasks (restore, membership, housekeeping) run their first round.
const SETTLE_AFTER_START: Duration = Duration::from_secs(1);

/// Runs the scenario on one stack, N by N in increasing order.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    let args = &bench.args;
    let mut counts = args.memory_devices.clone();
    counts.sort_unstable();
    counts.dedup();
    let mut stack = bench.stack("memory").await?;
    let pid = stack.gateway.proc.pid();
    tokio::time::sleep(SETTLE_AFTER_START).await;
    let empty = rss_bytes(pid)?;
    let mut linked = 0;
    for n in counts {
        one(bench, &mut stack, empty, linked..n, rows)
            .await
            .with_context(|| format!("with {n} devices"))?;
        linked = n;
    }
    Ok(())
}

/// Links the devices of `more`, then measures with all `more.end` of them.
async fn one(
    bench: &Bench,
    stack: &mut Stack,
    empty: u64,
    more: std::ops::Range<usize>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let args = &bench.args;
    let pid = stack.gateway.proc.pid();
    let n = more.end;
    eprintln!(
        "  N = {n}: linking {} more, {} at a time",
        more.len(),
        args.link_concurrency
    );
    let linking = link_devices(&stack.api, "mem", more.clone(), args.link_concurrency)
        .await
        .context("linking the devices")?;
    rows.push(Row::info(
        format!("memory: linking devices {}–{n} took", more.start + 1),
        linking.as_secs_f64(),
        "s",
    ));
    eprintln!(
        "  N = {n}: linked in {:.1} s; {:.0} s of quiet",
        linking.as_secs_f64(),
        args.quiet
    );
    tokio::time::sleep(Duration::from_secs_f64(args.quiet)).await;
    stack.check_alive()?;
    let full = rss_bytes(pid)?;
    let per_device = (full as f64 - empty as f64) / MIB / n as f64;
    rows.push(Row::info(
        format!("memory: gateway RSS empty → {n} devices"),
        full as f64 / MIB,
        &format!("MiB (from {:.1} MiB)", empty as f64 / MIB),
    ));
    rows.push(Row::new(
        format!("memory: RSS per linked device ({n} devices)"),
        per_device,
        "MiB",
        Target::AtMost(0.15),
    ));

    eprintln!("  N = {n}: idle CPU over {:.0} s", args.idle_window);
    let window = Duration::from_secs_f64(args.idle_window);
    let cpu_before = cpu_time(pid)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let measured = started.elapsed();
    stack.check_alive()?;
    let ms_per_device_minute = cpu.as_secs_f64() * 1e3 / n as f64 / (measured.as_secs_f64() / 60.0);
    rows.push(Row::new(
        format!(
            "memory: idle CPU per device ({n} devices, {:.0} s window)",
            measured.as_secs_f64()
        ),
        ms_per_device_minute,
        "ms/min",
        Target::AtMost(0.5),
    ));
    Ok(())
}
