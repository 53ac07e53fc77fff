//! The report: one row per figure with its target, rendered as a markdown table under a line
//! naming the machine and the commit measured.

use std::fmt::Write as _;
use std::process::Command;

/// What a figure is held against.
#[derive(Clone, Copy)]
pub enum Target {
    /// Met when the figure is at least this.
    AtLeast(f64),
    /// Met when the figure is at most this.
    AtMost(f64),
    /// Reported for information.
    None,
}

/// Whether a row met its target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Met {
    /// It did.
    Yes,
    /// It did not.
    No,
    /// No target.
    Info,
    /// The scenario failed before it could measure this.
    Failed,
}

/// One line of the table.
pub struct Row {
    /// What was measured, e.g. `storm: logins/s`.
    pub figure: String,
    /// The value with its unit, or why there is none.
    pub measured: String,
    /// The target with its unit, `—` for none.
    pub target: String,
    /// The verdict.
    pub met: Met,
}

impl Row {
    /// A measured `value` in `unit`, held against `target`.
    pub fn new(figure: impl Into<String>, value: f64, unit: &str, target: Target) -> Self {
        let (target_text, met) = match target {
            Target::AtLeast(t) => (
                format!("≥ {}", with_unit(t, unit)),
                if value >= t { Met::Yes } else { Met::No },
            ),
            Target::AtMost(t) => (
                format!("≤ {}", with_unit(t, unit)),
                if value <= t { Met::Yes } else { Met::No },
            ),
            Target::None => ("—".to_string(), Met::Info),
        };
        Self {
            figure: figure.into(),
            measured: with_unit(value, unit),
            target: target_text,
            met,
        }
    }

    /// A figure for information only.
    pub fn info(figure: impl Into<String>, value: f64, unit: &str) -> Self {
        Self::new(figure, value, unit, Target::None)
    }

    /// The row of a scenario that failed, saying why.
    pub fn failed(scenario: &str, error: &anyhow::Error) -> Self {
        // One line: the table cell must not break, and `|` would end it.
        let why = format!("{error:#}").replace('\n', " ").replace('|', "/");
        Self {
            figure: format!("{scenario}: scenario"),
            measured: format!("failed: {why}"),
            target: "—".to_string(),
            met: Met::Failed,
        }
    }

    /// The row as one line for the progress output.
    pub fn line(&self) -> String {
        let verdict = match self.met {
            Met::Yes => " (met)",
            Met::No => " (MISSED)",
            Met::Info => "",
            Met::Failed => " (FAILED)",
        };
        let target = if self.target == "—" {
            String::new()
        } else {
            format!(", target {}", self.target)
        };
        format!("  {}: {}{target}{verdict}", self.figure, self.measured)
    }
}

/// `value` with a sensible number of decimals, then `unit` (a space between unless the unit
/// is empty or starts with `/` or `%`).
fn with_unit(value: f64, unit: &str) -> String {
    let magnitude = value.abs();
    let number = if magnitude == 0.0 {
        "0".to_string()
    } else if magnitude >= 100.0 {
        group_thousands(value.round() as i64)
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    };
    match unit {
        "" => number,
        u if u.starts_with('/') || u.starts_with('%') || u.starts_with('×') => {
            format!("{number}{u}")
        }
        u => format!("{number} {u}"),
    }
}

/// `12345` as `12,345`.
fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The markdown table of `rows` under a header line naming the machine and commit.
pub fn markdown(header: &str, rows: &[Row]) -> String {
    let mut out = format!("{header}\n\n| figure | measured | target | met |\n|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Met::Yes => "yes",
            Met::No => "**no**",
            Met::Info => "—",
            Met::Failed => "**failed**",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            row.figure, row.measured, row.target
        );
    }
    out
}

/// `nproc`, CPU model, memory, kernel and `git rev-parse --short HEAD` (with `-dirty` when the
/// work tree has changes, since figures then describe code no commit holds).
pub fn machine_header() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<f64>().ok())
        .map_or("unknown memory".to_string(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown kernel".to_string(), |k| k.trim().to_string());
    let commit = git(&["rev-parse", "--short", "HEAD"]).map_or("no git commit".to_string(), |c| {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        format!("commit {c}{}", if dirty { "-dirty" } else { "" })
    });
    format!("wagate bench — {cpus} CPUs ({model}), {memory}, Linux {kernel}, {commit}")
}

/// The trimmed output of a successful `git` command.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
