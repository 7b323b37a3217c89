//! Backend adapters: each turns a share into one foreground worker process.
//!
//! | backend   | how tested here |
//! |-----------|-----------------|
//! | tty-share | the real Debian binary, with real participants |
//! | tmate     | the real Debian binary (no relay is reachable here: the link-timeout path) |
//! | upterm    | a stand-in executable that prints what upterm prints (not packaged here) |

pub mod tmate;
pub mod tty_share;
pub mod upterm;

use std::path::{Path, PathBuf};

use termshare_actors::BackendError;

/// Find `program` the way `execvp` would: a path with a slash as is, else in `$PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return is_executable(p).then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
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

pub(crate) fn require_program(
    backend: &str,
    program: &str,
    hint: &str,
) -> Result<PathBuf, BackendError> {
    find_program(program).ok_or_else(|| BackendError::Unavailable {
        backend: backend.to_owned(),
        reason: format!("`{program}` was not found in PATH ({hint})"),
    })
}

/// Quote one word for `sh -c`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Strip ANSI escape sequences (CSI and OSC) from a line of backend output.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // CSI: parameters then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: until BEL or ESC \
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_sh() {
        let argv = vec!["tmux".to_string(), "-S".into(), "/tmp/a b/it's".into()];
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {}", shell_join(&argv)))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "tmux\n-S\n/tmp/a b/it's\n"
        );
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(strip_ansi("\x1b[1;32mSSH\x1b[0m x"), "SSH x");
        assert_eq!(strip_ansi("\x1b]0;title\x07ok"), "ok");
    }
}
