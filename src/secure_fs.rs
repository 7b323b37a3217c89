//! Files and directories the way OpenSSH's StrictModes treats them.
//!
//! Everything termshare writes (the audit log, its key, the socket's directory, the
//! scratch directories of workers) and every file whose content decides who gets in
//! (config, policy) is reached through a path another local user could tamper with: a
//! symlink planted in a shared directory, a directory of theirs, a file they may write.
//! This module walks such a path from `/`, one component at a time, relative to the
//! directory opened before it and without following symlinks, and refuses:
//! - a symlink anywhere on the way (`O_NOFOLLOW`; the error names it);
//! - a directory or file owned by anyone but root, the user, or an explicitly trusted
//!   uid;
//! - a directory or file that others may write. A root-owned sticky directory (`/tmp`)
//!   is allowed on the way, as others cannot rename or remove what is ours in it, but
//!   never as the directory that holds the file.
//!
//! Missing directories are created 0700, files 0600. Opening relative to checked
//! directory descriptors (`openat`) means a component swapped after its check is never
//! followed. No crate does this walk (cap-std confines paths to a root but does not
//! check ownership and modes), so it is written here, on `nix`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode};
use thiserror::Error;

/// Why a path was refused. Nothing was created or changed past the refused component.
#[derive(Debug, Error)]
pub enum UnsafePath {
    /// A component on the way is a symlink.
    #[error("{path} is a symlink; termshare does not follow symlinks here (replace it with the real directory or file)")]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
    /// A component belongs to someone other than root, the user or the trusted uid.
    #[error("{path} belongs to uid {uid}, not to you (uid {me}) or root")]
    Owner {
        /// The component.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The current user.
        me: u32,
    },
    /// A component is writable by group or others (and not an allowed sticky directory).
    #[error("{path} may be written by others (mode {mode:o}); make it writable only by its owner (chmod go-w)")]
    Writable {
        /// The component.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A component is not what the walk needs there (a directory, a regular file, UTF-8).
    #[error("{path} is not a {expected}")]
    Kind {
        /// The component.
        path: PathBuf,
        /// What it should have been.
        expected: &'static str,
    },
    /// The path is relative or has a `..` component.
    #[error("{path} must be an absolute path without `..`")]
    NotAbsolute {
        /// The path as given.
        path: PathBuf,
    },
    /// A system call on the way failed (the path is missing, no permission, ...).
    #[error("{path}: {source}")]
    Io {
        /// The component it failed on.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl UnsafePath {
    fn io(path: &Path, errno: Errno) -> Self {
        UnsafePath::Io {
            path: path.to_path_buf(),
            source: std::io::Error::from(errno),
        }
    }
}

/// Whose directories and files are trusted besides root and the current user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trust {
    /// Another uid whose directories may be on the way (the daemon's, for a client
    /// reaching a shared socket).
    pub also: Option<u32>,
}

impl Trust {
    fn owner_ok(&self, uid: u32) -> bool {
        uid == 0 || uid == me() || Some(uid) == self.also
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A directory reached safely: its descriptor (for `openat`) and its path.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SafeDir {
    /// The path it was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's status (owner, mode).
    pub fn stat(&self) -> Result<FileStat, UnsafePath> {
        fstat(self.fd.as_fd()).map_err(|e| UnsafePath::io(&self.path, e))
    }

    /// Open (or create, 0600) the regular file `name` in this directory, without
    /// following a symlink, and check that it is ours and not writable by others.
    pub fn open_file(&self, name: &str, flags: OFlag) -> Result<File, UnsafePath> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd.as_fd(),
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| refusal(&self.fd, name, &path, e))?;
        let st = fstat(fd.as_fd()).map_err(|e| UnsafePath::io(&path, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(UnsafePath::Kind {
                path,
                expected: "regular file",
            });
        }
        check_owner_and_mode(&path, &st, Trust::default(), false)?;
        Ok(File::from(fd))
    }

    /// Open (or create, 0700) the directory `name` in this one, checked the same way.
    pub fn subdir(&self, name: &str, create: bool) -> Result<SafeDir, UnsafePath> {
        let path = self.path.join(name);
        let fd = open_component(&self.fd, name, &path, create)?;
        let st = fstat(fd.as_fd()).map_err(|e| UnsafePath::io(&path, e))?;
        check_owner_and_mode(&path, &st, Trust::default(), false)?;
        if st.st_uid != me() {
            return Err(UnsafePath::Owner {
                path,
                uid: st.st_uid,
                me: me(),
            });
        }
        Ok(SafeDir { fd, path })
    }

    /// Remove the entry `name` (a file or a directory tree) without following
    /// symlinks. A missing entry is not an error.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let path = self.path.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Walk to the directory `path` (creating missing components 0700 when `create`),
/// checking every component. The directory itself must be owned by the user (or by
/// `trust.also`) and writable by nobody else.
pub fn open_dir(path: &Path, create: bool, trust: Trust) -> Result<SafeDir, UnsafePath> {
    let path = absolute(path)?;
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnsafePath::io(Path::new("/"), e))?;
    let mut dir = root;
    let mut at = PathBuf::from("/");
    let names: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let last = names.len();
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        let name = name.to_str().ok_or_else(|| UnsafePath::Kind {
            path: at.clone(),
            expected: "UTF-8 path",
        })?;
        let next = open_component(&dir, name, &at, create)?;
        let st = fstat(next.as_fd()).map_err(|e| UnsafePath::io(&at, e))?;
        let is_final = i + 1 == last;
        check_owner_and_mode(&at, &st, trust, !is_final)?;
        if is_final && st.st_uid != me() && Some(st.st_uid) != trust.also {
            return Err(UnsafePath::Owner {
                path: at,
                uid: st.st_uid,
                me: me(),
            });
        }
        dir = next;
    }
    if last == 0 {
        return Err(UnsafePath::Owner {
            path: at,
            uid: 0,
            me: me(),
        });
    }
    Ok(SafeDir { fd: dir, path })
}

/// Read a file that decides who gets in (config, policy): it may be reached through
/// symlinks (dotfile managers link them), but what it resolves to, and every directory
/// above that, must be root's or the user's and writable by nobody else. What is read
/// is what was checked: the checks are made on the open descriptor.
pub fn read_trusted_file(path: &Path) -> Result<String, UnsafePath> {
    let (file, _) = open_trusted_file(path)?;
    std::io::read_to_string(file).map_err(|source| UnsafePath::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Check a file that decides what runs or who gets in (a program, a config) the way
/// [`read_trusted_file`] does, without reading it. Returns the real path that was
/// checked: run that, not the name (a symlink in a directory someone else may write
/// could be pointed elsewhere after the check).
pub fn check_trusted_file(path: &Path) -> Result<PathBuf, UnsafePath> {
    open_trusted_file(path).map(|(_, real)| real)
}

fn open_trusted_file(path: &Path) -> Result<(File, PathBuf), UnsafePath> {
    let real = std::fs::canonicalize(path).map_err(|source| UnsafePath::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(UnsafePath::Kind {
            path: real,
            expected: "file",
        });
    };
    let dir = open_dir_for_reading(parent, false)?;
    let name = name.to_str().ok_or_else(|| UnsafePath::Kind {
        path: real.clone(),
        expected: "UTF-8 path",
    })?;
    // O_PATH: a program need not be readable to be checked (only executable).
    let fd = openat(
        dir.fd.as_fd(),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnsafePath::io(&real, e))?;
    let st = fstat(fd.as_fd()).map_err(|e| UnsafePath::io(&real, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(UnsafePath::Kind {
            path: real,
            expected: "regular file",
        });
    }
    check_owner_and_mode(&real, &st, Trust::default(), false)?;
    // Reopen for reading through the checked descriptor (not the path again).
    let readable = nix::fcntl::open(
        &PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        )),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    match readable {
        Ok(fd) => Ok((File::from(fd), real)),
        // Executable but not readable (a program): checked all the same.
        Err(Errno::EACCES) => Ok((File::from(fd), real)),
        Err(e) => Err(UnsafePath::io(&real, e)),
    }
}

/// Like [`open_dir`], for a directory we only read from: it may be root's. A
/// root-owned sticky directory is fine `on_the_way` (not as the file's own directory).
fn open_dir_for_reading(path: &Path, on_the_way: bool) -> Result<SafeDir, UnsafePath> {
    let parent = path.parent();
    let name = path.file_name().and_then(|n| n.to_str());
    match (parent, name) {
        (Some(parent), Some(name)) => {
            let above = open_dir_for_reading(parent, true)?;
            let at = above.path.join(name);
            let fd = open_component(&above.fd, name, &at, false)?;
            let st = fstat(fd.as_fd()).map_err(|e| UnsafePath::io(&at, e))?;
            check_owner_and_mode(&at, &st, Trust::default(), on_the_way)?;
            Ok(SafeDir { fd, path: at })
        }
        _ => Ok(SafeDir {
            fd: nix::fcntl::open(
                "/",
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| UnsafePath::io(Path::new("/"), e))?,
            path: PathBuf::from("/"),
        }),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, UnsafePath> {
    let abs = std::path::absolute(path).map_err(|source| UnsafePath::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if abs.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(UnsafePath::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    Ok(abs)
}

/// Open one directory component below `dir` without following a symlink, creating it
/// 0700 first when asked and missing.
fn open_component(
    dir: &OwnedFd,
    name: &str,
    path: &Path,
    create: bool,
) -> Result<OwnedFd, UnsafePath> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) if create => {
            match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(UnsafePath::io(path, e)),
            }
            openat(dir.as_fd(), name, flags, Mode::empty()).map_err(|e| refusal(dir, name, path, e))
        }
        Err(e) => Err(refusal(dir, name, path, e)),
    }
}

/// Turn an `openat` failure into the clearest refusal: a symlink is named as such.
fn refusal(dir: &OwnedFd, name: &str, path: &Path, e: Errno) -> UnsafePath {
    if matches!(e, Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK) {
        let st =
            nix::sys::stat::fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
        if let Ok(st) = st {
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return UnsafePath::Symlink {
                    path: path.to_path_buf(),
                };
            }
            if e == Errno::ENOTDIR {
                return UnsafePath::Kind {
                    path: path.to_path_buf(),
                    expected: "directory",
                };
            }
        }
    }
    UnsafePath::io(path, e)
}

/// Owned by root, the user or a trusted uid; writable by nobody else. A root-owned
/// sticky directory may be world-writable when `on_the_way` (it is not where the file
/// lives).
fn check_owner_and_mode(
    path: &Path,
    st: &FileStat,
    trust: Trust,
    on_the_way: bool,
) -> Result<(), UnsafePath> {
    if !trust.owner_ok(st.st_uid) {
        return Err(UnsafePath::Owner {
            path: path.to_path_buf(),
            uid: st.st_uid,
            me: me(),
        });
    }
    let mode = st.st_mode & 0o7777;
    let sticky_root_dir = on_the_way
        && st.st_uid == 0
        && mode & libc::S_ISVTX != 0
        && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Err(UnsafePath::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
