//! Prometheus's own tools for the observability tests: `promtool` (rule checks, the rules' unit
//! tests, `check metrics` on a scrape) and a `prometheus` server on a free loopback port, with
//! its storage in a temporary directory, scraping given targets every second. Debian's
//! `prometheus` package has both (`.ci/run` installs it); without them a test skips or fails as
//! `support::tools` decides. The server is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::tools;

/// How long the server may take to start, and a scrape or a rule evaluation to land.
const PATIENCE: Duration = Duration::from_secs(30);

/// `examples/observability/`: the alert rules, their tests, the dashboard, the config.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/observability")
}

/// True when `binary --version` runs.
fn installed(binary: &str) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the test must be skipped because `promtool` (and, with `server`, `prometheus`) is
/// missing; panics instead where the tools are required.
pub fn skip_without(server: bool, purpose: &str) -> bool {
    let missing = !installed("promtool") || (server && !installed("prometheus"));
    let hint: &[&str] = if missing {
        &["apt-get install prometheus (it has promtool too)"]
    } else {
        &[]
    };
    tools::skip_for(hint, purpose)
}

/// Runs `promtool args…` in `dir`, with `stdin` as its input when given.
pub async fn promtool(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input)
            .await
            .expect("promtool reads its input");
        drop(pipe);
    }
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("promtool ends in time")
        .expect("promtool's output")
}

/// What a promtool run printed, for an assertion's message.
pub fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `prometheus` server of the test's own.
pub struct PrometheusServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl PrometheusServer {
    /// A server on a free port that scrapes `targets` (`host:port`, job `wagate`) every second
    /// and evaluates `rule_files` every second; returns once it is ready.
    pub async fn start(targets: &[&str], rule_files: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Strings in double quotes: JSON's quoting is YAML's.
        let quoted = |items: Vec<String>| {
            items
                .into_iter()
                .map(|s| Value::String(s).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: wagate\n    static_configs:\n      - targets: [{}]\n",
            quoted(rule_files.iter().map(|p| p.display().to_string()).collect()),
            quoted(targets.iter().map(|t| t.to_string()).collect()),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("the config is written");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", server.base);
        server
            .within("prometheus to be ready", || async {
                match server.http.get(&ready).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        server
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs `probe` every 200 ms until it answers `Ok`, for up to 30 s; panics saying `what`
    /// did not happen, with the last thing `probe` saw and the server's log.
    pub async fn within<T, Seen: std::fmt::Debug, Probe: Future<Output = Result<T, Seen>>>(
        &self,
        what: &str,
        mut probe: impl FnMut() -> Probe,
    ) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match probe().await {
                Ok(found) => return found,
                Err(seen) if tokio::time::Instant::now() >= deadline => panic!(
                    "waited {PATIENCE:?} for {what}; last seen: {seen:?}\nprometheus's log:\n{}",
                    self.log()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// `GET path` of the HTTP API with `params`: the JSON answer, whatever its status.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .expect("a URL");
        let response = self.http.get(url).send().await.expect("prometheus answers");
        response.json().await.expect("a JSON answer")
    }

    /// An instant query: the API's whole answer (`status`, `data`, or `error`).
    pub async fn query(&self, expr: &str) -> Value {
        self.api("/api/v1/query", &[("query", expr)]).await
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // kill_on_drop would too, but the directory goes next: wait for the process first.
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
