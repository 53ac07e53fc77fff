//! The `postgres` system user, which runs the server when this process is root (PostgreSQL
//! refuses to run as root): finding it and `runuser`, and giving it the files and directories
//! it must reach.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ClusterError, io_error};

/// The `postgres` user and the `runuser` that runs commands as it.
#[derive(Debug)]
pub(super) struct SystemUser {
    uid: u32,
    gid: u32,
    runuser: PathBuf,
}

impl SystemUser {
    /// The `postgres` user of `/etc/passwd` and the system's `runuser`.
    pub(super) fn postgres() -> Result<SystemUser, ClusterError> {
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let (uid, gid) = passwd
            .lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                if fields.next()? != "postgres" {
                    return None;
                }
                let uid = fields.nth(1)?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some((uid, gid))
            })
            .ok_or(ClusterError::NoPostgresUser)?;
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .ok_or(ClusterError::NoRunuser)?;
        Ok(SystemUser { uid, gid, runuser })
    }

    /// A command that runs `exe` as the user; the caller adds its arguments.
    pub(super) fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(&self.runuser);
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    }

    /// Gives the user the data directory and a way to reach it.
    pub(super) fn take_over(&self, data_dir: &Path) -> Result<(), ClusterError> {
        self.own(data_dir)?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("restrict {}", data_dir.display())))?;
        for dir in data_dir.ancestors().skip(1) {
            let meta = fs::metadata(dir).map_err(io_error(format!("inspect {}", dir.display())))?;
            let mode = meta.mode();
            let search_bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if mode & search_bit == 0 {
                // Search permission only: others may pass through, not list.
                fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o001))
                    .map_err(io_error(format!("make {} traversable", dir.display())))?;
                tracing::warn!(
                    "made {} traversable by other users (o+x) so that the postgres user reaches its data directory",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// Makes the user the owner of `path`.
    pub(super) fn own(&self, path: &Path) -> Result<(), ClusterError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(io_error(format!(
            "give {} to the postgres user",
            path.display()
        )))
    }
}
