//! The programs termshare runs, resolved once at start, and the tmux host built from
//! them.

use std::sync::Arc;

use crate::backends;
use crate::config::Config;
use crate::launch::{self, Resolved};
use crate::terminal::TmuxHost;
use crate::StartError;

/// The programs termshare runs, resolved once at start (config pins win over `PATH`).
pub struct Programs {
    /// `terminal.tmux`, else `tmux` in PATH.
    pub tmux: Resolved,
    /// `backends.tty_share.program`, else `tty-share` in PATH.
    pub tty_share: Resolved,
    /// `backends.tmate.program`, else `tmate` in PATH.
    pub tmate: Resolved,
    /// `backends.upterm.program`: a path, or a name looked up in PATH.
    pub upterm: Resolved,
}

impl Programs {
    /// Resolve every program `config` names, now.
    pub fn resolve(config: &Config) -> Programs {
        Programs {
            tmux: Resolved::resolve("tmux", config.terminal.tmux.as_deref()),
            tty_share: Resolved::resolve(
                backends::TTY_SHARE,
                config.backends.tty_share.program.as_deref(),
            ),
            tmate: Resolved::resolve(
                backends::tmate::NAME,
                config.backends.tmate.program.as_deref(),
            ),
            upterm: {
                let program = config.upterm().program;
                let pinned = program
                    .contains('/')
                    .then(|| std::path::PathBuf::from(&program));
                Resolved::resolve(&program, pinned.as_deref())
            },
        }
    }
}

/// The tmux host of `config`: its server's socket, and the attach templates with their
/// program resolved to an absolute path (a `tmux` template also names the socket).
pub(crate) fn tmux_host(
    config: &Config,
    tmux: Resolved,
    env: Arc<launch::CleanEnv>,
) -> Result<TmuxHost, StartError> {
    let tmux = tmux
        .path()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| StartError::Program {
            key: "terminal.tmux".into(),
            reason: tmux.describe(),
        })?;
    let socket = match &config.terminal.tmux_socket {
        Some(p) => config.resolve(p),
        None => TmuxHost::default_socket(),
    };
    let mut host = TmuxHost::new(tmux.clone(), socket.clone(), env);
    if let Ok(dir) = config.recordings_dir() {
        host = host.with_recordings(dir);
    }
    if let Some(max) = config.recording.max_bytes {
        host = host.with_recording_limit(max);
    }
    if config.terminal.attach.is_none() && config.terminal.attach_read_only.is_none() {
        return Ok(host);
    }
    let resolve = |key: &str, argv: &[String]| -> Result<Vec<String>, StartError> {
        let mut argv = argv.to_vec();
        if argv.first().map(String::as_str) == Some("tmux") {
            argv[0] = tmux.to_string_lossy().into_owned();
            if !argv.iter().any(|a| a == "-S" || a == "-L") {
                argv.splice(
                    1..1,
                    ["-S".to_string(), socket.to_string_lossy().into_owned()],
                );
            }
        } else if let Some(first) = argv.first_mut() {
            let found = Resolved::resolve(first, None);
            *first = found
                .path()
                .ok_or_else(|| StartError::Program {
                    key: key.to_owned(),
                    reason: found.describe(),
                })?
                .to_string_lossy()
                .into_owned();
        }
        Ok(argv)
    };
    let rw = match &config.terminal.attach {
        Some(a) => resolve("terminal.attach", a)?,
        None => host.attach_template(false).to_vec(),
    };
    let ro = match &config.terminal.attach_read_only {
        Some(a) => resolve("terminal.attach_read_only", a)?,
        None => host.attach_template(true).to_vec(),
    };
    Ok(host.with_attach(rw, ro))
}
