//! The standalone `wagate-sandbox` binary, for the tests that drive it from outside: its JSON
//! control API, and clients other than whatsapp-rust. It is not in `support`, which the
//! `login_bench` example also compiles: only tests know where cargo put the binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary, started on a free loopback port; killed when dropped.
pub struct Standalone {
    child: Child,
    /// The control API's base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    /// The websocket URL clients connect to, `ws://127.0.0.1:PORT/ws/chat`.
    pub ws: String,
}

impl Standalone {
    /// The binary with clients asked to run their timers ten times faster.
    pub fn start() -> Self {
        Self::start_with_scale(10)
    }

    /// The binary with clients asked to run their timers `scale` times faster (1: real time, for
    /// clients that ignore the hint and keep WhatsApp's own timers).
    pub fn start_with_scale(scale: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wagate-sandbox"))
            .args(["--listen", "127.0.0.1:0", "--time-scale"])
            .arg(scale.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("wagate-sandbox starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("it prints its websocket URL");
        let ws = line.trim().to_string();
        let base = ws
            .strip_prefix("ws://")
            .and_then(|rest| rest.strip_suffix("/ws/chat"))
            .map(|host| format!("http://{host}"))
            .unwrap_or_else(|| panic!("unexpected first line {ws:?}"));
        Self { child, base, ws }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
