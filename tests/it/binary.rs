//! The `wagate` binary in sandbox mode: the README's walk-through, over HTTP only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;

use crate::support::{Api, pg};

/// `wagate serve --sandbox` on a free port; killed when dropped.
struct Wagate {
    child: Child,
    base: String,
}

impl Wagate {
    async fn start() -> Self {
        let database_url = pg::fresh_database_url().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wagate"))
            .args(["serve", "--sandbox", "--sandbox-time-scale", "10"])
            .args(["--listen", "127.0.0.1:0", "--basic-auth", "admin:secret"])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("wagate starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let base = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_string))
            .expect("wagate prints where it listens");
        Self { child, base }
    }
}

impl Drop for Wagate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_walkthrough_links_devices_over_http() {
    let wagate = Wagate::start().await;
    let api = Api::new(&wagate.base, "admin", "secret");

    api.create_device("by-qr").await;
    let login = api.get("/devices/by-qr/login").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let scanned = api
        .post("/sandbox/devices/by-qr/scan?phone=628912344551")
        .await;
    assert_eq!(scanned.status, StatusCode::OK, "{}", scanned.body);
    api.wait_logged_in("by-qr").await;

    api.create_device("by-code").await;
    let code = api
        .post("/devices/by-code/login/code?phone=628912344552")
        .await;
    assert_eq!(code.status, StatusCode::OK, "{}", code.body);
    let entered = api.post("/sandbox/devices/by-code/enter-code").await;
    assert_eq!(entered.status, StatusCode::OK, "{}", entered.body);
    api.wait_logged_in("by-code").await;

    let unlinked = api.post("/sandbox/devices/by-qr/unlink").await;
    assert_eq!(unlinked.status, StatusCode::OK, "{}", unlinked.body);
    let mut state = String::new();
    for _ in 0..100 {
        state = api.get("/devices/by-qr").await.body["results"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "disconnected" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "disconnected", "an unlinked device is logged out");
}
