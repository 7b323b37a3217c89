//! The control socket's file and directory, on both sides.
//!
//! Whoever can write the socket's directory can replace the socket under its clients
//! (a fake daemon that answers `revoke` with "deadline met" while the share lives on).
//! So the daemon binds only in a directory that is its user's, reached without
//! symlinks and writable by nobody else ([`crate::secure_fs`]), and a client trusts a
//! socket only in such a directory, and only if the process listening on it runs as
//! the client's own user (or the `[service] daemon_user` it names): the kernel tells
//! the listener's uid (SO_PEERCRED).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group};
use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};

use crate::secure_fs::{self, Trust, UnsafePath};

/// Why the daemon could not bind its socket.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A daemon already accepts connections on the socket.
    #[error("another termshare daemon already answers on {0}")]
    AlreadyRunning(PathBuf),
    /// The socket's directory is not the user's alone, or is reached through a symlink.
    #[error("socket directory refused: {0}")]
    UnsafeDirectory(UnsafePath),
    /// Binding, chown or chmod failed, or a non-socket file is in the way.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket or its directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `[service] socket_group` names a group the system does not know.
    #[error("socket_group `{0}`: no such group")]
    NoSuchGroup(String),
    /// With `socket_group`: the socket's directory holds other files, so it stays closed.
    #[error("with socket_group, the socket needs a directory of its own (termshare makes it 0750 for the group): {0} holds other files; set [service] socket to a path in an empty directory")]
    SharedDirectory(PathBuf),
}

/// Who may reach the socket besides the daemon's user.
#[derive(Clone, Debug, Default)]
pub struct SocketAccess {
    /// Members of this group (socket 0660, directory 0750, both this group).
    pub group: Option<String>,
}

/// Bind the socket: refuse if a daemon answers there, replace a stale socket (never
/// anything else), mode 0600 (0660 with a group).
pub async fn bind(path: &Path, access: &SocketAccess) -> Result<UnixListener, DaemonError> {
    let gid = match &access.group {
        Some(name) => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| DaemonError::NoSuchGroup(name.clone()))?
                .gid,
        ),
        None => None,
    };
    let dir_path = path.parent().unwrap_or(Path::new("/"));
    let dir = secure_fs::open_dir(dir_path, true, Trust::default())
        .map_err(DaemonError::UnsafeDirectory)?;
    if let Some(gid) = gid {
        open_directory_to_group(dir.path(), path.file_name(), gid)?;
    }
    let listen_err = |source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(listen_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; not removing it",
            )));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        // A stale socket from a daemon that died.
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| listen_err(e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(listen_err)?;
    Ok(listener)
}

/// With `socket_group`: the directory becomes that group's, 0750. It must hold
/// nothing but the socket: opening a directory that holds more (the runtime or state
/// directory with the audit log and its key, `~/.ssh`…) to a group is refused.
fn open_directory_to_group(
    dir: &Path,
    socket: Option<&std::ffi::OsStr>,
    gid: Gid,
) -> Result<(), DaemonError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DaemonError::Listen {
        path: dir.to_path_buf(),
        source,
    })?;
    let shared = entries
        .flatten()
        .any(|e| Some(e.file_name().as_os_str()) != socket);
    if shared {
        return Err(DaemonError::SharedDirectory(dir.to_path_buf()));
    }
    let err = |source: io::Error| DaemonError::Listen {
        path: dir.to_path_buf(),
        source,
    };
    nix::unistd::chown(dir, None, Some(gid)).map_err(|e| err(e.into()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)
}

/// Why a client refused a socket.
#[derive(Debug, Error)]
pub enum Untrusted {
    /// The socket's directory could be written by someone else, or is a symlink.
    #[error("refusing the socket {socket}: {why}")]
    Path {
        /// The socket.
        socket: PathBuf,
        /// What is wrong with its directory.
        why: UnsafePath,
    },
    /// The socket is missing, not a socket, another user's, or its listener is unknown.
    #[error("refusing the socket {socket}: {why}")]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The process listening runs as neither the client's user nor `daemon_user`.
    #[error("refusing the daemon on {socket}: it runs as uid {uid}, not as you (uid {me}){also}")]
    Daemon {
        /// The socket.
        socket: PathBuf,
        /// The listener's uid, from the kernel.
        uid: u32,
        /// The client's uid.
        me: u32,
        /// The message's mention of the configured `daemon_user`, or empty.
        also: String,
    },
}

/// Check the socket's directory and file before connecting to it. `daemon_uid` is the
/// uid of a shared daemon the client was told to trust (`[service] daemon_user`).
pub fn check_before_connect(socket: &Path, daemon_uid: Option<u32>) -> Result<(), Untrusted> {
    let trust = Trust { also: daemon_uid };
    let dir = socket.parent().unwrap_or(Path::new("/"));
    secure_fs::open_dir(dir, false, trust).map_err(|why| Untrusted::Path {
        socket: socket.to_path_buf(),
        why,
    })?;
    let meta = std::fs::symlink_metadata(socket).map_err(|e| Untrusted::Socket {
        socket: socket.to_path_buf(),
        why: e.to_string(),
    })?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() {
        return Err(Untrusted::Socket {
            socket: socket.to_path_buf(),
            why: "it is not a socket".into(),
        });
    }
    if meta.uid() != me && Some(meta.uid()) != daemon_uid {
        return Err(Untrusted::Socket {
            socket: socket.to_path_buf(),
            why: format!("it belongs to uid {}", meta.uid()),
        });
    }
    Ok(())
}

/// Check, once connected, that the daemon runs as us or as `daemon_uid`.
pub fn check_daemon(
    stream: &UnixStream,
    socket: &Path,
    daemon_uid: Option<u32>,
) -> Result<(), Untrusted> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = stream
        .peer_cred()
        .map_err(|e| Untrusted::Socket {
            socket: socket.to_path_buf(),
            why: format!("cannot tell who listens: {e}"),
        })?
        .uid();
    if uid == me || Some(uid) == daemon_uid {
        return Ok(());
    }
    Err(Untrusted::Daemon {
        socket: socket.to_path_buf(),
        uid,
        me,
        also: daemon_uid
            .map(|u| format!(" or the configured daemon_user (uid {u})"))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_shared_directory_and_a_non_socket_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let access = SocketAccess::default();
        let err = bind(&open.join("t.sock"), &access).await.unwrap_err();
        assert!(matches!(err, DaemonError::UnsafeDirectory(_)), "{err}");

        let private = dir.path().join("private");
        let file = private.join("t.sock");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(&file, "precious").unwrap();
        let err = bind(&file, &access).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

        // A stale socket is replaced, a live one refused.
        std::fs::remove_file(&file).unwrap();
        let first = bind(&file, &access).await.unwrap();
        let err = bind(&file, &access).await.unwrap_err();
        assert!(matches!(err, DaemonError::AlreadyRunning(_)), "{err}");
        drop(first);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        bind(&file, &access).await.unwrap();
    }

    #[tokio::test]
    async fn a_symlinked_socket_directory_is_refused_by_daemon_and_client() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = bind(&link.join("t.sock"), &SocketAccess::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!real.join("t.sock").exists());
        let _listener = bind(&real.join("t.sock"), &SocketAccess::default())
            .await
            .unwrap();
        let err = check_before_connect(&link.join("t.sock"), None).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        check_before_connect(&real.join("t.sock"), None).unwrap();
    }
}
