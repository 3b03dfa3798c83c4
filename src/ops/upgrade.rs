//! Where the listening sockets are handed over on `--upgrade` (pingora's zero-downtime upgrade):
//! the old process connects to this socket and sends them to whoever listens there. Its
//! directory must be one only this user can write, or another local user could bind the name
//! first and receive every client (security review F19).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("the upgrade socket's directory {} {why}: another user could take the listening sockets (set shutdown.upgrade_sock, or fix the directory)", dir.display())]
    Unsafe { dir: PathBuf, why: &'static str },
    #[error("cannot check the upgrade socket's directory {}", dir.display())]
    Stat {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The socket to use: the configured one, else a default in a runtime directory; either way its
/// directory is checked (and created) private.
pub fn socket(configured: Option<&Path>) -> Result<PathBuf, UpgradeError> {
    let path = configured.map_or_else(
        || default_socket(&|var| std::env::var_os(var), euid()),
        Path::to_path_buf,
    );
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    Ok(path)
}

/// systemd's `RuntimeDirectory=`, else the user's runtime directory, else `/run` for root, else a
/// per-user directory in the temp dir (checked like the others).
fn default_socket(env: &dyn Fn(&str) -> Option<OsString>, euid: u32) -> PathBuf {
    let absolute = |var: &str| env(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let dir = if let Some(dir) = absolute("RUNTIME_DIRECTORY") {
        dir
    } else if let Some(dir) = absolute("XDG_RUNTIME_DIR") {
        dir.join("sse-gateway")
    } else if euid == 0 {
        PathBuf::from("/run/sse-gateway")
    } else {
        std::env::temp_dir().join(format!("sse-gateway-{euid}"))
    };
    dir.join("upgrade.sock")
}

/// Creates `dir` with mode 0700 if it is missing, and refuses one this user does not own or that
/// others may write. A directory that cannot be created (a read-only file system) only costs
/// the hand-over, so it is a warning.
fn private_dir(dir: &Path) -> Result<(), UpgradeError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot create the upgrade socket's directory: --upgrade will not find this process");
            return Ok(());
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| UpgradeError::Stat {
        dir: dir.to_path_buf(),
        source,
    })?;
    let why = if !meta.is_dir() {
        Some("is not a directory")
    } else if meta.uid() != euid() {
        Some("belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("is writable by group or others")
    } else {
        None
    };
    match why {
        Some(why) => Err(UpgradeError::Unsafe {
            dir: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_upgrade_socket_is_in_a_runtime_directory() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                vars.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| OsString::from(x))
            }
        };
        let systemd = env(&[
            ("RUNTIME_DIRECTORY", "/run/sse-gateway"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        assert_eq!(
            default_socket(&systemd, 1),
            Path::new("/run/sse-gateway/upgrade.sock")
        );
        let user = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            default_socket(&user, 1000),
            Path::new("/run/user/1000/sse-gateway/upgrade.sock")
        );
        let none = env(&[("XDG_RUNTIME_DIR", "relative")]);
        assert_eq!(
            default_socket(&none, 0),
            Path::new("/run/sse-gateway/upgrade.sock")
        );
        let other = default_socket(&none, 1000);
        assert!(
            other.ends_with("sse-gateway-1000/upgrade.sock"),
            "{}",
            other.display()
        );
        assert!(
            !other.starts_with("/tmp/sse-gateway-upgrade"),
            "never a shared name"
        );
    }

    #[test]
    fn the_socket_directory_is_created_private_and_a_shared_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        private_dir(&dir).unwrap();

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
