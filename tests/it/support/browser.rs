//! A headless Chromium (Debian's `/usr/bin/chromium`) driven by `tests/browser/link_page.mjs`
//! (playwright-core, pinned by its lock file) over stdin and stdout: one JSON command a line,
//! one JSON answer a line. The browser records every request the page makes and every console
//! error and uncaught exception, which [`Browser::report`] returns. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::tools;

/// The browser the driver launches.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one command may take beyond its own timeout (a cold browser start is the slowest).
const ANSWER_MARGIN: Duration = Duration::from_secs(30);

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the page did while the browser ran.
#[derive(Debug)]
pub struct Report {
    /// Every request's URL, in order (the documents, assets, API calls, images, streams).
    pub requests: Vec<String>,
    /// Console messages of type error: their text and the URL they name.
    pub console_errors: Vec<(String, String)>,
    /// Uncaught exceptions of the page's scripts.
    pub page_errors: Vec<String>,
}

/// One browser with one page.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    /// Starts the browser, or `None` when the test is to be skipped because Node, Chromium or
    /// the driver's `node_modules` are missing (a failure instead where `support::tools` says
    /// tools are required).
    pub async fn start() -> Option<Self> {
        let dir = driver_dir();
        let mut missing = Vec::new();
        let node = std::process::Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !node {
            missing.push("apt-get install nodejs npm (Node 20 or newer)");
        }
        if !Path::new(CHROMIUM).exists() {
            missing.push("apt-get install chromium");
        }
        if !dir.join("node_modules/playwright-core").exists() {
            missing.push("(cd tests/browser && npm ci)");
        }
        if tools::skip_for(&missing, "drive the link page in Chromium") {
            return None;
        }

        let mut child = Command::new("node")
            .arg(dir.join("link_page.mjs"))
            .current_dir(&dir)
            .env("CHROMIUM", CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The driver prints nothing there unless it breaks; then the test shows why.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let answers = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut browser = Self {
            child,
            stdin,
            answers,
        };
        let ready = browser.answer(Duration::ZERO).await;
        assert_eq!(ready["ready"], true, "the driver did not start: {ready}");
        Some(browser)
    }

    /// Sends `command` and returns its answer; panics when the command failed.
    async fn command(&mut self, command: Value) -> Value {
        let timeout = Duration::from_millis(command["timeout_ms"].as_u64().unwrap_or(10_000));
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("the driver reads its commands");
        let answer = self.answer(timeout).await;
        assert_eq!(answer["ok"], true, "{command} failed: {}", answer["error"]);
        answer
    }

    /// The driver's next answer, within `timeout` and a margin.
    async fn answer(&mut self, timeout: Duration) -> Value {
        let line = tokio::time::timeout(timeout + ANSWER_MARGIN, self.answers.next_line())
            .await
            .expect("the driver answers in time")
            .expect("the driver's stdout reads");
        let Some(line) = line else {
            let status = self.child.wait().await;
            panic!("the driver ended ({status:?}) without an answer");
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON answer ({e}): {line}"))
    }

    /// Opens `url` and waits for its `load` event; returns the document's HTTP status.
    pub async fn open(&mut self, url: &str) -> u64 {
        let answer = self.command(json!({ "open": url })).await;
        answer["status"].as_u64().expect("a status")
    }

    /// Waits until an element matching `selector` is visible.
    pub async fn wait_visible(&mut self, selector: &str, timeout: Duration) {
        self.command(json!({ "wait_visible": selector, "timeout_ms": timeout.as_millis() as u64 }))
            .await;
    }

    /// Waits until the image matching `selector` is visible and loaded; returns its natural
    /// width and height.
    pub async fn wait_image(&mut self, selector: &str, timeout: Duration) -> (u64, u64) {
        let answer = self
            .command(json!({ "wait_image": selector, "timeout_ms": timeout.as_millis() as u64 }))
            .await;
        (
            answer["width"].as_u64().expect("width"),
            answer["height"].as_u64().expect("height"),
        )
    }

    /// The rendered text of the element matching `selector`.
    pub async fn text(&mut self, selector: &str) -> String {
        let answer = self.command(json!({ "text": selector })).await;
        answer["text"].as_str().expect("text").to_string()
    }

    /// The attribute `name` of the element matching `selector`, if it has one.
    pub async fn attribute(&mut self, selector: &str, name: &str) -> Option<String> {
        let answer = self
            .command(json!({ "attribute": selector, "name": name }))
            .await;
        answer["value"].as_str().map(str::to_string)
    }

    /// Types `value` into the field matching `selector`.
    pub async fn fill(&mut self, selector: &str, value: &str) {
        self.command(json!({ "fill": selector, "value": value }))
            .await;
    }

    /// Clicks the element matching `selector`.
    pub async fn click(&mut self, selector: &str) {
        self.command(json!({ "click": selector })).await;
    }

    /// A full-page screenshot to `path` (directories created); returns its absolute path.
    pub async fn screenshot(&mut self, path: &Path) -> PathBuf {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot directory");
        }
        let answer = self
            .command(json!({ "screenshot": path.to_str().expect("a UTF-8 path") }))
            .await;
        PathBuf::from(answer["path"].as_str().expect("path"))
    }

    /// What the page did so far.
    pub async fn report(&mut self) -> Report {
        let answer = self.command(json!({ "report": true })).await;
        let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
        Report {
            requests: list("requests")
                .iter()
                .map(|r| r["url"].as_str().unwrap_or_default().to_string())
                .collect(),
            console_errors: list("console_errors")
                .iter()
                .map(|e| {
                    (
                        e["text"].as_str().unwrap_or_default().to_string(),
                        e["url"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            page_errors: list("page_errors")
                .iter()
                .map(|e| e.as_str().unwrap_or_default().to_string())
                .collect(),
        }
    }
}

impl Report {
    /// Requests to anywhere but the gateway's own loopback address `base` (`http://127.0.0.1:P`
    /// or `http://localhost:P`); `data:` URLs are not requests to a host.
    pub fn foreign_requests(&self, base: &str) -> Vec<&str> {
        let port = base.rsplit(':').next().unwrap_or_default();
        let own = [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ];
        self.requests
            .iter()
            .map(String::as_str)
            .filter(|url| !url.starts_with("data:") && !own.iter().any(|o| url.starts_with(o)))
            .collect()
    }
}
