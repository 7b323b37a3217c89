//! The host terminal: a tmux session by default (any attach command can be configured).
//! A share attaches a new client to it; termshare never owns or kills the terminal's
//! own processes.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use termshare_actors::{AccessMode, TerminalContext, TerminalHost, TerminalName};
use tokio::process::Command;

pub struct TmuxHost {
    /// `tmux -S SOCKET`; `None`: the user's default tmux server.
    pub socket: Option<PathBuf>,
    /// Attach argv templates; `{terminal}` is replaced by the terminal's name.
    pub attach: Vec<String>,
    pub attach_read_only: Vec<String>,
}

impl TmuxHost {
    pub fn new(socket: Option<PathBuf>) -> Self {
        TmuxHost {
            socket,
            attach: default_attach(false),
            attach_read_only: default_attach(true),
        }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        if let Some(s) = &self.socket {
            c.arg("-S").arg(s);
        }
        c.env_remove("TMUX").kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::time::timeout(Duration::from_secs(3), self.tmux().args(args).output())
            .await
            .map_err(|_| "tmux did not answer within 3s".to_string())?
            .map_err(|e| format!("cannot run tmux: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

/// `["tmux", "attach-session", ("-r",) "-t", "{terminal}"]`.
pub fn default_attach(read_only: bool) -> Vec<String> {
    let mut v = vec!["tmux".to_string(), "attach-session".into()];
    if read_only {
        v.push("-r".into());
    }
    v.extend(["-t".into(), "{terminal}".into()]);
    v
}

#[async_trait]
impl TerminalHost for TmuxHost {
    async fn check(&self, terminal: &TerminalName) -> Result<Option<(u16, u16)>, String> {
        // One tmux round trip: has-session fails when there is no such session (`=NAME`
        // matches exactly, not by prefix) and stops the sequence; otherwise
        // display-message tells the size. (display-message alone does not fail on a
        // missing target.)
        let session = format!("={terminal}");
        let window = format!("={terminal}:");
        let out = self
            .run(&[
                "has-session",
                "-t",
                &session,
                ";",
                "display-message",
                "-p",
                "-t",
                &window,
                "#{window_width} #{window_height}",
            ])
            .await
            .map_err(|e| {
                if e.is_empty() {
                    format!("no tmux session {terminal}")
                } else {
                    e
                }
            })?;
        Ok(out
            .split_once(' ')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))))
    }

    fn attach_command(&self, terminal: &TerminalName, access: AccessMode) -> Vec<String> {
        let template = match access {
            AccessMode::ReadOnly => &self.attach_read_only,
            AccessMode::ReadWrite => &self.attach,
        };
        let mut argv: Vec<String> = template
            .iter()
            .map(|a| a.replace("{terminal}", terminal.as_str()))
            .collect();
        // The shared client must reach the same tmux server as `check` did.
        if let (Some(sock), Some(first)) = (&self.socket, argv.first()) {
            if first == "tmux" && !argv.iter().any(|a| a == "-S" || a == "-L") {
                argv.splice(
                    1..1,
                    ["-S".to_string(), sock.to_string_lossy().into_owned()],
                );
            }
        }
        argv
    }

    async fn capture(
        &self,
        terminal: &TerminalName,
        lines: usize,
    ) -> Result<TerminalContext, String> {
        let target = format!("={terminal}:");
        let info = self
            .run(&[
                "display-message",
                "-p",
                "-t",
                &target,
                "#{pane_current_path}\t#{pane_current_command}\t#{pane_width}\t#{pane_height}",
            ])
            .await?;
        let fields: Vec<&str> = info.split('\t').collect();
        let [cwd, command, cols, rows] = fields[..] else {
            return Err(format!(
                "tmux gave an unexpected pane description: {info:?}"
            ));
        };
        // History and screen, joined where tmux wrapped lines; keep the last `lines`.
        let start = format!("-{lines}");
        let text = self
            .run(&["capture-pane", "-p", "-J", "-t", &target, "-S", &start])
            .await?;
        let all: Vec<&str> = text.trim_end().lines().collect();
        Ok(TerminalContext {
            cwd: cwd.to_owned(),
            command: command.to_owned(),
            scrollback: all[all.len().saturating_sub(lines)..].join("\n"),
            cols: cols.parse().unwrap_or(0),
            rows: rows.parse().unwrap_or(0),
        })
    }

    async fn notify(&self, terminal: &TerminalName, message: &str) -> Result<(), String> {
        // Shown on every client attached to the session, participants' included:
        // display-message reaches one client only, so address each in turn.
        let target = format!("={terminal}:");
        let clients = self
            .run(&[
                "list-clients",
                "-t",
                &format!("={terminal}"),
                "-F",
                "#{client_name}",
            ])
            .await?;
        for client in clients.lines().filter(|c| !c.is_empty()) {
            self.run(&[
                "display-message",
                "-c",
                client,
                "-d",
                "5000",
                "-t",
                &target,
                message,
            ])
            .await?;
        }
        Ok(())
    }
}
