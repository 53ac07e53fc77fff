//! What `/proc` tells of processes: our own user id, a process's working directory, and the
//! processes that work on a directory, which can be stopped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Our effective user id, from `/proc` (`None` where there is no `/proc`).
pub(super) fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The working directory of process `pid`; `None` when there is no such process (or it is not
/// ours to inspect).
pub(super) fn working_dir(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Stops every process whose command line names `dir` (an orphaned initdb and the bootstrap
/// server it runs): SIGTERM, which initdb answers by cleaning up, then SIGKILL after 5 s.
pub(super) fn stop_processes_using(dir: &Path) {
    let dir = dir.as_os_str().as_encoded_bytes();
    let using = || -> Vec<String> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| {
                fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg.starts_with(dir)))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    };
    for signal in ["-TERM", "-KILL"] {
        let pids = using();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg(signal)
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if using().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
