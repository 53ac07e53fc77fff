//! The PostgreSQL server binaries (`initdb`, `pg_ctl`): where they are installed, and running
//! them, as the `postgres` system user when this process is root.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::process::effective_uid;
use super::system_user::SystemUser;
use super::{ClusterError, io_error};

/// Where distribution packages put the server binaries, one directory per major version.
pub(super) const PACKAGE_DIR: &str = "/usr/lib/postgresql";

/// How the server binaries are run.
#[derive(Debug)]
pub(super) struct Binaries {
    dir: PathBuf,
    /// Set when running as root: the server runs as this user instead.
    pub(super) as_user: Option<SystemUser>,
}

impl Binaries {
    /// `$WAGATE_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
    pub(super) fn find() -> Result<Binaries, ClusterError> {
        let has_binaries =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        let dir = match std::env::var_os("WAGATE_PG_BIN") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !has_binaries(&dir) {
                    return Err(ClusterError::NoBinariesIn(dir));
                }
                dir
            }
            None => fs::read_dir(PACKAGE_DIR)
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let version: Vec<u32> = entry
                        .file_name()
                        .to_str()?
                        .split('.')
                        .map(|part| part.parse().ok())
                        .collect::<Option<_>>()?;
                    let bin = entry.path().join("bin");
                    has_binaries(&bin).then_some((version, bin))
                })
                .max()
                .map(|(_, bin)| bin)
                .ok_or(ClusterError::NoBinaries)?,
        };
        let as_user = if effective_uid() == Some(0) {
            Some(SystemUser::postgres()?)
        } else {
            None
        };
        Ok(Binaries { dir, as_user })
    }

    /// Runs a server binary to completion in `dir`, as the `postgres` user when we are root.
    pub(super) fn run_in(
        &self,
        dir: &Path,
        program: &str,
        args: &[&OsStr],
    ) -> Result<Output, ClusterError> {
        let exe = self.dir.join(program);
        let mut command = match &self.as_user {
            Some(user) => user.command(&exe),
            None => Command::new(&exe),
        };
        // The caller's directory may be one the postgres user cannot enter.
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(format!("run {}", exe.display())))
    }
}
