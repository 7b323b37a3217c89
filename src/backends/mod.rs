//! Backend adapters: each turns a share into one foreground worker process.
//!
//! | backend   | how tested here |
//! |-----------|-----------------|
//! | tty-share | the real Debian binary, with real participants |
//! | tmate     | the real Debian binary (no relay is reachable here: the link-timeout path) |
//! | upterm    | a stand-in executable that prints what upterm prints (not packaged here) |

#[cfg(feature = "tty-share")]
pub mod link_front;
#[cfg_attr(feature = "tty-share", allow(dead_code))] // used by builds without a backend
pub(crate) mod not_built;
pub mod presence;
#[cfg(feature = "tty-share")]
mod redraw;
pub mod serving;
pub mod tmate;
#[cfg(feature = "tty-share")]
pub mod tty_share;
pub mod upterm;

use std::path::Path;

/// Every backend's name, as configs, policies and the CLI write it.
pub const NAMES: [&str; 3] = [TTY_SHARE, tmate::NAME, upterm::NAME];

/// tty-share's name, known whether or not this build has its adapter (the
/// `tty-share` feature): a config or policy naming it still parses.
pub const TTY_SHARE: &str = "tty-share";

use termshare_actors::BackendError;

use crate::launch::Resolved;

/// The backend's program as resolved at start, or why the backend is unavailable.
pub(crate) fn program<'a>(backend: &str, resolved: &'a Resolved) -> Result<&'a Path, BackendError> {
    match resolved {
        Resolved::Found(p) => Ok(p),
        Resolved::Missing(why) => Err(BackendError::Unavailable {
            backend: backend.to_owned(),
            reason: why.clone(),
        }),
    }
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

/// An argv as one `sh -c` command line, each word quoted as needed.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Strip ANSI escape sequences (CSI and OSC) from a line of backend output.
pub fn strip_ansi(s: &str) -> String {
    strip_ansi_escapes::strip_str(s)
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
