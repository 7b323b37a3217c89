//! What worker processes are launched with: binaries resolved to absolute paths once,
//! when termshare starts, and an allow-listed environment.
//!
//! A daemon's environment can hold secrets (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`),
//! and whatever a worker inherits, its participants' shell may reach through it. So
//! every process termshare starts (backends, their attach clients, tmux) gets only the
//! variables below, taken once at start. And a binary looked up in `PATH` at each spawn
//! would run whatever someone planted earlier in `PATH` later; so each is resolved
//! once, at start (or pinned in the config), and run by its absolute path.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::secure_fs;

/// Variables a worker may inherit. `LC_*` is matched by prefix.
const ALLOWED: &[&str] = &["PATH", "HOME", "LANG", "TERM", "USER", "LOGNAME", "TZ"];

/// The environment every worker gets: the allow-listed variables of termshare's own
/// environment at start, and nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanEnv {
    vars: Vec<(OsString, OsString)>,
}

impl CleanEnv {
    /// Take the allow-listed variables from the current environment. Without `TERM`
    /// (a daemon under systemd), workers get `xterm-256color`, what participants'
    /// terminals (xterm.js, the tty-share client) emulate: an attach client needs one.
    pub fn from_current() -> Self {
        let mut env = Self::from_vars(std::env::vars_os());
        if !env.vars.iter().any(|(k, _)| k == "TERM") {
            env.vars.push(("TERM".into(), "xterm-256color".into()));
        }
        env
    }

    /// The allow-listed ones of `vars` (no `TERM` default added).
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars = vars
            .into_iter()
            .filter(|(k, _)| allowed(k))
            .collect::<Vec<_>>();
        CleanEnv { vars }
    }

    /// The variables, as name and value.
    pub fn vars(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    /// Give `cmd` exactly this environment (plus what the caller adds afterwards).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear();
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
    }
}

fn allowed(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    ALLOWED.contains(&key) || key.starts_with("LC_")
}

/// A program resolved at start: its absolute path, or why it cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The checked, real (symlink-free) path to run.
    Found(PathBuf),
    /// Why it cannot be used: not found, not executable, or not safe to run.
    Missing(String),
}

impl Resolved {
    /// `pinned` (an absolute path from the config) or `name` looked up in `PATH` now.
    /// Either must be an executable file that only root or the user can change.
    pub fn resolve(name: &str, pinned: Option<&Path>) -> Resolved {
        let found = match pinned {
            Some(p) => Some(p.to_path_buf()),
            None => find_in_path(name),
        };
        let Some(path) = found else {
            return Resolved::Missing(format!(
                "`{name}` was not found in PATH when termshare started"
            ));
        };
        if !is_executable(&path) {
            return Resolved::Missing(format!("{} is not an executable file", path.display()));
        }
        // What runs is the real file that was checked, not a name that a symlink
        // could point elsewhere later.
        match secure_fs::check_trusted_file(&path) {
            Ok(real) => Resolved::Found(real),
            Err(e) => Resolved::Missing(format!("{} is not safe to run: {e}", path.display())),
        }
    }

    /// The path to run, if it was found.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Resolved::Found(p) => Some(p),
            Resolved::Missing(_) => None,
        }
    }

    /// For `serve --check`: the path, or why there is none.
    pub fn describe(&self) -> String {
        match self {
            Resolved::Found(p) => p.display().to_string(),
            Resolved::Missing(why) => format!("unavailable: {why}"),
        }
    }
}

/// Find `program` the way `execvp` would: a path with a slash as is, else in `$PATH`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_variables_pass() {
        let env = CleanEnv::from_vars([
            ("PATH".into(), "/usr/bin".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t".into()),
            ("LC_ALL".into(), "C.UTF-8".into()),
            ("GITHUB_TOKEN".into(), "ghp_x".into()),
            ("TMUX".into(), "/tmp/tmux-0/default,1,0".into()),
        ]);
        let keys: Vec<_> = env
            .vars()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys, ["PATH", "LC_ALL"]);
    }

    #[test]
    fn a_missing_or_relative_program_is_reported() {
        assert!(matches!(
            Resolved::resolve("no-such-program-here", None),
            Resolved::Missing(_)
        ));
        assert!(matches!(Resolved::resolve("sh", None), Resolved::Found(p) if p.is_absolute()));
    }
}
