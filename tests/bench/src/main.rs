//! `wagate-bench`: benchmarks of the real binaries. It starts a throwaway PostgreSQL, then per
//! scenario a fresh database, a standalone `wagate-sandbox` and `wagate serve` as processes,
//! drives them over HTTP and prints one markdown table of figures against their targets.
//!
//! Run it with `tests/bench/run` (which builds both binaries in release mode first).

mod api;
mod load;
mod processes;
mod receiver;
mod scenarios;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::processes::{Postgres, raise_open_files_limit};
use crate::scenarios::Bench;
use crate::table::{Met, Row};

/// Benchmarks of the real wagate binaries. Defaults run every scenario in under 10 minutes on
/// a 2-core machine.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// Scenarios to run (repeat or comma-separate): warm, cold, storm, restore, webhooks,
    /// memory. All when absent.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The `wagate` binary, built with `--features sandbox`; default: next to this one.
    #[arg(long)]
    wagate: Option<PathBuf>,
    /// The `wagate-sandbox` binary; default: next to this one.
    #[arg(long)]
    sandbox: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where the children's logs go; default: a new directory in the temporary directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Run PostgreSQL with fsync on (off by default, as in the tests).
    #[arg(long)]
    fsync: bool,

    /// warm: seconds each endpoint is loaded.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// warm: concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// cold: new devices logged in one at a time.
    #[arg(long, default_value_t = 50)]
    pub cold_devices: usize,
    /// storm: devices logged in at once.
    #[arg(long, default_value_t = 1000)]
    pub storm_devices: usize,
    /// storm: concurrent workers.
    #[arg(long, default_value_t = 100)]
    pub storm_concurrency: usize,
    /// restore: linked devices brought back by a restart.
    #[arg(long, default_value_t = 1000)]
    pub restore_devices: usize,
    /// restore, memory: devices linked at once.
    #[arg(long, default_value_t = 32)]
    pub link_concurrency: usize,
    /// webhooks: events of the latency run, one at a time.
    #[arg(long, default_value_t = 500)]
    pub webhook_samples: usize,
    /// webhooks: events of the throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub webhook_events: usize,
    /// memory: device counts, reached in turn by one gateway.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub memory_devices: Vec<usize>,
    /// memory: seconds of quiet after linking before memory is read.
    #[arg(long, default_value_t = 10.0)]
    pub quiet: f64,
    /// memory: seconds over which idle CPU is measured (20, not 60: linking 10,000 devices
    /// already takes most of the run on 2 cores).
    #[arg(long, default_value_t = 20.0)]
    pub idle_window: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wagate-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wagate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenarios; whether every one of them ran to the end.
async fn run(args: Args) -> Result<bool> {
    let chosen = chosen_scenarios(&args.only)?;
    let files = raise_open_files_limit()?;
    let here = std::env::current_exe().context("locating this executable")?;
    let dir = here.parent().context("this executable has no directory")?;
    let wagate = binary(args.wagate.clone(), dir, "wagate", "--wagate")?;
    let sandbox = binary(args.sandbox.clone(), dir, "wagate-sandbox", "--sandbox")?;
    let log_dir = match &args.log_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "wagate-bench-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        )),
    };
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the log directory {}", log_dir.display()))?;

    let header = table::machine_header();
    eprintln!("{header}");
    eprintln!(
        "open files: {files}; binaries: {}, {}; child logs in {}",
        wagate.display(),
        sandbox.display(),
        log_dir.display()
    );
    let postgres = Postgres::start(args.fsync).await?;
    let markdown_file = args.markdown.clone();
    let bench = Bench::new(args, postgres, wagate, sandbox, log_dir);

    let mut rows: Vec<Row> = Vec::new();
    let mut all_ran = true;
    for name in &chosen {
        eprintln!("\n## {name}");
        let started = Instant::now();
        let first = rows.len();
        let outcome = bench.run(name, &mut rows).await;
        if let Err(e) = &outcome {
            all_ran = false;
            rows.push(Row::failed(name, e));
        }
        // The scenario's figures as soon as it is over; the table repeats them at the end.
        for row in &rows[first..] {
            println!("{}", row.line());
        }
        eprintln!("  ({name} took {:.0} s)", started.elapsed().as_secs_f64());
    }

    let table = table::markdown(&header, &rows);
    println!("\n{table}");
    if let Some(file) = &markdown_file {
        std::fs::write(file, &table)
            .with_context(|| format!("writing the table to {}", file.display()))?;
    }
    let missed = rows.iter().filter(|r| r.met == Met::No).count();
    if missed > 0 {
        eprintln!("{missed} figures missed their targets (not a failure of the run)");
    }
    Ok(all_ran)
}

/// The scenarios `--only` names, in the order of a full run; all when it names none.
fn chosen_scenarios(only: &[String]) -> Result<Vec<&'static str>> {
    let wanted: Vec<&str> = only
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(unknown) = wanted.iter().find(|w| !scenarios::ALL.contains(w)) {
        bail!(
            "--only {unknown}: no such scenario; choose from {}",
            scenarios::ALL.join(", ")
        );
    }
    Ok(scenarios::ALL
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(s))
        .collect())
}

/// The binary given as `flag_name` (`given`), or `name` in `dir`; it must exist.
fn binary(given: Option<PathBuf>, dir: &Path, name: &str, flag_name: &str) -> Result<PathBuf> {
    let path = given.unwrap_or_else(|| dir.join(name));
    if !path.is_file() {
        bail!(
            "no {name} binary at {}: build it (tests/bench/run does) or pass {flag_name}",
            path.display()
        );
    }
    Ok(path)
}
