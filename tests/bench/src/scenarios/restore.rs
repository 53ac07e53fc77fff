//! `restore`: a gateway restarted with many linked devices brings them all back from their
//! stored keys with no new scan. Timed from the new process's spawn until every device is
//! logged in again, by three witnesses that must all agree:
//!
//! - the sandbox holds a logged-in connection for every device, each opened after the old
//!   gateway's (its `/clients`, whose connection numbers only grow);
//! - `GET /ready` answers 200, so the gateway's start-up restore settled every device;
//! - then every device's `GET /devices/{id}/status` says `is_logged_in`. The stored state in
//!   `GET /devices` cannot witness this: a shutdown leaves it `logged_in`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt as _;

use super::{Bench, link_devices};
use crate::api::Api;
use crate::table::{Row, Target};

/// How long the restore may take before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the scenario.
pub async fn run(bench: &Bench, rows: &mut Vec<Row>) -> Result<()> {
    let n = bench.args.restore_devices;
    let mut stack = bench.stack("restore").await?;
    eprintln!(
        "  linking {n} devices, {} at a time",
        bench.args.link_concurrency
    );
    let linking = link_devices(&stack.api, "restore", 0..n, bench.args.link_concurrency)
        .await
        .context("linking the devices")?;
    rows.push(Row::info(
        format!("restore: linking {n} devices took"),
        linking.as_secs_f64(),
        "s",
    ));
    stack.check_alive()?;
    let before = stack.control.clients().await?;
    let logged_in_before = before.iter().filter(|c| c.logged_in).count();
    if logged_in_before < n {
        bail!(
            "the sandbox holds only {logged_in_before} logged-in connections of {n} before the restart"
        );
    }
    let newest_before = before.iter().map(|c| c.connection).max().unwrap_or(0);

    let stopping = stack.stop_gateway().await.context("stopping the gateway")?;
    rows.push(Row::info(
        format!("restore: SIGTERM to exit with {n} devices"),
        stopping.as_secs_f64() * 1e3,
        "ms",
    ));
    stack.start_gateway().await?;
    let spawned_at = stack.gateway.spawned_at;
    eprintln!(
        "  restarted; listening after {:.0} ms",
        spawned_at.elapsed().as_secs_f64() * 1e3
    );

    let (mut sandbox_done, mut ready_done) = (None, None);
    loop {
        let now = Instant::now();
        if now.duration_since(spawned_at) > PATIENCE {
            bail!(
                "the devices were not all back within {} s (sandbox all logged in: {sandbox_done:?}, /ready: {ready_done:?})",
                PATIENCE.as_secs()
            );
        }
        if sandbox_done.is_none() {
            let back = stack
                .control
                .clients()
                .await?
                .iter()
                .filter(|c| c.logged_in && c.connection > newest_before)
                .count();
            if back >= n {
                sandbox_done = Some(Instant::now().duration_since(spawned_at));
            }
        }
        if ready_done.is_none() && stack.api.ready().await? {
            ready_done = Some(Instant::now().duration_since(spawned_at));
        }
        if let (Some(sandbox), Some(ready)) = (sandbox_done, ready_done) {
            let mut all = sandbox.max(ready);
            let mut agreed_at_once = true;
            loop {
                let not_back = not_logged_in(&stack.api, n).await?;
                if not_back == 0 {
                    if !agreed_at_once {
                        all = spawned_at.elapsed();
                    }
                    break;
                }
                agreed_at_once = false;
                // The restore gave up on some (they carry on by themselves): the figure is
                // when the status checks agree.
                eprintln!("  /ready, but {not_back} devices are not logged in yet");
                if spawned_at.elapsed() > PATIENCE {
                    bail!(
                        "{not_back} devices still not logged in {} s after the restart",
                        PATIENCE.as_secs()
                    );
                }
                stack.check_alive()?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rows.push(Row::new(
                format!("restore: {n} devices logged in again after restart"),
                all.as_secs_f64(),
                "s",
                Target::AtMost(2.5),
            ));
            rows.push(Row::info(
                "restore: sandbox saw all logged in",
                sandbox.as_secs_f64(),
                "s",
            ));
            rows.push(Row::info(
                "restore: GET /ready 200",
                ready.as_secs_f64(),
                "s",
            ));
            return Ok(());
        }
        stack.check_alive()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many of devices `restore-0` … `restore-{n-1}` do not say `is_logged_in` right now.
async fn not_logged_in(api: &Api, n: usize) -> Result<usize> {
    let answers: Vec<Result<bool>> = futures_util::stream::iter(0..n)
        .map(|i| async move { api.logged_in(&format!("restore-{i}")).await })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut missing = 0;
    for answer in answers {
        missing += usize::from(!answer?);
    }
    Ok(missing)
}
