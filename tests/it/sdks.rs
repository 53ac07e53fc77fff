//! The generated API clients: `openapi/sdks/generate.sh` turns the committed spec into a Python
//! and a TypeScript client without a warning, and the two examples built on them
//! (`examples/sdk-python`, `examples/sdk-typescript`) run the whole login flow against the real
//! binary in sandbox mode, webhooks included.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::process::Wagate;
use crate::support::{pg, tools};

/// An example bounds each of its waits to a minute; this only stops a wedged one hanging CI.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(300);
/// `npm ci` and the generators; generous for a cold npm cache.
const TOOL_LIMIT: Duration = Duration::from_secs(600);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished command printed and whether it exited 0.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Everything it printed, stdout first.
    fn printed(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to the end or until `limit` passes (then kills it and panics).
fn run(mut command: Command, limit: Duration) -> Ran {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown} does not start: {e}"));
    // Drained on their own threads so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} ran longer than {limit:?}; it printed:\n{}{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ran {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Whether `program args…` runs and exits 0.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when every tool a test needs is there (see `support::tools` for when it is not).
fn tools_present(needs_python_runtime: bool) -> bool {
    let mut missing = Vec::new();
    if !works("openapi-python-client", &["--version"]) {
        missing.push("pip install -r openapi/sdks/requirements.txt");
    }
    if !works("node", &["--version"]) || !works("npm", &["--version"]) {
        missing.push("apt-get install nodejs npm (Node 20.19 or newer)");
    }
    if needs_python_runtime
        && !works(
            "python3",
            &["-c", "import standardwebhooks, httpx, attrs, dateutil"],
        )
    {
        missing.push("pip install -r examples/sdk-python/requirements.txt");
    }
    !tools::skip_for(&missing, "generate and run the SDK clients")
}

/// `openapi/sdks/generate.sh`, run once per test process: the example tests run in parallel and
/// would otherwise rewrite the generated clients under each other's feet.
fn generated() -> &'static Ran {
    static GENERATED: OnceLock<Ran> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let mut command = Command::new("bash");
        command
            // One stream, so warnings appear next to what they are about.
            .args(["-c", r#"exec "$0" 2>&1"#])
            .arg(root().join("openapi/sdks/generate.sh"))
            // Plain text for the assertions and for people reading a failure.
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0");
        run(command, TOOL_LIMIT)
    })
}

/// The clients, generated; panics with the generators' output when generation failed.
fn require_generated() -> &'static Ran {
    let ran = generated();
    assert!(
        ran.success,
        "openapi/sdks/generate.sh failed:\n{}",
        ran.printed()
    );
    ran
}

/// Runs blocking `work` off the runtime's threads, re-raising its panic as the test's own.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// A sandbox gateway that accepts webhooks to the example's loopback receiver.
async fn sandbox_gateway() -> Wagate {
    Wagate::start_with_env(
        &pg::fresh_database_url().await,
        &["--sandbox", "--sandbox-time-scale", "10"],
        &[("WAGATE_WEBHOOK_ALLOW_PRIVATE", "true")],
    )
}

/// Runs an example against `wagate` and checks it finished the whole flow.
fn assert_example_passes(mut command: Command, wagate: &Wagate) {
    command
        .env("WAGATE_URL", &wagate.base)
        .env("WAGATE_USER", "admin")
        .env("WAGATE_PASSWORD", "secret");
    let ran = run(command, EXAMPLE_LIMIT);
    assert!(ran.success, "the example failed:\n{}", ran.printed());
    assert_eq!(
        ran.stdout.lines().last(),
        Some("sdk example: ok"),
        "the example did not finish:\n{}",
        ran.printed()
    );
}

#[test]
fn the_client_generators_run_without_a_warning() {
    if !tools_present(false) {
        return;
    }
    // generate.sh's stderr is in its stdout (see `generated`).
    let ran = require_generated();
    let complaints: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|line| line.to_lowercase().contains("warning") || line.contains("Unable to"))
        .collect();
    assert!(
        complaints.is_empty(),
        "the generators warned about the spec ({complaints:?}); everything they printed:\n{}",
        ran.printed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_the_whole_login_flow() {
    if !tools_present(true) {
        return;
    }
    blocking(|| {
        require_generated();
    })
    .await;
    let wagate = sandbox_gateway().await;

    let mut example = Command::new("python3");
    example.arg(root().join("examples/sdk-python/main.py"));
    blocking(move || assert_example_passes(example, &wagate)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_example_runs_the_whole_login_flow() {
    if !tools_present(false) {
        return;
    }
    let dir: PathBuf = root().join("examples/sdk-typescript");
    blocking({
        let dir = dir.clone();
        move || {
            require_generated();
            if !dir.join("node_modules/.bin/tsc").exists() {
                let mut install = Command::new("npm");
                install
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir);
                let ran = run(install, TOOL_LIMIT);
                assert!(ran.success, "npm ci failed:\n{}", ran.printed());
            }
            // The strict type check is part of the test: a client that does not compile under
            // `strict` is a broken client.
            let mut compile = Command::new(dir.join("node_modules/.bin/tsc"));
            compile.args(["-p", ".", "--strict"]).current_dir(&dir);
            let ran = run(compile, TOOL_LIMIT);
            assert!(ran.success, "tsc --strict failed:\n{}", ran.printed());
        }
    })
    .await;
    let wagate = sandbox_gateway().await;

    let mut example = Command::new("node");
    example.arg(dir.join("dist/examples/sdk-typescript/main.js"));
    blocking(move || assert_example_passes(example, &wagate)).await;
}
