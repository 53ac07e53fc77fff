//! The real `wagate` binary as a child process: started on a free port against a test database,
//! its output collected, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// `wagate serve --sandbox` on a free port; killed when dropped.
pub struct Wagate {
    child: Child,
    /// Where it serves, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// Every line it printed after the one saying where it listens; every line it printed on
    /// stdout and stderr when started by [`Wagate::start_recording`].
    output: Arc<Mutex<Vec<String>>>,
}

impl Wagate {
    /// `wagate serve` on `database_url` with `args`.
    pub fn start_on(database_url: &str, args: &[&str]) -> Self {
        Self::start_with_env(database_url, args, &[])
    }

    /// `wagate serve` on `database_url` with `args` and the variables `env` set.
    pub fn start_with_env(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = serve(database_url, args);
        command.envs(env.iter().copied());
        Self::spawn(command)
    }

    /// `wagate serve` on `database_url` with `args` and the variables `env` set, keeping every
    /// line it prints on stdout and stderr from the first on, for [`Wagate::lines`].
    pub fn start_recording(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = serve(database_url, args);
        command.envs(env.iter().copied()).stderr(Stdio::piped());
        Self::spawn_keeping(command, true)
    }

    /// `wagate serve` with `args` on the embedded PostgreSQL in `data_dir`.
    pub fn start_embedded(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn(serve_embedded(data_dir, args))
    }

    /// Runs `command` and waits until it says where it listens.
    fn spawn(command: Command) -> Self {
        Self::spawn_keeping(command, false)
    }

    /// Runs `command` and waits until it says where it listens; `everything` keeps the lines
    /// before that one too, and those of stderr when it is piped.
    fn spawn_keeping(mut command: Command, everything: bool) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("wagate starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let collected = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    collected.lock().unwrap().push(line);
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let base = line.strip_prefix("listening on ").map(str::to_string);
                if everything {
                    output.lock().unwrap().push(line);
                }
                base
            })
            .expect("wagate prints where it listens");
        let collected = Arc::clone(&output);
        // Read to the end, so plugins printing to stdout never meet a closed pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            base,
            output,
        }
    }

    /// Waits up to 10 s for a printed line that contains `needle`.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let printed = || async {
            let output = self.output.lock().unwrap();
            match output.iter().find(|l| l.contains(needle)) {
                Some(line) => Ok(line.clone()),
                None => Err(output.clone()),
            }
        };
        super::eventually(&format!("wagate printing `{needle}`"), printed).await
    }

    /// Every line it printed so far (see [`Wagate::start_recording`]).
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for the process to end: a graceful shutdown.
    pub fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        self.child.wait().expect("wagate ends")
    }

    /// Sends signal `name` (`STOP`, `CONT`, …) and returns at once.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIG{name} delivered");
    }

    /// `kill -9`: no shutdown, no cleanup.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wagate serve` on `database_url` with `args`, on a free port, as the tests run it.
pub fn serve(database_url: &str, args: &[&str]) -> Command {
    let mut command = serve_on_free_port(args);
    command.env("DATABASE_URL", database_url);
    command
}

/// `wagate serve` with `args` on the embedded PostgreSQL in `data_dir`, on a free port.
pub fn serve_embedded(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = serve_on_free_port(args);
    command
        .env_remove("DATABASE_URL")
        .env("WAGATE_DATA_DIR", data_dir);
    command
}

fn serve_on_free_port(args: &[&str]) -> Command {
    let mut command = wagate(&["serve"]);
    command
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--basic-auth", "admin:secret"]);
    command
}

/// The `wagate` binary with `args`, quiet but for warnings.
pub fn wagate(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wagate"));
    command.args(args).env("RUST_LOG", "warn");
    command
}

/// Runs `wagate serve` expecting it to refuse to start; returns what it printed on stderr.
pub fn refused_start(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = serve(database_url, args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("wagate runs");
    assert!(!output.status.success(), "wagate started anyway");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl Drop for Wagate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
