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

/// Why a directory or file of termshare's could not be found or used.
#[derive(Debug, Error)]
pub enum PathError {
    /// None of the variables a default is built from is set (nor its config key).
    #[error("no default for {what}: neither {vars} is set; set `{key}` in the config file")]
    NoDefault {
        /// What has no default (`the state directory`, ...).
        what: &'static str,
        /// The variables that were looked at.
        vars: &'static str,
        /// The config key that would set it.
        key: &'static str,
    },
    /// The path failed the ownership and mode checks.
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
/// beside its lock file `inst-PID-RANDOM.lock`, held exclusively for as long as the
/// instance lives. Workers get their scratch directories (tmate's socket and config,
/// upterm's keys) inside it.
///
/// A termshare killed with -9 cannot remove its directory; the lock goes with the
/// process, though, so the next instance to start finds it free and removes the
/// directory ([`InstanceDir::create`]). The lock is taken before the directory is
/// made, so a directory without a held lock is never one that is just starting.
pub struct InstanceDir {
    parent: SafeDir,
    name: String,
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
        // The lock file appears under its name only once it is locked (made under
        // another name, locked, then renamed): a visible lock that can be taken is
        // always a dead instance's, never one that is starting.
        let lock_name = format!("{name}.lock");
        let making = format!(".making-{lock_name}");
        let lock_file =
            parent.open_file(&making, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR)?;
        let io = |source: std::io::Error| UnsafePath::Io {
            path: parent.path().join(&lock_name),
            source,
        };
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io(e.into()))?;
        std::fs::rename(parent.path().join(&making), parent.path().join(&lock_name)).map_err(io)?;
        let dir = parent.subdir(&name, true)?;
        Ok(InstanceDir {
            parent,
            name,
            dir,
            _lock: lock,
        })
    }

    /// The instance's directory.
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
        let _ = self.parent.remove(&self.name);
        let _ = self.parent.remove(&format!("{}.lock", self.name));
    }
}

/// Remove the directories (and lock files) of instances whose lock is free: their
/// process is gone.
fn remove_stale(parent: &SafeDir) {
    let Ok(entries) = std::fs::read_dir(parent.path()) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().filter(|n| n.starts_with("inst-")) else {
            continue;
        };
        let instance = name.strip_suffix(".lock").unwrap_or(name);
        let lock_name = format!("{instance}.lock");
        let free = match parent.open_file(&lock_name, OFlag::O_RDWR) {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
            // No lock file: an instance always has one before its directory.
            Err(UnsafePath::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                true
            }
            Err(_) => false, // not ours: leave it alone
        };
        if !free {
            continue;
        }
        if parent.subdir(instance, false).is_ok() {
            tracing::info!(dir = %parent.path().join(instance).display(), "removing the directory of a termshare that is gone");
            if let Err(e) = parent.remove(instance) {
                tracing::warn!(error = %e, "could not remove a stale directory");
                continue;
            }
        }
        let _ = parent.remove(&lock_name);
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
        std::fs::write(run.join("inst-1-dead.lock"), "").unwrap();
        std::fs::create_dir(dead.join("tmate-x")).unwrap();
        let second = InstanceDir::create(&run).unwrap();
        assert!(!dead.exists(), "the dead instance's directory is gone");
        assert!(!run.join("inst-1-dead.lock").exists());
        assert!(scratch.path().exists(), "the live instance's is kept");
        drop(second);
        drop(scratch);
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0, "nothing left");
    }
}
