//! upterm: an ssh relay through an uptermd server.
//!
//! upterm is not packaged for Debian, so it cannot be installed here: this adapter
//! follows upterm's CLI and output as of v0.24.0 (read from its source, and observed
//! against uptermd by an earlier session), and its tests drive a stand-in,
//! `tests/bin/upterm`, that prints exactly what upterm prints and behaves as it does.
//!
//! Each share runs `upterm host --accept --no-sftp --server URL --known-hosts F
//! --private-key K [--read-only] [--authorized-keys F] [--github-user U]
//! --force-command ATTACH -- sleep infinity` in a private directory of its own: HOME and
//! the XDG directories point there, so upterm never reads or writes the user's
//! `~/.ssh`, and its admin socket (`$XDG_RUNTIME_DIR/upterm/SESSION.sock`, left behind
//! when upterm is killed) goes with the directory at the share's end, or at the next
//! start after a kill -9 ([`crate::paths::InstanceDir`]). The known_hosts file and the
//! key are made there (`trust`); the link is read from the session block
//! (`parse`).

mod parse;
mod presence;
mod trust;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use termshare_actors::{AccessMode, BackendError, BackendName, Links, StartedWorker, WorkerSpec};

pub use parse::{diagnose, UptermLinkParser};
pub use trust::check_ca_key;

use crate::backends::{program, shell_join};
use crate::launch::Resolved;
use crate::paths::InstanceDir;
use crate::process::{GracefulStop, LinkWait, ProcessSpawner, ProcessWorker, WorkerCommand};

/// The backend's name in requests, policies and `[backends.upterm]`.
pub const NAME: &str = "upterm";

/// `[backends.upterm]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UptermSettings {
    /// The upterm binary (a path, or a name looked up in PATH).
    pub program: String,
    /// The uptermd server's URL (`--server`; default `ssh://uptermd.upterm.dev:22`).
    pub server: String,
    /// The server's host CA key (`ssh-ed25519 AAAA…`), written as an `@cert-authority`
    /// line into the share's own known_hosts.
    pub server_ca_key: Option<String>,
    /// A known_hosts file to copy into the share's own (it must hold an
    /// `@cert-authority` line for the server: uptermd presents a host certificate).
    pub known_hosts: Option<PathBuf>,
    /// The key upterm authenticates to the server with; none: a new key per share.
    pub private_key: Option<PathBuf>,
    /// Only these keys may join (`--authorized-keys`; restricts joins).
    pub authorized_keys: Option<PathBuf>,
    /// GitHub users whose keys may join (`--github-user`; restricts joins).
    pub github_users: Vec<String>,
}

impl Default for UptermSettings {
    fn default() -> Self {
        UptermSettings {
            program: "upterm".into(),
            server: "ssh://uptermd.upterm.dev:22".into(),
            server_ca_key: None,
            known_hosts: None,
            private_key: None,
            authorized_keys: None,
            github_users: Vec::new(),
        }
    }
}

/// Shares over an uptermd server, one `upterm host` per share in a private directory.
pub struct UptermBackend {
    spawner: Arc<ProcessSpawner>,
    settings: UptermSettings,
    /// `settings.program`, resolved when termshare started.
    program: Resolved,
    /// Where each share's private directory is made.
    scratch: Arc<InstanceDir>,
}

/// What a share's private directory holds for upterm.
pub struct ShareFiles {
    /// The share's own known_hosts (`--known-hosts`).
    pub known_hosts: PathBuf,
    /// The key upterm authenticates with (`--private-key`).
    pub private_key: PathBuf,
}

impl UptermBackend {
    /// `program` is `settings.program` resolved at start ([`crate::Programs`]).
    pub fn new(
        spawner: Arc<ProcessSpawner>,
        settings: UptermSettings,
        program: Resolved,
        scratch: Arc<InstanceDir>,
    ) -> Self {
        UptermBackend {
            spawner,
            settings,
            program,
            scratch,
        }
    }

    /// The full argv of `upterm host` for this share.
    pub fn host_args(&self, spec: &WorkerSpec, files: &ShareFiles) -> Vec<String> {
        let s = &self.settings;
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let mut a: Vec<String> = vec![
            "host".into(),
            "--accept".into(),
            "--no-sftp".into(),
            "--server".into(),
            s.server.clone(),
            "--known-hosts".into(),
            path(&files.known_hosts),
            "--private-key".into(),
            path(&files.private_key),
        ];
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

#[async_trait]
impl termshare_actors::Backend for UptermBackend {
    fn name(&self) -> BackendName {
        BackendName::new(NAME)
    }

    fn restricts_joins(&self) -> bool {
        self.settings.authorized_keys.is_some() || !self.settings.github_users.is_empty()
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.settings.server_ca_key.is_none() && self.settings.known_hosts.is_none() {
            // upterm would stop at its yes/no host-key question and exit: say why now.
            return Err(BackendError::Unavailable {
                backend: NAME.into(),
                reason: "the upterm server cannot be trusted without its host CA key: set \
                         [backends.upterm] server_ca_key (or known_hosts)"
                    .into(),
            });
        }
        for (what, f) in [
            ("known_hosts", &self.settings.known_hosts),
            ("private_key", &self.settings.private_key),
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
        let upterm = program(NAME, &self.program)?.to_string_lossy().into_owned();
        let failed = |detail: String| BackendError::StartFailed {
            backend: NAME.into(),
            detail,
        };
        let scratch = self
            .scratch
            .scratch("upterm-")
            .map_err(|e| failed(format!("no private directory: {e}")))?;
        let dir = scratch.path();
        let s = &self.settings;
        let files = ShareFiles {
            known_hosts: trust::write_known_hosts(
                dir,
                &s.server,
                s.server_ca_key.as_deref(),
                s.known_hosts.as_deref(),
            )
            .map_err(failed)?,
            private_key: match &s.private_key {
                Some(key) => key.clone(),
                None => trust::ephemeral_key(dir).map_err(failed)?,
            },
        };
        // upterm's own files (admin socket, log, config) stay in the share's directory.
        let at = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
        let cmd = WorkerCommand::new(upterm)
            .args(self.host_args(&spec, &files))
            .env("HOME", dir.to_string_lossy())
            .env("XDG_RUNTIME_DIR", at("run"))
            .env("XDG_STATE_HOME", at("state"))
            .env("XDG_CONFIG_HOME", at("config"));
        // Joins and leaves, live, from upterm's log in the share's directory.
        let (follower, notices) = presence::follow(&dir.join("state"))
            .map_err(|e| failed(format!("cannot follow upterm's log: {e}")))?;
        let mut process = self
            .spawner
            .spawn(&cmd)
            .await
            .map_err(|e| failed(format!("cannot run upterm: {e}")))?;
        let mut parser = UptermLinkParser::default();
        let link = process
            .read_until(spec.link_timeout, |l| parser.feed(l))
            .await;
        let link = match link {
            Ok(link) => link,
            Err(wait) => {
                // upterm's own words for it, never its usage text.
                let mut said = parser.others.clone();
                said.extend(process.stderr_lines());
                let why = diagnose(&said);
                return Err(match wait {
                    LinkWait::TimedOut => BackendError::LinkTimeout {
                        backend: NAME.into(),
                        after: spec.link_timeout,
                        detail: why.unwrap_or_else(|| {
                            format!("the upterm server {} gave no session", s.server)
                        }),
                    },
                    LinkWait::Exited(how) => failed(match why {
                        Some(why) => format!("upterm {how}: {why}"),
                        None => format!("upterm {how} before giving a session"),
                    }),
                });
            }
        };
        Ok(StartedWorker {
            links: Links::new(link),
            worker: Box::new(
                ProcessWorker::new(
                    process,
                    GracefulStop::SigTerm,
                    vec![Box::new(follower), Box::new(scratch)],
                )
                .with_participant_notices(notices),
            ),
        })
    }
}
