//! The embedded PostgreSQL through the real binary: reachable by its owner alone, never left
//! running by a gateway that died, and shared with one-off commands while `serve` runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use wagate_core::cluster::APP_ROLE;

use crate::support::process::{Wagate, serve_embedded, wagate};
use crate::support::{Api, eventually};

/// The embedded cluster's data directory under wagate's data directory `data`.
fn cluster_dir(data: &Path) -> PathBuf {
    data.join("postgres")
}

/// Line `n` (from 1) of the running server's pid file: 5 is the socket directory, 6 the TCP
/// listen address.
fn pid_file_line(data: &Path, n: usize) -> String {
    let contents = std::fs::read_to_string(cluster_dir(data).join("postmaster.pid"))
        .expect("the embedded server runs");
    contents.lines().nth(n - 1).unwrap_or_default().to_string()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
}

/// `psql` from the server's binaries, as system user `user`, querying wagate's database.
fn psql_as(user: &str, socket_dir: &str, role: &str, sql: &str) -> Output {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .flatten()
        .map(|entry| entry.path().join("bin/psql"))
        .find(|psql| psql.is_file())
        .expect("psql is installed");
    Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(bin)
        .args(["-h", socket_dir, "-U", role, "-d", "wagate", "-tAc", sql])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("runuser runs")
}

/// The processes working in `dir`: a PostgreSQL server's all do.
fn processes_in(dir: &Path) -> Vec<String> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}

/// Waits for every process in `dir` to end; a server's last ones exit just after its pid file
/// goes.
async fn assert_nothing_runs_in(dir: &Path) {
    eventually(
        &format!("every process in {} ending", dir.display()),
        || async {
            let left = processes_in(dir);
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
    )
    .await;
}

/// Starts a gateway on `data`, kills it with SIGKILL after `moment`, then checks that the next
/// start serves, stops cleanly and leaves no process behind.
async fn killed_then_started_again(data: &Path, moment: Duration) {
    let mut doomed = serve_embedded(data, &["--sandbox"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(moment).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    let next = Wagate::start_embedded(data, &["--sandbox"]);
    let answered = Api::new(&next.base, "admin", "secret")
        .get("/devices")
        .await;
    assert_eq!(
        answered.status,
        StatusCode::OK,
        "after a kill at {moment:?}"
    );
    assert!(next.terminate().success(), "after a kill at {moment:?}");
    assert_nothing_runs_in(&cluster_dir(data)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_unix_user_cannot_reach_the_embedded_database() {
    if !is_root() {
        eprintln!("skipped: acting as another Unix user needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let gateway = Wagate::start_embedded(data.path(), &["--sandbox"]);
    assert_eq!(pid_file_line(data.path(), 6), "", "no TCP listener");
    let socket_dir = pid_file_line(data.path(), 5);
    let query = "select count(*) from wa_device";

    for role in [APP_ROLE, "wagate", "postgres"] {
        let attempt = psql_as("nobody", &socket_dir, role, query);
        let stderr = String::from_utf8_lossy(&attempt.stderr);
        assert!(!attempt.status.success(), "nobody read the keys as {role}");
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }
    // The same query as the server's own user works: the refusal above is the directory's.
    let owner = psql_as("postgres", &socket_dir, APP_ROLE, query);
    assert!(
        owner.status.success(),
        "{}",
        String::from_utf8_lossy(&owner.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "0");
    assert!(gateway.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_at_any_moment_of_its_start_leaves_no_server_behind() {
    let data = tempfile::tempdir().unwrap();
    // The cluster exists, as on every start but the first.
    assert!(
        Wagate::start_embedded(data.path(), &["--sandbox"])
            .terminate()
            .success()
    );
    for moment in (0..20).map(|i| Duration::from_millis(i * 50)) {
        killed_then_started_again(data.path(), moment).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_making_its_cluster_leaves_none_half_made() {
    for moment in [100, 250, 400, 600, 900].map(Duration::from_millis) {
        let data = tempfile::tempdir().unwrap();
        killed_then_started_again(data.path(), moment).await;
        let leftovers: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("initdb"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{leftovers:?} after a kill at {moment:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_created_while_the_gateway_serves_from_the_same_directory() {
    let data = tempfile::tempdir().unwrap();
    let gateway = Wagate::start_embedded(data.path(), &["--sandbox"]);

    let created = wagate(&["tenant", "create", "acme"])
        .env_remove("DATABASE_URL")
        .env("WAGATE_DATA_DIR", data.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {printed}"))
    };
    let (username, password) = (field("username:"), field("password:"));

    let api = Api::new(&gateway.base, &username, &password);
    assert_eq!(api.get("/devices").await.status, StatusCode::OK);
    // The command left the gateway's server running.
    assert_eq!(
        Api::new(&gateway.base, "admin", "secret")
            .get("/devices")
            .await
            .status,
        StatusCode::OK
    );
    assert!(gateway.terminate().success());
    assert_nothing_runs_in(&cluster_dir(data.path())).await;
}
