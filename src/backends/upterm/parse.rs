//! Reading what upterm prints: its session block (the link) and, when no link comes,
//! its own words for why.
//!
//! termshare runs `upterm host --accept` with stdout a pipe. upterm then prints its
//! session block once and never wraps it (`wrapLines` skips wrapping when stdout is not
//! a terminal; the tablewriter of older versions ran with `SetAutoWrapText(false)`).
//! So the link is complete on the line that carries it. The layouts, from upterm's
//! source:
//!
//! - ≥ v0.22.0 (the first with `--no-sftp`): `cmd/upterm/command/internal/tui/
//!   session_detail.go`, `renderSessionDetail`: a `➤ SSH:` line, then the command on the
//!   next line, indented 4 columns, and nothing after it.
//! - v0.21.x: the same file: `➤ SSH Command:` padded to 18 columns, the command after it.
//! - ≤ v0.20: `cmd/upterm/command/session.go`, a table under `=== SESSION_ID` with an
//!   `SSH Session:` row.

use crate::backends::strip_ansi;

/// Reads upterm's output line by line; `feed` returns the link on the line that
/// completes it.
#[derive(Default)]
pub struct UptermLinkParser {
    /// The previous line was `➤ SSH:` (≥ v0.22): the command is on the next one.
    after_ssh_label: bool,
    /// Lines that were not the session block, for [`diagnose`] (the last 50).
    pub others: Vec<String>,
}

impl UptermLinkParser {
    /// Take one raw line of upterm's output; the `ssh …` link on the line that gives it.
    pub fn feed(&mut self, raw: &str) -> Option<String> {
        let line = strip_ansi(raw);
        let trimmed = line.trim();
        if self.after_ssh_label {
            if trimmed.is_empty() {
                return None;
            }
            self.after_ssh_label = false;
            if trimmed.starts_with("ssh ") {
                return Some(trimmed.to_owned());
            }
        }
        let label = trimmed.trim_start_matches('➤').trim_start();
        if label == "SSH:" {
            self.after_ssh_label = true;
            return None;
        }
        for name in ["SSH Command:", "SSH Session:"] {
            if let Some(value) = label.strip_prefix(name).map(str::trim) {
                if value.starts_with("ssh ") {
                    return Some(value.to_owned());
                }
            }
        }
        if !trimmed.is_empty() {
            if self.others.len() == 50 {
                self.others.remove(0);
            }
            self.others.push(trimmed.chars().take(300).collect());
        }
        None
    }
}

/// What went wrong, in our words, by what upterm said (its messages; observed with
/// upterm v0.24 against uptermd, and in `host/host.go` and golang.org/x/crypto/ssh).
const CAUSES: [(&[&str], &str); 4] = [
    (
        &[
            "authenticity of host",
            "knownhosts: key is unknown",
            "key mismatch",
            "certificate signed by unrecognized authority",
        ],
        "the upterm server's host key is not trusted: uptermd presents a host certificate, \
         so set [backends.upterm] server_ca_key to its CA key (or known_hosts to a file with \
         an @cert-authority line for it)",
    ),
    (
        &["permission denied (publickey)", "unable to authenticate"],
        "the upterm server refused termshare's key (permission denied)",
    ),
    (
        &["connection refused"],
        "the upterm server refused the connection (nothing listens on its port)",
    ),
    (
        &[
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "no route to host",
        ],
        "the upterm server is unreachable",
    ),
];

/// Why upterm gave no link, from the lines it printed (stdout outside the block, and
/// stderr): a known cause with upterm's line quoted, else upterm's own `Error:` line.
/// Never its usage text.
pub fn diagnose(lines: &[String]) -> Option<String> {
    for (needles, cause) in CAUSES {
        let said = lines.iter().find(|l| {
            let l = l.to_lowercase();
            needles.iter().any(|n| l.contains(n))
        });
        if let Some(said) = said {
            return Some(format!("{cause} (upterm said: {said:?})"));
        }
    }
    lines
        .iter()
        .find(|l| l.starts_with("Error:"))
        .map(|l| format!("upterm said: {l:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<String> {
        let mut p = UptermLinkParser::default();
        text.lines().find_map(|l| p.feed(l))
    }

    /// upterm v0.24.0 with stdout a pipe, as observed against uptermd on loopback
    /// (renderSessionDetail in cmd/upterm/command/internal/tui/session_detail.go):
    /// nothing follows the command line.
    #[test]
    fn layout_of_v0_22_and_later() {
        let out = "Session: uzGvpZlTsNJagu87fUKI\n\nCommand:          sleep infinity\nForce Command:    tmux -S /path/h.sock attach -t h\nHost:             ssh://127.0.0.1:2222\n\n➤ SSH:\n    ssh uzGvpZlTsNJagu87fUKI:MTI3LjAuMC4xOjIyMjI=@127.0.0.1 -p 2222\n";
        let mut p = UptermLinkParser::default();
        let lines: Vec<&str> = out.lines().collect();
        // Complete on the command's own line: the last one upterm prints.
        for l in &lines[..lines.len() - 1] {
            assert_eq!(p.feed(l), None, "{l}");
        }
        assert_eq!(
            p.feed(lines[lines.len() - 1]).as_deref(),
            Some("ssh uzGvpZlTsNJagu87fUKI:MTI3LjAuMC4xOjIyMjI=@127.0.0.1 -p 2222")
        );
    }

    /// v0.22+ with authorized keys and SFTP shown: the SSH command is still the one
    /// after `➤ SSH:`, not the SFTP or SCP ones.
    #[test]
    fn layout_of_v0_22_with_sftp_rows() {
        let out = "Session: abc\n\nCommand:          bash\nHost:             ssh://h:22\nAuthorized Keys:  SHA256:x\n\n➤ SSH:\n    ssh abc@h\n➤ SFTP:\n    sftp abc@h\n";
        assert_eq!(parse(out).as_deref(), Some("ssh abc@h"));
    }

    /// v0.21.x (session_detail.go, renderWrappedRow with the `➤ SSH Command:` label).
    #[test]
    fn layout_of_v0_21() {
        let out = "Session: abc\n\nCommand:          sleep infinity\nHost:             ssh://127.0.0.1:2222\n\n➤ SSH Command:    ssh abc:MTI3@127.0.0.1 -p 2222\n";
        assert_eq!(
            parse(out).as_deref(),
            Some("ssh abc:MTI3@127.0.0.1 -p 2222")
        );
    }

    /// ≤ v0.20 (session.go: tablewriter, `=== ID` header, `SSH Session:` row).
    #[test]
    fn layout_of_v0_20_and_earlier() {
        let out = "=== IQKSFOICLSNNXQZTDKOJ\nCommand:                bash\nForce Command:          n/a\nHost:                   ssh://uptermd.upterm.dev:22\nSSH Session:            ssh IqKsfoiclsNnxqztDKoj:MTAuMC40OS4xNjY6MjI=@uptermd.upterm.dev\n\n";
        assert_eq!(
            parse(out).as_deref(),
            Some("ssh IqKsfoiclsNnxqztDKoj:MTAuMC40OS4xNjY6MjI=@uptermd.upterm.dev")
        );
    }

    /// A ws:// server gives a command with a ProxyCommand (session.go, ≤ v0.20).
    #[test]
    fn a_websocket_servers_command_is_taken_whole() {
        let out =
            "SSH Session:            ssh -o ProxyCommand='upterm proxy wss://t@h:443' t@h:443\n";
        assert_eq!(
            parse(out).as_deref(),
            Some("ssh -o ProxyCommand='upterm proxy wss://t@h:443' t@h:443")
        );
    }

    #[test]
    fn colored_output() {
        assert_eq!(
            parse("\x1b[1m➤ SSH:\x1b[0m\n    \x1b[32mssh tok@host\x1b[0m\n").as_deref(),
            Some("ssh tok@host")
        );
    }

    #[test]
    fn causes_name_upterms_own_words_not_its_usage() {
        let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let host_key = diagnose(&lines(&[
            "The authenticity of host '[127.0.0.1]:2222 ([127.0.0.1]:2222)' can't be established.",
            "Error: ssh: handshake failed: EOF",
            "Usage:",
            "  upterm host [flags] [-- command]",
        ]))
        .unwrap();
        assert!(host_key.contains("host key is not trusted"), "{host_key}");
        assert!(host_key.contains("server_ca_key"), "{host_key}");
        let denied = diagnose(&lines(&[
            "Usage:",
            "  upterm host",
            "Permission denied (publickey).",
        ]))
        .unwrap();
        assert!(denied.contains("refused termshare's key"), "{denied}");
        let refused = diagnose(&lines(&[
            "Error: dial tcp 127.0.0.1:2222: connect: connection refused",
        ]))
        .unwrap();
        assert!(refused.contains("refused the connection"), "{refused}");
        let other = diagnose(&lines(&["Error: something new", "Usage:", "  upterm host"])).unwrap();
        assert_eq!(other, "upterm said: \"Error: something new\"");
        assert_eq!(diagnose(&lines(&["Usage:", "  upterm host [flags]"])), None);
    }
}
