//! `serve`: the daemon behind the control socket (`--check`: what it would serve).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use termshare::config::Config;
use termshare::daemon::{self, PeerMap, SocketAccess};
use termshare::{exit, Termshare};

use crate::output::fail;
use crate::share::{load_policy, signals, start_fail};

pub async fn serve(
    config: Config,
    socket: &Path,
    policy: Option<PathBuf>,
    check: bool,
) -> ExitCode {
    let (policy, policy_path) = match load_policy(&config, policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let metrics = match config.metrics_addr() {
        Ok(m) => m,
        Err(e) => return fail(exit::INVALID, e),
    };
    let panel_addr = match config.panel_addr() {
        Ok(p) => p,
        Err(e) => return fail(exit::INVALID, e),
    };
    #[cfg(not(feature = "panel"))]
    if let Some(addr) = panel_addr {
        return fail(
            exit::INVALID,
            format!(
                "[panel] listen = \"{addr}\": this build has no lane panel (cargo feature `panel`)"
            ),
        );
    }
    let fleet = match config.fleet() {
        Ok(f) => f,
        Err(e) => return fail(exit::INVALID, e),
    };
    #[cfg(not(feature = "fleet"))]
    if fleet.is_some() {
        return fail(
            exit::INVALID,
            "[fleet]: this build has no fleet support (cargo feature `fleet`)",
        );
    }
    #[cfg(feature = "fleet")]
    if let Some(f) = &fleet {
        if let Err(e) = termshare::fleet::Target::parse(&f.database) {
            return fail(exit::INVALID, e);
        }
    }
    let policy_desc = match &policy_path {
        Some(p) => format!("{} ({} rules)", p.display(), policy.rules.len()),
        None => "none: every share is denied".into(),
    };
    let access = SocketAccess {
        group: config.service.socket_group.clone(),
    };
    let peers = PeerMap::new(&policy, access.group.is_some());
    if check {
        let programs = termshare::Programs::resolve(&config);
        let audit = config
            .audit_path()
            .map_or_else(|e| format!("unavailable: {e}"), |p| p.display().to_string());
        let runtime = config
            .runtime_dir()
            .map_or_else(|e| format!("unavailable: {e}"), |p| p.display().to_string());
        out!("socket:    {}", socket.display());
        out!(
            "access:    {}",
            match &access.group {
                Some(g) => format!("the daemon's user and group {g} (socket 0660, directory 0750)"),
                None => "the daemon's user only (socket 0600)".into(),
            }
        );
        out!("policy:    {policy_desc}");
        let me = nix::unistd::geteuid().as_raw();
        if let Ok(owner) = peers.identify(me, None) {
            let names: Vec<&str> = owner.principals().iter().map(|p| p.as_str()).collect();
            out!("you act as: {} (operator)", names.join(", "));
        }
        for entry in &policy.identities {
            let names: Vec<&str> = entry.principals.iter().map(|p| p.as_str()).collect();
            out!(
                "identity:  uid {}{} may act as {}",
                entry.uid,
                entry
                    .user
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default(),
                names.join(", ")
            );
        }
        out!("audit:     {audit}");
        out!("runtime:   {runtime}");
        out!("tmux:      {}", programs.tmux.describe());
        out!("tty-share: {}", programs.tty_share.describe());
        out!("tmate:     {}", programs.tmate.describe());
        out!("upterm:    {}", programs.upterm.describe());
        out!(
            "metrics:   {}",
            metrics.map_or("off".into(), |m| format!("http://{m}/metrics"))
        );
        out!(
            "panel:     {}",
            panel_addr.map_or("off".into(), |p| format!(
                "http://{p}/ (termshare panel prints a signed-in address)"
            ))
        );
        out!(
            "fleet:     {}",
            fleet.as_ref().map_or("off".into(), |f| format!(
                "host {} (lease {}){}",
                f.host_id,
                humantime::format_duration(f.lease),
                fleet_target(&f.database)
            ))
        );
        return ExitCode::SUCCESS;
    }
    if let Some(addr) = metrics {
        #[cfg(feature = "metrics-endpoint")]
        if let Err(e) = termshare::metrics_endpoint::install(addr) {
            return fail(exit::INTERNAL, e);
        }
        #[cfg(not(feature = "metrics-endpoint"))]
        return fail(
            exit::INVALID,
            format!("[service] metrics = \"{addr}\": this build has no metrics endpoint (cargo feature `metrics-endpoint`)"),
        );
    }
    let (mut sigint, mut sigterm) = match signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    raise_open_file_limit();
    // Before the socket answers: a binary planted in PATH once anyone can reach the
    // daemon must never run (a client that connects finds them resolved already).
    let programs = termshare::Programs::resolve(&config);
    let listener = match daemon::bind(socket, &access).await {
        Ok(l) => l,
        Err(e @ daemon::DaemonError::AlreadyRunning(_)) => return fail(exit::INTERNAL, e),
        // A refused directory or group is the config's to fix.
        Err(e) => return fail(exit::INVALID, e),
    };
    // The panel's port is bound now, so that one in use is an error before serving.
    let panel = match panel_addr {
        None => None,
        Some(addr) => {
            let bound = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("[panel] listen = \"{addr}\": {e}"));
            let key = config
                .audit_path()
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    termshare::audit_file::load_fingerprint_key(&p).map_err(|e| e.to_string())
                });
            match (bound, key) {
                (Ok(listener), Ok(key)) => Some(daemon::PanelConfig {
                    listener,
                    key: *key.as_bytes(),
                }),
                (Err(e), _) | (_, Err(e)) => {
                    let _ = std::fs::remove_file(socket);
                    return fail(exit::INVALID, e);
                }
            }
        }
    };
    let ts = match Termshare::builder(&config)
        .policy(policy)
        .programs(programs)
        .start()
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(socket);
            return start_fail(e);
        }
    };
    tracing::info!(socket = %socket.display(), policy = %policy_desc, "termshare daemon listening");
    let shutdown = async {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let reports = daemon::serve(
        ts,
        peers,
        listener,
        socket.to_path_buf(),
        panel,
        fleet,
        shutdown,
    )
    .await;
    tracing::info!(
        shares = reports.len(),
        "termshare daemon stopped every share; exiting"
    );
    ExitCode::SUCCESS
}

/// Where the fleet's database is, as far as can be told without its password.
#[cfg(feature = "fleet")]
fn fleet_target(database: &str) -> String {
    match termshare::fleet::Target::parse(database) {
        Ok(t) => format!(", database {t:?}"),
        Err(e) => format!(", {e}"),
    }
}

#[cfg(not(feature = "fleet"))]
fn fleet_target(_database: &str) -> String {
    String::new()
}

/// Each connection and worker holds descriptors: raise the soft limit to the hard one
/// (the daemon's own connection bound stays far below it).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
