//! The watchdog: a small shell that stops the server when the process that started it dies,
//! `kill -9` included, since that closes the pipe the shell waits on.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{ClusterError, io_error};

/// A running watchdog shell; [`Watchdog::stop`] ends it without touching the server.
#[derive(Debug)]
pub(super) struct Watchdog(Child);

impl Watchdog {
    /// A shell that waits for EOF on its stdin, a pipe held by this process, then shuts the
    /// server down and, for a throwaway cluster, deletes the data directory and its lock file.
    ///
    /// It starts before the server, so when this process dies while `pg_ctl` is still starting
    /// it, the shell waits for the server to appear, unless another start has taken the
    /// directory over (the owner file no longer holds our token).
    pub(super) fn start(
        data_dir: &Path,
        throwaway: bool,
        token: &str,
    ) -> Result<Watchdog, ClusterError> {
        const SCRIPT: &str = r#"
trap '' INT TERM HUP
read -r _
token=$3
i=0
while [ $i -lt 600 ] && [ "$(cat "$1/wagate.owner" 2>/dev/null)" = "$token" ]; do
    pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd")" = "$1" ]; then
        [ "$(cat "$1/wagate.owner" 2>/dev/null)" = "$token" ] && kill -INT "$pid"
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
if [ "$2" = throwaway ]; then
    i=0
    while [ -e "$1/postmaster.pid" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    rm -rf -- "$1" "$1.lock"
fi
"#;
        let mode = if throwaway { "throwaway" } else { "keep" };
        Command::new("/bin/sh")
            .args(["-c", SCRIPT, "wagate-postgres-watchdog"])
            .arg(data_dir)
            .arg(mode)
            .arg(token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Watchdog)
            .map_err(io_error("start the PostgreSQL watchdog shell"))
    }

    /// Ends the shell and waits for it.
    pub(super) fn stop(mut self) {
        // Killing it closes nothing of the server; it only must not act after we did.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
