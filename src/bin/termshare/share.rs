//! `share`: through the daemon when one answers (or `--daemon`: only then), else in
//! the foreground (or `--foreground`: always), where this process runs the subsystem,
//! prints the share and its lifecycle events, and stays until the TTL ends or
//! SIGINT/SIGTERM revokes it.

use std::path::PathBuf;
use std::process::ExitCode;

use termshare::actors::{
    AccessMode, AuditKind, BackendName, Caller, InvalidInput, Principal, ShareRequest, TerminalName,
};
use termshare::client::{Client, ConnectError};
use termshare::config::Config;
use termshare::daemon::PeerMap;
use termshare::policy::Policy;
use termshare::{daemon, exit, protocol, Termshare};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::args::ShareArgs;
use crate::client::{client_fail, Socket};
use crate::output::{fail, print_event, print_share};
use termshare::protocol::Command as Request;

pub async fn share(config: Config, socket: &Socket, args: ShareArgs, as_json: bool) -> ExitCode {
    let request = match build_request(&args) {
        Ok(r) => r,
        Err(e) => return fail(exit::INVALID, e),
    };
    if args.foreground {
        return foreground_share(config, request, args.principal, args.policy, as_json).await;
    }
    let connected = Client::connect(&socket.path, socket.daemon_uid).await;
    let mut client = match connected {
        Ok(client) => client,
        // --daemon: a daemon or nothing (a script never waits out a foreground TTL).
        Err(e) if args.daemon => {
            let why = match e {
                ConnectError::NoDaemon(e) => format!(
                    "no termshare daemon answers on {} ({e}); start one with `termshare serve`",
                    socket.path.display()
                ),
                ConnectError::Untrusted(e) => e.to_string(),
            };
            return fail(exit::NO_DAEMON, why);
        }
        Err(e) => {
            // Say which mode was chosen, and why: a script that expected the daemon
            // sees it at once rather than after the TTL.
            let why = match e {
                // Something answers that is not our daemon: never talk to it.
                ConnectError::Untrusted(e) => e.to_string(),
                ConnectError::NoDaemon(_) => {
                    format!("no daemon answers on {}", socket.path.display())
                }
            };
            eprintln!(
                "termshare: {why}; sharing in the foreground until the TTL ends or Ctrl-C \
                 (--daemon: require a daemon)"
            );
            return foreground_share(config, request, args.principal, args.policy, as_json).await;
        }
    };
    if args.policy.is_some() {
        eprintln!(
            "termshare: note: a daemon answers on {}; its own policy applies, not --policy",
            socket.path.display()
        );
    }
    let format = |d: &std::time::Duration| humantime::format_duration(*d).to_string();
    let cmd = Request::Share {
        terminal: request.terminal.to_string(),
        backend: request.backend.to_string(),
        access: Some(request.access.as_str().to_owned()),
        principal: args.principal.clone(),
        ttl: request.ttl.as_ref().map(format),
        grace: request
            .grace
            .as_ref()
            .map(|g| g.iter().map(format).collect::<Vec<_>>()),
        join_timeout: request.join.timeout.as_ref().map(format),
        max_participants: request.join.max_participants,
        record: request.record,
    };
    match client.call(&cmd).await {
        Ok(share) => {
            print_share(&share, as_json, false);
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

pub fn signals() -> Result<(Signal, Signal), ExitCode> {
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(fail(exit::INTERNAL, "cannot install signal handlers")),
    }
}

pub fn load_policy(
    config: &Config,
    flag: Option<PathBuf>,
) -> Result<(Policy, Option<PathBuf>), ExitCode> {
    let path = flag.or_else(|| config.policy.as_deref().map(|p| config.resolve(p)));
    match &path {
        Some(p) => Policy::load(p)
            .map(|pol| (pol, path.clone()))
            .map_err(|e| fail(exit::INVALID, e)),
        None => Ok((Policy::default(), None)),
    }
}

/// Shares in the foreground: this process runs the subsystem, as its own user (the
/// kernel's word): `--as` picks among that user's principals, as over the socket.
async fn foreground_share(
    config: Config,
    mut request: ShareRequest,
    claimed: Option<String>,
    policy: Option<PathBuf>,
    as_json: bool,
) -> ExitCode {
    let (policy, _) = match load_policy(&config, policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let me = nix::unistd::geteuid().as_raw();
    let identity = match PeerMap::new(&policy, false).identify(me, Some(std::process::id() as i32))
    {
        Ok(identity) => identity,
        Err(why) => return fail(exit::DENIED, why),
    };
    request.caller = match daemon::peers::caller(&identity, claimed.as_deref()) {
        Ok(caller) => caller,
        Err(e) => return fail(exit::code(&e), e),
    };
    let (mut sigint, mut sigterm) = match signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ts = match Termshare::builder(&config).policy(policy).start().await {
        Ok(t) => t,
        Err(e) => return start_fail(e),
    };
    let mut events = ts.subscribe();
    let principal = request.caller.clone();
    let info = tokio::select! {
        r = ts.share(request) => r,
        _ = sigint.recv() => { ts.shutdown().await; return fail(exit::INTERNAL, "interrupted before the share started"); }
        _ = sigterm.recv() => { ts.shutdown().await; return fail(exit::INTERNAL, "terminated before the share started"); }
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            let code = exit::code(&e);
            ts.shutdown().await;
            return fail(code, e);
        }
    };
    print_share(&protocol::share_json(&info), as_json, true);
    let id = info.share_id;
    // The share line already said it was requested and started.
    let shown = |e: &termshare::actors::AuditEvent| {
        e.correlation_id == id
            && !matches!(e.kind, AuditKind::ShareRequested | AuditKind::ShareStarted)
    };
    // The end comes from the service itself; the event stream only feeds the display
    // (a lagging reader may lose lines, never the end).
    let ended_by_itself = {
        let ended = ts.ended(id);
        tokio::pin!(ended);
        let mut events_open = true;
        loop {
            tokio::select! {
                biased;
                e = events.recv(), if events_open => match e {
                    Ok(e) if shown(&e) => print_event(&e, as_json),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => events_open = false,
                },
                _ = &mut ended => break true,
                _ = sigint.recv() => break false,
                _ = sigterm.recv() => break false,
            }
        }
    };
    if ended_by_itself {
        while let Ok(e) = events.try_recv() {
            if shown(&e) {
                print_event(&e, as_json);
            }
        }
        ts.shutdown().await;
        return ExitCode::SUCCESS;
    }
    // Told to stop: revoke, print the report's event, reap, exit.
    let revoked = ts.revoke(id, principal).await;
    while let Ok(e) = events.try_recv() {
        if e.correlation_id == id {
            print_event(&e, as_json);
        }
    }
    ts.shutdown().await;
    match revoked {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(exit::code(&e), e),
    }
}

/// The exit for a subsystem that could not start: bad config or paths are invalid
/// input, anything else internal.
pub fn start_fail(e: termshare::StartError) -> ExitCode {
    use termshare::StartError as E;
    match e {
        E::Config(_)
        | E::Policy(_)
        | E::Program { .. }
        | E::Path(_)
        | E::Audit { .. }
        | E::Runtime(_) => fail(exit::INVALID, e),
        E::Service(ref s) => fail(exit::code(s), e),
        E::Spawner(_) => fail(exit::INTERNAL, e),
    }
}

fn build_request(args: &ShareArgs) -> Result<ShareRequest, String> {
    let terminal: TerminalName = args
        .terminal
        .parse()
        .map_err(|e: InvalidInput| e.to_string())?;
    let access: AccessMode = args
        .access
        .parse()
        .map_err(|e: InvalidInput| e.to_string())?;
    // Who shares is settled by the daemon (or the foreground) from the kernel's word;
    // here the claim is only checked for form.
    let principal: Principal = match &args.principal {
        Some(p) => p.parse().map_err(|e: InvalidInput| e.to_string())?,
        None => daemon::peers::default_principal(nix::unistd::geteuid().as_raw()),
    };
    let names = termshare::backends::NAMES;
    if !names.contains(&args.backend.as_str()) {
        return Err(format!(
            "unknown backend `{}`: expected one of {}",
            args.backend,
            names.join(", ")
        ));
    }
    Ok(ShareRequest {
        terminal,
        backend: BackendName::new(args.backend.clone()),
        access,
        caller: Caller::from(principal),
        ttl: args.ttl,
        grace: args.grace.clone(),
        join: termshare::actors::JoinRules {
            timeout: args.join_timeout,
            max_participants: args.max_participants,
        },
        record: args.record,
    })
}
