//! The host terminal: a tmux session by default (any attach command can be configured).
//! A share attaches a new client to it; termshare never owns or kills the terminal's
//! own processes.
//!
//! Every tmux command names the server by its socket path (`-S`), resolved once at
//! start, and the session by `=NAME`, which tmux matches exactly (a bare `-t @1` would
//! be window @1 of whatever session has it; `-t dev` the first session whose name
//! starts with `dev`). The attach client runs inside the worker, possibly in a
//! namespace where the default socket path would differ: `-S` keeps it on the same
//! server as the check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use termshare_actors::{AccessMode, TerminalContext, TerminalHost, TerminalName};
use tokio::process::Command;

use crate::launch::CleanEnv;
use crate::secure_fs::{self, Trust};

mod wire;

/// The [`TerminalHost`] over one tmux server: checks, attaches to, messages and
/// captures its sessions.
#[derive(Clone)]
pub struct TmuxHost {
    /// The tmux binary, by absolute path.
    program: PathBuf,
    /// The tmux server's socket (`tmux -S SOCKET`).
    socket: PathBuf,
    /// Attach argv templates; `{terminal}` is replaced by the terminal's name.
    attach: Vec<String>,
    attach_read_only: Vec<String>,
    /// The environment of every tmux command termshare runs.
    env: Arc<CleanEnv>,
    /// Where recordings go (`[recording] dir`); `None`: recording is unavailable.
    recordings: Option<PathBuf>,
    /// The most one recording may grow to (`[recording] max_bytes`).
    recording_limit: u64,
    /// Each terminal's size as its last check found it (at most MAX_SIZE_HINTS): a
    /// share's worker starts at it while the terminal is checked again.
    sizes: Arc<parking_lot::Mutex<HashMap<TerminalName, (u16, u16)>>>,
    /// Whether the tmux server with this pid may be queried over tmux's own protocol
    /// ([`wire`]): its `#{version}` was asked once with the tmux binary. A new server
    /// (another pid) is asked again.
    wire: Arc<parking_lot::Mutex<Option<(i32, bool)>>>,
}

/// How long a query over tmux's protocol may take before the binary is asked
/// instead (and from then on, for that server).
const WIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Terminals whose last-seen size is remembered; past it the memory starts afresh
/// (a forgotten size only means a start that waits for its check).
const MAX_SIZE_HINTS: usize = 4096;

impl TmuxHost {
    /// A host on the tmux server at `socket` (see [`TmuxHost::default_socket`]),
    /// attaching with `program -S socket attach-session (-r | -f ignore-size) -t =NAME`.
    pub fn new(program: PathBuf, socket: PathBuf, env: Arc<CleanEnv>) -> Self {
        let attach = default_attach(&program, &socket, false);
        let attach_read_only = default_attach(&program, &socket, true);
        TmuxHost {
            program,
            socket,
            attach,
            attach_read_only,
            env,
            recordings: None,
            recording_limit: crate::recording::DEFAULT_MAX_BYTES,
            sizes: Default::default(),
            wire: Default::default(),
        }
    }

    /// Remember what a check found about `terminal`.
    fn remember(&self, terminal: &TerminalName, checked: &Result<Option<(u16, u16)>, String>) {
        let mut sizes = self.sizes.lock();
        match checked {
            Ok(Some(size)) => {
                if sizes.len() >= MAX_SIZE_HINTS && !sizes.contains_key(terminal) {
                    sizes.clear();
                }
                sizes.insert(terminal.clone(), *size);
            }
            _ => {
                sizes.remove(terminal);
            }
        }
    }

    /// Record shares into `dir` (asciicast v2 files, 0600).
    pub fn with_recordings(mut self, dir: PathBuf) -> Self {
        self.recordings = Some(dir);
        self
    }

    /// A recording may grow to `max_bytes`; at that size its share ends.
    pub fn with_recording_limit(mut self, max_bytes: u64) -> Self {
        self.recording_limit = max_bytes;
        self
    }

    /// Replace the attach templates (for zmx, screen, dtach…). `{terminal}` is replaced
    /// by the terminal's name; the first word must be an absolute path.
    pub fn with_attach(mut self, read_write: Vec<String>, read_only: Vec<String>) -> Self {
        self.attach = read_write;
        self.attach_read_only = read_only;
        self
    }

    /// The default tmux server's socket, as tmux itself computes it:
    /// `$TMUX_TMPDIR/tmux-UID/default`, `TMUX_TMPDIR` defaulting to `/tmp`.
    pub fn default_socket() -> PathBuf {
        let dir = std::env::var_os("TMUX_TMPDIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        dir.join(format!("tmux-{}", nix::unistd::geteuid()))
            .join("default")
    }

    /// The tmux server's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The attach argv template for the access mode (`{terminal}` not yet replaced).
    pub fn attach_template(&self, read_only: bool) -> &[String] {
        if read_only {
            &self.attach_read_only
        } else {
            &self.attach
        }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new(&self.program);
        self.env.apply(&mut c);
        c.arg("-S").arg(&self.socket).kill_on_drop(true);
        c
    }

    /// Is the server at our socket ours? tmux checks its socket directory only when it
    /// computes the default path itself, never for `-S`; so termshare does: the
    /// directory must be the user's and writable by nobody else (no other user can
    /// have made it first, or swap the socket), and the process listening on it must
    /// run as the user (the kernel's word). Otherwise a server of someone else's could
    /// be handed our attach client, and through it our shell.
    async fn verify_server(&self) -> Result<(), String> {
        self.connect_verified().await.map(drop)
    }

    /// A connection to the tmux server, proven to be the user's own (see
    /// [`TmuxHost::verify_server`]), and the server's pid.
    async fn connect_verified(&self) -> Result<(tokio::net::UnixStream, Option<i32>), String> {
        let dir = self.socket.parent().unwrap_or(Path::new("/"));
        secure_fs::open_dir(dir, false, Trust::default())
            .map_err(|e| format!("the tmux socket's directory is refused: {e}"))?;
        let server = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("no tmux server at {}: {e}", self.socket.display()))?;
        let cred = server
            .peer_cred()
            .map_err(|e| format!("cannot tell who runs the tmux server: {e}"))?;
        let me = nix::unistd::geteuid().as_raw();
        if cred.uid() != me {
            return Err(format!(
                "the tmux server at {} runs as uid {}, not as you (uid {me}): refused",
                self.socket.display(),
                cred.uid()
            ));
        }
        Ok((server, cred.pid()))
    }

    /// Run a read-only query (the terminal check, the session list): over tmux's own
    /// protocol on the verified connection when the server's version is one [`wire`]
    /// knows, else (or if that exchange fails in any way) with the tmux binary. The
    /// answer is the binary's: stdout when every command succeeded, else stderr.
    async fn query(&self, args: &[&str]) -> Result<String, String> {
        let (server, pid) = self.connect_verified().await?;
        match pid {
            Some(pid) if self.wire_allowed(pid).await => {
                let failed =
                    match tokio::time::timeout(WIRE_TIMEOUT, wire::query(server, args)).await {
                        Ok(Ok(answer)) => {
                            let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
                            return if answer.status == 0 {
                                Ok(text(&answer.stdout))
                            } else {
                                Err(text(&answer.stderr))
                            };
                        }
                        // More than a query may bring back: the binary has no such bound.
                        Ok(Err(wire::WireError::TooMuchOutput)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("no answer within {WIRE_TIMEOUT:?}")),
                    };
                if let Some(why) = failed {
                    tracing::warn!(error = %why, server_pid = pid,
                        "tmux's protocol failed; asking this server with the tmux binary from now on");
                    *self.wire.lock() = Some((pid, false));
                }
            }
            _ => drop(server),
        }
        self.run(args).await
    }

    /// May the server with this pid be queried over [`wire`]? Asked once per server.
    async fn wire_allowed(&self, pid: i32) -> bool {
        if let Some((known, allowed)) = *self.wire.lock() {
            if known == pid {
                return allowed;
            }
        }
        let allowed = match self.run(&["display-message", "-p", "#{version}"]).await {
            Ok(version) => wire::version_is_known(&version),
            Err(_) => false,
        };
        // A query that failed on this server meanwhile has the last word.
        let mut known = self.wire.lock();
        match *known {
            Some((p, decided)) if p == pid => decided,
            _ => {
                *known = Some((pid, allowed));
                allowed
            }
        }
    }

    /// The terminals this host knows: every session of its tmux server, by name
    /// (names termshare would refuse as targets are left out). None when no server
    /// runs.
    pub async fn sessions(&self) -> Result<Vec<TerminalName>, String> {
        if !self.socket.exists() {
            return Ok(Vec::new());
        }
        // Asked every 2 s while the panel runs: over tmux's protocol, no process.
        match self
            .query(&["list-sessions", "-F", "#{session_name}"])
            .await
        {
            Ok(out) => Ok(out.lines().filter_map(|l| l.parse().ok()).collect()),
            Err(e) if e.contains("no server running") || e.contains("No such file") => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        self.verify_server().await?;
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

/// `[TMUX, "-S", SOCKET, "attach-session", ("-r" | "-f", "ignore-size"), "-t",
/// "={terminal}"]`. A share's client never sizes the host's window (tmux ≥ 3.2):
/// `ignore-size` read-write, `-r` (read-only and ignore-size) read-only. Without it,
/// under `window-size latest` the window would take the size of whichever share's
/// client was typed into last, less its status line: one row smaller per share.
fn default_attach(program: &Path, socket: &Path, read_only: bool) -> Vec<String> {
    let mut v = vec![
        program.to_string_lossy().into_owned(),
        "-S".into(),
        socket.to_string_lossy().into_owned(),
        "attach-session".into(),
    ];
    if read_only {
        v.push("-r".into());
    } else {
        v.extend(["-f".into(), "ignore-size".into()]);
    }
    v.extend(["-t".into(), "={terminal}".into()]);
    v
}

/// The terminal a share's client needs to show the whole window: the window's size,
/// plus the session's status lines (`status` is `off`, `on` or a line count), from
/// `"WIDTH HEIGHT STATUS"`.
fn client_size(out: &str) -> Option<(u16, u16)> {
    let mut fields = out.split_whitespace();
    let cols: u16 = fields.next()?.parse().ok()?;
    let rows: u16 = fields.next()?.parse().ok()?;
    let status_lines = match fields.next() {
        Some("off") | None => 0,
        Some("on") => 1,
        Some(n) => n.parse::<u16>().unwrap_or(1),
    };
    Some((cols, rows.saturating_add(status_lines)))
}

#[async_trait]
impl TerminalHost for TmuxHost {
    async fn record(
        &self,
        terminal: &TerminalName,
        share: termshare_actors::ShareId,
    ) -> Result<Box<dyn termshare_actors::Recording>, String> {
        let dir = self
            .recordings
            .clone()
            .ok_or("no recording directory: set [recording] dir")?;
        let size = self.check(terminal).await?.unwrap_or((80, 24));
        let probe: crate::recording::SizeProbe = {
            let (host, terminal) = (self.clone(), terminal.clone());
            Arc::new(move || {
                let (host, terminal) = (host.clone(), terminal.clone());
                Box::pin(async move { host.check(&terminal).await.ok().flatten() })
            })
        };
        let recorder = crate::recording::Recorder {
            tmux: self.program.clone(),
            socket: self.socket.clone(),
            dir,
            env: self.env.clone(),
            size: probe,
            max_bytes: self.recording_limit,
        };
        recorder.start(terminal, share, size)
    }

    async fn check(&self, terminal: &TerminalName) -> Result<Option<(u16, u16)>, String> {
        // One tmux round trip: has-session fails when there is no such session (`=NAME`
        // matches exactly, not by prefix) and stops the sequence; otherwise
        // display-message tells the size. (display-message alone does not fail on a
        // missing target.)
        let session = format!("={terminal}");
        let window = format!("={terminal}:");
        let checked = self
            .query(&[
                "has-session",
                "-t",
                &session,
                ";",
                "display-message",
                "-p",
                "-t",
                &window,
                "#{window_width} #{window_height} #{status}",
            ])
            .await
            .map_err(|e| {
                if e.is_empty() {
                    format!("no tmux session {terminal}")
                } else {
                    e
                }
            })
            .map(|out| client_size(&out));
        self.remember(terminal, &checked);
        checked
    }

    fn size_hint(&self, terminal: &TerminalName) -> Option<(u16, u16)> {
        self.sizes.lock().get(terminal).copied()
    }

    fn attach_command(&self, terminal: &TerminalName, access: AccessMode) -> Vec<String> {
        let template = match access {
            AccessMode::ReadOnly => &self.attach_read_only,
            AccessMode::ReadWrite => &self.attach,
        };
        template
            .iter()
            .map(|a| a.replace("{terminal}", terminal.as_str()))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::client_size;

    #[test]
    fn a_shares_terminal_holds_the_window_and_its_status_lines() {
        assert_eq!(client_size("100 30 on"), Some((100, 31)));
        assert_eq!(client_size("100 30 off"), Some((100, 30)));
        assert_eq!(client_size("100 30 3"), Some((100, 33)));
        assert_eq!(client_size("100 30"), Some((100, 30)));
        assert_eq!(client_size("wide 30 on"), None);
        assert_eq!(client_size(""), None);
    }
}
