//! tmate: an ssh relay. Started in the foreground (`-F`) so the process we supervise is
//! the one that holds the relay connection (tmate's server would daemonize otherwise,
//! out of reach of PR_SET_PDEATHSIG), with its own socket and config file in a private
//! 0700 directory inside termshare's instance directory, and
//! `tmate-foreground-restart 0` so it exits instead of restarting.
//!
//! tmate's socket hands out the share's links (read-write too) to whoever connects to
//! it: it is made 0600 as soon as it exists, in a directory only the user can enter,
//! and the directory goes with the share (or, after a kill -9, with the next start:
//! [`crate::paths::InstanceDir`]).
//!
//! Under `-F` tmate prints the relay's notifications on stdout, among them
//! `ssh session read only: ssh …` and then `ssh session: ssh …`. A relay that cannot be
//! reached yields `Connecting to HOST...`, `Error connecting: …`, `Reconnecting...`
//! forever: tmate never gives up, so the link timeout is ours to enforce.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use termshare_actors::{AccessMode, BackendError, BackendName, Links, StartedWorker, WorkerSpec};

use crate::backends::{program, serving, shell_join};
use crate::launch::Resolved;
use crate::paths::InstanceDir;
use crate::process::{GracefulStop, LinkWait, ProcessSpawner, ProcessWorker, WorkerCommand};

/// The backend's name in requests, policies and `[backends.tmate]`.
pub const NAME: &str = "tmate";

/// Self-hosted relay settings (`[backends.tmate]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TmateSettings {
    /// `tmate-server-host`; none: tmate.io.
    pub server_host: Option<String>,
    /// `tmate-server-port`; none: 22.
    pub server_port: Option<u16>,
    /// `tmate-server-rsa-fingerprint`: the relay's RSA host key tmate accepts.
    pub server_rsa_fingerprint: Option<String>,
    /// `tmate-server-ed25519-fingerprint`: the relay's ed25519 host key tmate accepts.
    pub server_ed25519_fingerprint: Option<String>,
    /// `tmate-authorized-keys`: only these keys may join (restricts joins).
    pub authorized_keys: Option<PathBuf>,
}

/// Shares over a tmate relay, one foreground tmate per share.
pub struct TmateBackend {
    spawner: Arc<ProcessSpawner>,
    program: Resolved,
    settings: TmateSettings,
    /// Where each share's scratch directory (socket, config) is made.
    scratch: Arc<InstanceDir>,
}

impl TmateBackend {
    /// `program` is the tmate binary resolved at start; `scratch` holds each share's files.
    pub fn new(
        spawner: Arc<ProcessSpawner>,
        settings: TmateSettings,
        program: Resolved,
        scratch: Arc<InstanceDir>,
    ) -> Self {
        TmateBackend {
            spawner,
            program,
            settings,
            scratch,
        }
    }

    fn relay(&self) -> String {
        format!(
            "{}:{}",
            self.settings
                .server_host
                .as_deref()
                .unwrap_or("the default tmate.io relay"),
            self.settings.server_port.unwrap_or(22)
        )
    }

    /// The config file tmate reads with `-f`.
    pub fn config_text(&self) -> String {
        let s = &self.settings;
        let mut out = String::from("set -g tmate-foreground-restart 0\n");
        let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        if let Some(h) = &s.server_host {
            out += &format!("set -g tmate-server-host {}\n", q(h));
        }
        if let Some(p) = s.server_port {
            out += &format!("set -g tmate-server-port {p}\n");
        }
        if let Some(f) = &s.server_rsa_fingerprint {
            out += &format!("set -g tmate-server-rsa-fingerprint {}\n", q(f));
        }
        if let Some(f) = &s.server_ed25519_fingerprint {
            out += &format!("set -g tmate-server-ed25519-fingerprint {}\n", q(f));
        }
        if let Some(k) = &s.authorized_keys {
            out += &format!("set -g tmate-authorized-keys {}\n", q(&k.to_string_lossy()));
        }
        out
    }

    fn err_start(detail: String) -> BackendError {
        BackendError::StartFailed {
            backend: NAME.into(),
            detail,
        }
    }
}

/// Collects tmate's link lines; `Some` once both have arrived (the read-only one is
/// sent first by the relay). Keeps tmate's own diagnostic for an error message.
#[derive(Default)]
pub struct TmateLinkParser {
    rw: Option<String>,
    ro: Option<String>,
    /// The last line that was not a link, for the timeout message.
    pub last_other: String,
    /// The last line that says why the relay was not reached (not the `Connecting…` /
    /// `Reconnecting…` progress lines that follow it).
    diagnostic: Option<String>,
}

impl TmateLinkParser {
    /// Take one line of tmate's output; the (read-write, read-only) links once both came.
    pub fn feed(&mut self, line: &str) -> Option<(String, String)> {
        let line = line.trim();
        if let Some(ro) = line.strip_prefix("ssh session read only: ") {
            self.ro = Some(ro.trim().to_owned());
        } else if let Some(rw) = line.strip_prefix("ssh session: ") {
            self.rw = Some(rw.trim().to_owned());
        } else if !line.is_empty() {
            self.last_other = line.chars().take(200).collect();
            if relay_trouble(line).is_some() {
                self.diagnostic = Some(self.last_other.clone());
            }
        }
        match (&self.rw, &self.ro) {
            (Some(rw), Some(ro)) => Some((rw.clone(), ro.clone())),
            _ => None,
        }
    }

    /// Why no link came, in tmate's words and ours: `the relay could not be
    /// authenticated (tmate said: "Cannot authenticate server")`.
    pub fn cause(&self, relay: &str) -> String {
        match &self.diagnostic {
            Some(line) => format!(
                "tmate relay {relay}: {} (tmate said: {line:?})",
                relay_trouble(line).unwrap_or("the relay was not reached")
            ),
            None => format!(
                "the tmate relay {relay} was not reachable (tmate said: {:?})",
                self.last_other
            ),
        }
    }
}

/// What reads tmate's lines after its first links: each complete new pair goes to
/// `updates` (a pair is both lines again, so a half-announced reconnect changes
/// nothing).
fn relinks(
    access: AccessMode,
    updates: tokio::sync::watch::Sender<Links>,
) -> impl FnMut(&str) + Send + 'static {
    let mut parser = TmateLinkParser::default();
    move |line: &str| {
        if let Some((rw, ro)) = parser.feed(line) {
            parser = TmateLinkParser::default();
            let new = links_for(access, rw, ro);
            updates.send_if_modified(|current| {
                let changed = *current != new;
                *current = new;
                changed
            });
        }
    }
}

/// The links a share hands out: a read-only share only the read-only one.
fn links_for(access: AccessMode, rw: String, ro: String) -> Links {
    match access {
        AccessMode::ReadOnly => Links::new(ro),
        AccessMode::ReadWrite => Links {
            link: rw,
            read_only_link: Some(ro),
        },
    }
}

/// What one of tmate's status lines says about the relay, if it says something. The
/// texts are tmate's (tmate-ssh-client.c): Debian's tmate 2.4 says `Cannot authenticate
/// server` for a host key whose fingerprint does not match the configured one; newer
/// ones `Server fingerprint not recognized`.
fn relay_trouble(line: &str) -> Option<&'static str> {
    let line = line
        .strip_prefix("Reconnecting... (")
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or(line);
    if line.starts_with("Cannot authenticate server")
        || line.starts_with("Server fingerprint not recognized")
        || line.starts_with("Failed to get server fingerprint")
    {
        Some("the relay could not be authenticated: its host key does not match the configured tmate-server fingerprint")
    } else if line.starts_with("Auth error") || line.starts_with("SSH keys not found") {
        Some("the relay refused termshare's ssh authentication")
    } else if let Some(why) = line.strip_prefix("Error connecting: ") {
        Some(if why.contains("refused") {
            "the relay refused the connection (nothing listens on its port)"
        } else {
            "the relay is unreachable"
        })
    } else if line.starts_with("Error opening channel")
        || line.starts_with("Error initializing tmate")
    {
        Some("the relay accepted the connection but did not start a tmate session")
    } else {
        None
    }
}

#[async_trait]
impl termshare_actors::Backend for TmateBackend {
    fn name(&self) -> BackendName {
        BackendName::new(NAME)
    }

    fn restricts_joins(&self) -> bool {
        self.settings.authorized_keys.is_some()
    }

    fn check(&self) -> Result<(), BackendError> {
        if let Some(keys) = &self.settings.authorized_keys {
            if !keys.is_file() {
                return Err(BackendError::Unavailable {
                    backend: NAME.into(),
                    reason: format!("authorized_keys file {} does not exist", keys.display()),
                });
            }
        }
        program(NAME, &self.program).map(|_| ())
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        let tmate = program(NAME, &self.program)?.to_string_lossy().into_owned();
        let scratch = self
            .scratch
            .scratch("tmate-")
            .map_err(|e| Self::err_start(format!("no private directory: {e}")))?;
        let conf = scratch.path().join("tmate.conf");
        let sock = scratch.path().join("tmate.sock");
        std::fs::File::create(&conf)
            .and_then(|mut f| f.write_all(self.config_text().as_bytes()))
            .map_err(|e| Self::err_start(format!("cannot write {}: {e}", conf.display())))?;
        // The pane runs the attach command with TMUX unset (tmux refuses to nest), by
        // the shell's builtin: no program is looked up in PATH.
        let pane = format!("unset TMUX; exec {}", shell_join(&spec.attach));
        let sock_s = sock.to_string_lossy().into_owned();
        let cmd = WorkerCommand::new(tmate.clone())
            .arg("-F")
            .args(["-f".to_string(), conf.to_string_lossy().into_owned()])
            .args(["-S".to_string(), sock_s.clone()])
            .arg("new-session")
            .arg(pane);
        let mut process = self
            .spawner
            .spawn(&cmd)
            .await
            .map_err(|e| Self::err_start(format!("cannot run tmate: {e}")))?;
        // tmate makes its socket group-accessible: only the user may reach it (it
        // hands out the read-write link). It appears before tmate prints anything.
        let lock_socket = {
            let sock = sock.clone();
            move || {
                let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
            }
        };
        let mut parser = TmateLinkParser::default();
        // After the first links, tmate announces new ones when its relay reconnects
        // (a new session on the relay): they replace the share's.
        let (relink, link_updates) = tokio::sync::watch::channel(Links::default());
        let mut relinked = relinks(spec.access, relink);
        // Joins and leaves, as the relay tells them (a standalone relay never does).
        let (tracker, notices) = crate::backends::presence::PresenceTracker::new(false);
        let mut presence = presence::Presence::new(tracker);
        let then = move |line: &str| {
            presence.feed(line);
            relinked(line);
        };
        let (rw, ro) = match process
            .read_until_then(
                spec.link_timeout,
                |l| {
                    lock_socket();
                    parser.feed(l)
                },
                then,
            )
            .await
        {
            Ok(links) => links,
            Err(LinkWait::TimedOut) => {
                // `process` drops here: its guard kills tmate's process group.
                return Err(BackendError::LinkTimeout {
                    backend: NAME.into(),
                    after: spec.link_timeout,
                    detail: parser.cause(&self.relay()),
                });
            }
            Err(LinkWait::Exited(how)) => {
                return Err(Self::err_start(format!(
                    "tmate {how} before giving a link: {} {}",
                    parser.last_other,
                    process.stderr_tail()
                )))
            }
        };
        let links = links_for(spec.access, rw, ro);
        lock_socket();
        let kill = WorkerCommand::new(tmate.clone()).args(["-S", &sock_s, "kill-server"]);
        let ask = WorkerCommand::new(tmate).args(["-S", &sock_s, "display-message", "-p", "ok"]);
        Ok(StartedWorker {
            links,
            worker: Box::new(
                ProcessWorker::new(
                    process,
                    GracefulStop::Command(kill),
                    vec![Box::new(scratch)],
                )
                .with_serving_probe(serving::command(ask, self.spawner.env().clone()))
                .with_link_updates(link_updates)
                .with_participant_notices(notices),
            ),
        })
    }
}

mod presence;

#[cfg(test)]
mod tests;
