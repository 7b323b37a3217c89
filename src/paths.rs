//! Where termshare keeps things by default, and the private directory each running
//! instance works in.
//!
//! No default is ever in a directory shared with other users (a `/tmp/termshare` that
//! anyone could create first): the state directory is `$XDG_STATE_HOME/termshare` or
//! `~/.local/state/termshare`, the runtime directory `$XDG_RUNTIME_DIR/termshare` or
//! the state directory's `run/`. Without `HOME` and the XDG variables there is no
//! default, and the error names the config key to set instead.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use thiserror::Error;

use crate::secure_fs::{self, SafeDir, Trust, UnsafePath};

#[derive(Debug, Error)]
pub enum PathError {
    #[error("no default for {what}: neither {vars} is set; set `{key}` in the config file")]
    NoDefault {
        what: &'static str,
        vars: &'static str,
        key: &'static str,
    },
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// `$XDG_STATE_HOME/termshare`, else `$HOME/.local/state/termshare`.
pub fn state_dir(key: &'static str) -> Result<PathBuf, PathError> {
    env_dir("XDG_STATE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("termshare"))
        .ok_or(PathError::NoDefault {
            what: "the state directory",
            vars: "XDG_STATE_HOME nor HOME",
            key,
        })
}

/// `$XDG_RUNTIME_DIR/termshare`, else the state directory's `run/`.
pub fn runtime_dir(key: &'static str) -> Result<PathBuf, PathError> {
    match env_dir("XDG_RUNTIME_DIR") {
        Some(d) => Ok(d.join("termshare")),
        None => state_dir(key)
            .map(|d| d.join("run"))
            .map_err(|_| PathError::NoDefault {
                what: "the runtime directory",
                vars: "XDG_RUNTIME_DIR, XDG_STATE_HOME nor HOME",
                key,
            }),
    }
}

/// The control socket: `$XDG_RUNTIME_DIR/termshare.sock`, else in the state directory.
pub fn default_socket() -> Result<PathBuf, PathError> {
    match env_dir("XDG_RUNTIME_DIR") {
        Some(d) => Ok(d.join("termshare.sock")),
        None => state_dir("service.socket")
            .map(|d| d.join("termshare.sock"))
            .map_err(|_| PathError::NoDefault {
                what: "the control socket",
                vars: "XDG_RUNTIME_DIR, XDG_STATE_HOME nor HOME",
                key: "service.socket",
            }),
    }
}

/// The private directory of one running termshare: `RUNTIME/inst-PID-RANDOM/`, 0700,
/// holding an exclusive lock for as long as the instance lives. Workers get their
/// scratch directories (tmate's socket and config, upterm's keys) inside it.
///
/// A termshare killed with -9 cannot remove its directory; the lock goes with the
/// process, though, so the next instance to start finds the directory unlocked and
/// removes it ([`InstanceDir::create`]).
pub struct InstanceDir {
    dir: SafeDir,
    /// Held for the instance's life; the kernel drops it when the process dies.
    _lock: Flock<File>,
}

impl InstanceDir {
    /// Make this instance's directory under `runtime` (created 0700 and checked), after
    /// removing the directories of instances that are gone.
    pub fn create(runtime: &Path) -> Result<InstanceDir, UnsafePath> {
        let parent = secure_fs::open_dir(runtime, true, Trust::default())?;
        remove_stale(&parent);
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| UnsafePath::Io {
            path: runtime.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let name = format!(
            "inst-{}-{}",
            std::process::id(),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let dir = parent.subdir(&name, true)?;
        let lock_file = dir.open_file("lock", OFlag::O_CREAT | OFlag::O_RDWR)?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            UnsafePath::Io {
                path: dir.path().join("lock"),
                source: e.into(),
            }
        })?;
        Ok(InstanceDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh private (0700) directory for one worker, removed when dropped.
    pub fn scratch(&self, prefix: &str) -> std::io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(self.dir.path())
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        // Everything in it belongs to this instance's workers, which are gone by now.
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// Remove the directories of instances whose lock is free (their process is gone).
fn remove_stale(parent: &SafeDir) {
    let Ok(entries) = std::fs::read_dir(parent.path()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("inst-")) else {
            continue;
        };
        let Ok(dir) = parent.subdir(name, false) else {
            continue; // not ours, or not a directory: leave it alone
        };
        let free = match dir.open_file("lock", OFlag::O_RDWR) {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(UnsafePath::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                true // died while creating it
            }
            Err(_) => false,
        };
        if free {
            tracing::info!(dir = %dir.path().display(), "removing the directory of a termshare that is gone");
            if let Err(e) = parent.remove(name) {
                tracing::warn!(dir = %dir.path().display(), error = %e, "could not remove a stale directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_instances_directory_is_removed_a_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let live = InstanceDir::create(&run).unwrap();
        let scratch = live.scratch("tmate-").unwrap();
        // A directory whose lock nobody holds: its instance died (kill -9).
        let dead = run.join("inst-1-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("lock"), "").unwrap();
        std::fs::create_dir(dead.join("tmate-x")).unwrap();
        let second = InstanceDir::create(&run).unwrap();
        assert!(!dead.exists(), "the dead instance's directory is gone");
        assert!(scratch.path().exists(), "the live instance's is kept");
        drop(second);
        drop(scratch);
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
