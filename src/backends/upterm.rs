//! upterm: an ssh relay through an uptermd server.
//!
//! upterm is not packaged for Debian, so it cannot be installed here: this adapter is
//! written from upterm's CLI (`upterm host --accept --server URL --known-hosts F
//! [--read-only] [--authorized-keys F] [--github-user U] --force-command CMD -- HOLD`)
//! and the session block it prints, and its tests drive a stand-in executable that
//! prints that block (tests/bin/upterm).
//!
//! The block's layout changed over versions; all of these are recognised:
//! - old: `SSH Session:            ssh TOKEN@HOST` after `=== SESSION_ID`;
//! - newer (`➤ SSH Session:` / `➤ SSH Command:`), where the value is hard-wrapped to
//!   the terminal width (80 columns when stdout is a pipe) and continues on lines
//!   indented past the label column.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use termshare_actors::{AccessMode, BackendError, BackendName, Links, StartedWorker, WorkerSpec};

use crate::backends::{program, shell_join, strip_ansi};
use crate::launch::Resolved;
use crate::process::{GracefulStop, LinkWait, ProcessSpawner, ProcessWorker, WorkerCommand};

pub const NAME: &str = "upterm";

/// `[backends.upterm]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UptermSettings {
    /// The upterm binary (a path, or a name looked up in PATH).
    pub program: String,
    pub server: String,
    pub known_hosts: Option<PathBuf>,
    pub authorized_keys: Option<PathBuf>,
    pub github_users: Vec<String>,
}

impl Default for UptermSettings {
    fn default() -> Self {
        UptermSettings {
            program: "upterm".into(),
            server: "ssh://uptermd.upterm.dev:22".into(),
            known_hosts: None,
            authorized_keys: None,
            github_users: Vec::new(),
        }
    }
}

pub struct UptermBackend {
    spawner: Arc<ProcessSpawner>,
    settings: UptermSettings,
    /// `settings.program`, resolved when termshare started.
    program: Resolved,
}

impl UptermBackend {
    /// `program` is `settings.program` resolved at start ([`crate::Programs`]).
    pub fn new(spawner: Arc<ProcessSpawner>, settings: UptermSettings, program: Resolved) -> Self {
        UptermBackend {
            spawner,
            settings,
            program,
        }
    }

    /// The full argv of `upterm host` for this share.
    pub fn host_args(&self, spec: &WorkerSpec) -> Vec<String> {
        let s = &self.settings;
        let mut a: Vec<String> = vec![
            "host".into(),
            "--accept".into(),
            "--no-sftp".into(),
            "--server".into(),
            s.server.clone(),
        ];
        if let Some(k) = &s.known_hosts {
            a.extend(["--known-hosts".into(), k.to_string_lossy().into_owned()]);
        }
        if spec.access == AccessMode::ReadOnly {
            a.push("--read-only".into());
        }
        if let Some(k) = &s.authorized_keys {
            a.extend(["--authorized-keys".into(), k.to_string_lossy().into_owned()]);
        }
        for u in &s.github_users {
            a.extend(["--github-user".into(), u.clone()]);
        }
        // Participants get the attach command; the host side only holds the session.
        a.extend(["--force-command".into(), shell_join(&spec.attach)]);
        a.extend(["--".into(), "sleep".into(), "infinity".into()]);
        a
    }
}

/// Reads upterm's session block, line by line.
#[derive(Default)]
pub struct UptermLinkParser {
    /// The value being read; continuation lines are indented (to the value column).
    value: Option<String>,
}

impl UptermLinkParser {
    pub fn feed(&mut self, raw: &str) -> Option<String> {
        let line = strip_ansi(raw);
        if let Some(v) = &mut self.value {
            // A continuation is indented to the value column and carries no label.
            let indent = line.len() - line.trim_start().len();
            if indent >= 8 && !line.trim().is_empty() && !line.contains(": ") {
                v.push_str(line.trim());
                return None;
            }
            let done = v.clone();
            self.value = None;
            return Some(done);
        }
        let trimmed = line
            .trim_start_matches(|c: char| c.is_whitespace() || c == '➤')
            .trim_end();
        for label in ["SSH Session:", "SSH Command:"] {
            if let Some(rest) = trimmed.strip_prefix(label) {
                let value = rest.trim();
                if value.starts_with("ssh ") {
                    self.value = Some(value.to_owned());
                }
            }
        }
        None
    }

    /// Ends the block at end of output (a value on the last line).
    pub fn finish(&mut self) -> Option<String> {
        self.value.take()
    }
}

#[async_trait]
impl termshare_actors::Backend for UptermBackend {
    fn name(&self) -> BackendName {
        BackendName::new(NAME)
    }

    fn restricts_joins(&self) -> bool {
        self.settings.authorized_keys.is_some() || !self.settings.github_users.is_empty()
    }

    fn check(&self) -> Result<(), BackendError> {
        for (what, f) in [
            ("known_hosts", &self.settings.known_hosts),
            ("authorized_keys", &self.settings.authorized_keys),
        ] {
            if let Some(f) = f {
                if !f.is_file() {
                    return Err(BackendError::Unavailable {
                        backend: NAME.into(),
                        reason: format!("{what} file {} does not exist", f.display()),
                    });
                }
            }
        }
        program(NAME, &self.program).map(|_| ())
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        // Everything is passed explicitly; the clean environment has no UPTERM_* or TMUX.
        let upterm = program(NAME, &self.program)?;
        let cmd = WorkerCommand::new(upterm.to_string_lossy()).args(self.host_args(&spec));
        let mut process =
            self.spawner
                .spawn(&cmd)
                .await
                .map_err(|e| BackendError::StartFailed {
                    backend: NAME.into(),
                    detail: format!("cannot run upterm: {e}"),
                })?;
        let mut parser = UptermLinkParser::default();
        // A blank line (or the next label) ends the wrapped value.
        let link = process
            .read_until(spec.link_timeout, |l| parser.feed(l))
            .await;
        let link = match link {
            Ok(link) => link,
            Err(LinkWait::TimedOut) => {
                return Err(BackendError::LinkTimeout {
                    backend: NAME.into(),
                    after: spec.link_timeout,
                    detail: format!(
                        "the upterm server {} was not reachable: {}",
                        self.settings.server,
                        process.stderr_tail()
                    ),
                })
            }
            Err(LinkWait::Exited(how)) => match parser.finish() {
                Some(_) => {
                    return Err(BackendError::StartFailed {
                        backend: NAME.into(),
                        detail: format!("upterm printed a session but {how}"),
                    })
                }
                None => {
                    return Err(BackendError::StartFailed {
                        backend: NAME.into(),
                        detail: format!("upterm {how}: {}", process.stderr_tail()),
                    })
                }
            },
        };
        Ok(StartedWorker {
            links: Links::new(link),
            worker: Box::new(ProcessWorker::new(process, GracefulStop::SigTerm, vec![])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<String> {
        let mut p = UptermLinkParser::default();
        for l in text.lines() {
            if let Some(v) = p.feed(l) {
                return Some(v);
            }
        }
        p.finish()
    }

    #[test]
    fn old_layout() {
        let out = "=== IQKSFOICLSNNXQZTDKOJ\nCommand:                bash\nForce Command:          n/a\nHost:                   ssh://uptermd.upterm.dev:22\nSSH Session:            ssh IqKsfoiclsNnxqztDKoj:MTAuMC40OS4xNjY6MjI=@uptermd.upterm.dev\n\n";
        assert_eq!(
            parse(out).as_deref(),
            Some("ssh IqKsfoiclsNnxqztDKoj:MTAuMC40OS4xNjY6MjI=@uptermd.upterm.dev")
        );
    }

    #[test]
    fn new_layout_with_a_wrapped_value() {
        let out = "Session: abc\n\nCommand:          sleep infinity\nHost:             ssh://127.0.0.1:2222\n\n➤ SSH Command:    ssh abcdefghijklmnopqrstuvwxyz:MTAuMC40OS4xNjY6MjI=@upterm\n                  d.example.org -p 2222\n\n💡 Run 'upterm session current' to display this again\n";
        assert_eq!(
            parse(out).as_deref(),
            Some("ssh abcdefghijklmnopqrstuvwxyz:MTAuMC40OS4xNjY6MjI=@uptermd.example.org -p 2222")
        );
    }

    #[test]
    fn colored_output() {
        let out = "\x1b[1m➤ SSH Session:\x1b[0m    \x1b[32mssh tok@host\x1b[0m\n\n";
        assert_eq!(parse(out).as_deref(), Some("ssh tok@host"));
    }
}
