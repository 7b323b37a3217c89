//! The `termshare` command line.
//!
//! `share` talks to a daemon when one answers on the socket; otherwise it runs the
//! subsystem in the foreground: it prints the share, then its lifecycle events, and
//! stays until the TTL ends or SIGINT/SIGTERM, which revokes the share and reaps its
//! worker. `serve` runs the daemon; `list`, `extend`, `revoke`, `switch` and `status`
//! talk to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use termshare::actors::{
    AccessMode, AuditEvent, AuditKind, BackendName, Caller, InvalidInput, Principal, ShareRequest,
    TerminalName,
};
use termshare::client::{Client, ClientError, ConnectError};
use termshare::config::Config;
use termshare::daemon::{PeerMap, SocketAccess};
use termshare::policy::Policy;
use termshare::{daemon, exit, protocol, Termshare};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Parser)]
#[command(name = "termshare", version, about = "Share a live terminal safely")]
struct Cli {
    /// Config file (TOML); every key is optional.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The daemon's control socket (default: $XDG_RUNTIME_DIR/termshare.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// One JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Share a terminal (a tmux session): through the daemon if one runs, else in the
    /// foreground until its TTL ends or Ctrl-C.
    Share(ShareArgs),
    /// Run the daemon: the subsystem behind the control socket.
    Serve {
        /// Policy file (TOML); without one every share is denied.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Check the config and policy, print what would be served, and exit.
        #[arg(long)]
        check: bool,
    },
    /// List the daemon's live shares.
    List,
    /// Extend a share's TTL by DURATION (bounded by its rule's max_ttl).
    Extend {
        share: String,
        #[arg(value_parser = parse_duration)]
        duration: Duration,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// End a share now and print the revoke report.
    Revoke {
        share: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Move a share to another backend (the old worker is reaped first).
    Switch {
        share: String,
        #[arg(long)]
        backend: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Show each terminal's badge; with --watch, redraw on every change.
    Status {
        #[arg(long)]
        watch: bool,
    },
    /// Read the audit log (the config's `[audit] path`), filtered; --follow tails it.
    Audit(AuditArgs),
    /// Hand a terminal to another principal through the policy's approval chain.
    #[command(subcommand)]
    Handoff(HandoffCommand),
}

#[derive(Subcommand)]
enum HandoffCommand {
    /// Ask to hand TERMINAL to --to; prints the handoff and its approvers.
    Request {
        terminal: String,
        #[arg(long)]
        to: String,
        #[arg(long = "as")]
        principal: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Also start a share for the receiver over this backend once approved.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Approve the handoff's current step.
    Approve {
        handoff: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Deny the handoff at its current step.
    Deny {
        handoff: String,
        #[arg(long = "as")]
        principal: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a handoff, with its package once completed.
    Show { handoff: String },
    /// List handoffs.
    List,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// Only events of this share or handoff (correlation id).
    #[arg(long, alias = "correlation")]
    share: Option<String>,
    /// Only events of this terminal.
    #[arg(long)]
    terminal: Option<String>,
    /// Only events of this kind (`share.revoked`, or just `revoked`).
    #[arg(long)]
    kind: Option<String>,
    /// Only events at or after this time: RFC 3339, or a duration meaning "ago" (10m).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Keep printing events as they are written.
    #[arg(long)]
    follow: bool,
    /// Read this file instead of the config's audit log.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ShareArgs {
    /// The terminal: a tmux session name.
    terminal: String,
    /// tty-share, tmate or upterm.
    #[arg(long)]
    backend: String,
    /// Time to live, e.g. 30m (default from config: 30m).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Grace warnings before expiry, e.g. 5m,1m (default from config).
    #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
    grace: Option<Vec<Duration>>,
    /// read-only or read-write.
    #[arg(long, default_value = "read-write")]
    access: String,
    /// Who shares: human:NAME or agent:NAME (default human:$USER).
    #[arg(long = "as")]
    principal: Option<String>,
    /// Policy file for a foreground share (a daemon applies its own).
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// `println!` for a command whose output is the point: when stdout is a closed pipe
/// (`termshare audit | head -1`) the reader has what it wanted, so the command ends
/// quietly with exit 0 (not a panic, not an error). Only where nothing is left to clean
/// up: a foreground share prints with `say!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e);
        }
    }};
}

/// `println!` that never ends the process: a foreground share whose stdout went away
/// keeps running until Ctrl-C or its TTL, and then stops its worker.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(exit::OK);
    }
    eprintln!("termshare: cannot write to stdout: {e}");
    std::process::exit(exit::INTERNAL);
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d.is_zero() {
        return Err(format!("`{s}`: must be positive"));
    }
    Ok(d)
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("termshare: {msg}");
    ExitCode::from(code as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return fail(exit::INVALID, e),
        },
        None => Config::default(),
    };
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(
                config.service.log.as_deref().unwrap_or(default_level),
            )
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(exit::INTERNAL, format!("cannot start the runtime: {e}")),
    };
    let json = cli.json;
    let needs_socket = !matches!(cli.command, Command::Audit(_));
    let socket = match config.socket_path(cli.socket.as_deref()) {
        Ok(s) => Socket {
            path: s,
            daemon_uid: None,
        },
        Err(e) if needs_socket => return fail(exit::INVALID, e),
        Err(_) => Socket {
            path: PathBuf::new(),
            daemon_uid: None,
        },
    };
    let socket = match &config.service.daemon_user {
        None => socket,
        Some(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Socket {
                daemon_uid: Some(u.uid.as_raw()),
                ..socket
            },
            _ => {
                return fail(
                    exit::INVALID,
                    format!("service.daemon_user `{name}`: no such user"),
                )
            }
        },
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Share(args) => share(config, &socket, args, json).await,
            Command::Serve { policy, check } => serve(config, &socket.path, policy, check).await,
            Command::List => list(&socket, json).await,
            Command::Extend { share, duration, principal } => {
                let cmd = json!({"cmd": "extend", "share_id": share,
                    "by": humantime::format_duration(duration).to_string(), "as": principal});
                one_share(&socket, cmd, json).await
            }
            Command::Revoke { share, principal } => {
                revoke(&socket, json!({"cmd": "revoke", "share_id": share, "as": principal}), json).await
            }
            Command::Switch { share, backend, principal } => {
                let cmd = json!({"cmd": "switch", "share_id": share, "backend": backend, "as": principal});
                one_share(&socket, cmd, json).await
            }
            Command::Status { watch } => status(&socket, watch, json).await,
            Command::Audit(args) => audit(&config, args, json).await,
            Command::Handoff(cmd) => handoff(&socket, cmd, json).await,
        }
    })
}

/// The daemon's socket, and whom the client trusts to listen on it.
struct Socket {
    path: PathBuf,
    /// `[service] daemon_user`: a shared daemon that is not ours.
    daemon_uid: Option<u32>,
}

/// Drop `null` fields so optional flags left out are not sent.
fn compact(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.retain(|_, v| !v.is_null());
    }
    v
}

async fn connect(socket: &Socket) -> Result<Client, ExitCode> {
    Client::connect(&socket.path, socket.daemon_uid)
        .await
        .map_err(|e| match e {
            ConnectError::NoDaemon(e) => fail(
                exit::NO_DAEMON,
                format!(
                    "no termshare daemon answers on {} ({e}); start one with `termshare serve`",
                    socket.path.display()
                ),
            ),
            ConnectError::Untrusted(e) => fail(exit::NO_DAEMON, e),
        })
}

fn client_fail(e: ClientError) -> ExitCode {
    match e {
        ClientError::Remote(r) => fail(r.exit, r.message),
        other => fail(exit::INTERNAL, other),
    }
}

// ---------------------------------------------------------------------------- share

async fn share(config: Config, socket: &Socket, args: ShareArgs, as_json: bool) -> ExitCode {
    let request = match build_request(&args) {
        Ok(r) => r,
        Err(e) => return fail(exit::INVALID, e),
    };
    let connected = Client::connect(&socket.path, socket.daemon_uid).await;
    if let Err(ConnectError::Untrusted(e)) = &connected {
        // Something answers that is not our daemon: never talk to it.
        eprintln!("termshare: {e}; sharing in the foreground instead");
    }
    if let Ok(mut client) = connected {
        if args.policy.is_some() {
            eprintln!(
                "termshare: note: a daemon answers on {}; its own policy applies, not --policy",
                socket.path.display()
            );
        }
        let cmd = compact(json!({
            "cmd": "share",
            "terminal": request.terminal.as_str(),
            "backend": request.backend.as_str(),
            "access": request.access.as_str(),
            "as": args.principal,
            "ttl": request.ttl.map(|d| humantime::format_duration(d).to_string()),
            "grace": request.grace.as_ref().map(|g| g.iter().map(|d| humantime::format_duration(*d).to_string()).collect::<Vec<_>>()),
        }));
        return match client.call(cmd).await {
            Ok(share) => {
                print_share(&share, as_json, false);
                ExitCode::SUCCESS
            }
            Err(e) => client_fail(e),
        };
    }
    foreground_share(config, request, args.principal, args.policy, as_json).await
}

fn signals() -> Result<(Signal, Signal), ExitCode> {
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(fail(exit::INTERNAL, "cannot install signal handlers")),
    }
}

fn load_policy(
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
    let ts = match Termshare::start(&config, policy).await {
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
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            e = events.recv() => match e {
                Ok(e) if e.correlation_id == id => {
                    // The share line already said it was requested and started.
                    if matches!(e.kind, AuditKind::ShareRequested | AuditKind::ShareStarted) {
                        continue;
                    }
                    print_event(&e, as_json);
                    if e.kind.is_terminal() {
                        ts.shutdown().await;
                        return ExitCode::SUCCESS;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
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
fn start_fail(e: termshare::StartError) -> ExitCode {
    use termshare::StartError as E;
    match e {
        E::Config(_) | E::Path(_) | E::Audit { .. } | E::Runtime(_) => fail(exit::INVALID, e),
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
    if !["tty-share", "tmate", "upterm"].contains(&args.backend.as_str()) {
        return Err(format!(
            "unknown backend `{}`: expected tty-share, tmate or upterm",
            args.backend
        ));
    }
    Ok(ShareRequest {
        terminal,
        backend: BackendName::new(args.backend.clone()),
        access,
        caller: Caller::from(principal),
        ttl: args.ttl,
        grace: args.grace.clone(),
    })
}

// ---------------------------------------------------------------------------- serve

async fn serve(config: Config, socket: &Path, policy: Option<PathBuf>, check: bool) -> ExitCode {
    let (policy, policy_path) = match load_policy(&config, policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let metrics = match config.metrics_addr() {
        Ok(m) => m,
        Err(e) => return fail(exit::INVALID, e),
    };
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
        return ExitCode::SUCCESS;
    }
    if let Some(addr) = metrics {
        if let Err(e) = termshare::metrics_endpoint::install(addr) {
            return fail(exit::INTERNAL, e);
        }
    }
    let (mut sigint, mut sigterm) = match signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    raise_open_file_limit();
    let listener = match daemon::bind(socket, &access).await {
        Ok(l) => l,
        Err(e @ daemon::DaemonError::AlreadyRunning(_)) => return fail(exit::INTERNAL, e),
        // A refused directory or group is the config's to fix.
        Err(e) => return fail(exit::INVALID, e),
    };
    let ts = match Termshare::start(&config, policy).await {
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
    let reports = daemon::serve(ts, peers, listener, socket.to_path_buf(), shutdown).await;
    tracing::info!(
        shares = reports.len(),
        "termshare daemon stopped every share; exiting"
    );
    ExitCode::SUCCESS
}

/// Each connection and worker holds descriptors: raise the soft limit to the hard one
/// (the daemon's own connection bound stays far below it).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ---------------------------------------------------------------------------- client commands

async fn list(socket: &Socket, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(json!({"cmd": "list"})).await {
        Ok(Value::Array(shares)) => {
            if as_json {
                for s in &shares {
                    out!("{s}");
                }
            } else if shares.is_empty() {
                out!("no live shares");
            } else {
                print_table(
                    &[
                        "SHARE",
                        "TERMINAL",
                        "BACKEND",
                        "ACCESS",
                        "STATE",
                        "EXPIRES IN",
                        "LINK",
                    ],
                    shares
                        .iter()
                        .map(|s| {
                            vec![
                                str_of(&s["share_id"]),
                                str_of(&s["terminal"]),
                                str_of(&s["backend"]),
                                str_of(&s["access"]),
                                str_of(&s["state"]),
                                countdown(&s["expires_at"]),
                                str_of(&s["link"]),
                            ]
                        })
                        .collect(),
                );
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(exit::INTERNAL, format!("unexpected answer: {other}")),
        Err(e) => client_fail(e),
    }
}

async fn one_share(socket: &Socket, cmd: Value, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(compact(cmd)).await {
        Ok(share) => {
            print_share(&share, as_json, false);
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

async fn revoke(socket: &Socket, cmd: Value, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(compact(cmd)).await {
        Ok(report) => {
            if as_json {
                out!("{report}");
            } else {
                out!(
                    "revoked share {}: worker stopped in {:.1} ms (escalated: {}, deadline met: {})",
                    str_of(&report["share_id"]),
                    report["elapsed_ms"].as_f64().unwrap_or(f64::NAN),
                    report["escalated"],
                    report["deadline_met"]
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

async fn status(socket: &Socket, watch: bool, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !watch {
        return match client.call(json!({"cmd": "status"})).await {
            Ok(status) => {
                if as_json {
                    out!("{status}");
                } else {
                    print_audit_warning(&status["audit"]);
                    print_badges(&status["badges"]);
                }
                ExitCode::SUCCESS
            }
            Err(e) => client_fail(e),
        };
    }
    if let Err(e) = client.call(json!({"cmd": "watch"})).await {
        return client_fail(e);
    }
    // Redraw on every badge change; in text mode also once a second for the countdown.
    let mut event = Value::Null;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            line = client.next_line() => match line {
                Ok(Some(e)) => {
                    event = e;
                    if as_json {
                        out!("{}", json!({"badges": event["badges"], "audit": event["audit"]}));
                        continue;
                    }
                }
                Ok(None) => return ExitCode::SUCCESS, // the daemon stopped
                Err(e) => return client_fail(e),
            },
            _ = tick.tick(), if !as_json => {}
        }
        if !as_json && !event.is_null() {
            print!("\x1b[2J\x1b[H");
            print_audit_warning(&event["audit"]);
            print_badges(&event["badges"]);
        }
    }
}

// ---------------------------------------------------------------------------- handoff

async fn handoff(socket: &Socket, cmd: HandoffCommand, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Without --as, the daemon acts as the caller's first principal.
    let request = match cmd {
        HandoffCommand::Request {
            terminal,
            to,
            principal,
            reason,
            backend,
        } => json!({"cmd": "handoff_request", "terminal": terminal, "to": to, "as": principal,
                    "reason": reason, "backend": backend}),
        HandoffCommand::Approve { handoff, principal } => {
            json!({"cmd": "handoff_approve", "handoff_id": handoff, "as": principal})
        }
        HandoffCommand::Deny {
            handoff,
            principal,
            reason,
        } => {
            json!({"cmd": "handoff_deny", "handoff_id": handoff, "as": principal, "reason": reason})
        }
        HandoffCommand::Show { handoff } => json!({"cmd": "handoff_show", "handoff_id": handoff}),
        HandoffCommand::List => json!({"cmd": "handoff_list"}),
    };
    match client.call(compact(request)).await {
        Ok(Value::Array(list)) => {
            for h in &list {
                print_handoff(h, as_json);
            }
            if list.is_empty() && !as_json {
                out!("no handoffs");
            }
            ExitCode::SUCCESS
        }
        Ok(view) => {
            print_handoff(&view, as_json);
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

fn print_handoff(h: &Value, as_json: bool) {
    if as_json {
        out!("{h}");
        return;
    }
    let approvers: Vec<String> = h["approvers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(str_of)
        .collect();
    let step = match h.get("step") {
        Some(s) => format!(", waiting for step {s} of {}", approvers.len()),
        None => String::new(),
    };
    out!(
        "handoff {} of terminal {}: {} -> {}: {}{step}",
        str_of(&h["handoff_id"]),
        str_of(&h["terminal"]),
        str_of(&h["from"]),
        str_of(&h["to"]),
        str_of(&h["state"]),
    );
    out!("approval chain: {}", approvers.join(" -> "));
    if let Some(r) = h.get("refusal") {
        out!("ended at step {}: {}", r["step"], str_of(&r["reason"]));
    }
    if let Some(p) = h.get("package") {
        out!("cwd:     {}", str_of(&p["cwd"]));
        out!("command: {}", str_of(&p["command"]));
        out!("size:    {}x{}", p["cols"], p["rows"]);
        out!("access:  {}", str_of(&p["access"]));
        if let Some(s) = p.get("share_id") {
            out!("share:   {}", str_of(s));
        }
        if let Some(l) = p.get("link") {
            out!("link:    {}", str_of(l));
        }
        if let Some(e) = p.get("share_error") {
            // Only when the rule says the receiver's share is optional.
            out!(
                "no share (optional under rule {}): {}",
                str_of(&h["rule_id"]),
                str_of(e)
            );
        }
        out!("--- scrollback ---\n{}", str_of(&p["scrollback"]));
    }
}

// ---------------------------------------------------------------------------- audit

/// An RFC 3339 time, or a duration meaning that long ago.
fn parse_when(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(s)
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor a duration"))?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("`{s}` is too long ago"))
}

struct AuditFilter {
    share: Option<uuid::Uuid>,
    terminal: Option<String>,
    kind: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl AuditFilter {
    fn new(a: &AuditArgs) -> Result<Self, String> {
        let share = a
            .share
            .as_deref()
            .map(|s| uuid::Uuid::parse_str(s).map_err(|_| format!("--share `{s}` is not an id")))
            .transpose()?;
        let kind = a.kind.as_ref().map(|k| {
            if k.contains('.') {
                k.clone()
            } else {
                format!("share.{k}")
            }
        });
        Ok(AuditFilter {
            share,
            terminal: a.terminal.clone(),
            kind,
            since: a.since.as_deref().map(parse_when).transpose()?,
            until: a.until.as_deref().map(parse_when).transpose()?,
        })
    }

    fn accepts(&self, e: &AuditEvent) -> bool {
        self.share.is_none_or(|id| {
            e.correlation_id == id || e.details.get("share_id") == Some(&json!(id.to_string()))
        }) && self
            .terminal
            .as_deref()
            .is_none_or(|t| e.terminal.as_ref().is_some_and(|et| et.as_str() == t))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| e.kind.as_str() == k || k == format!("share.{}", e.kind.as_str()))
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }
}

fn print_audit_line(e: &AuditEvent, as_json: bool) {
    if as_json {
        out!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let details: Vec<String> = e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out!(
        "{:>6}  {}  {:<20}  {}  {}  {}  {}  {}",
        e.seq,
        humantime::format_rfc3339_millis(e.at),
        e.kind.as_str(),
        e.correlation_id,
        e.principal.as_ref().map_or("-", |p| p.as_str()),
        e.terminal.as_ref().map_or("-", |t| t.as_str()),
        e.backend.as_ref().map_or("-", |b| b.as_str()),
        details.join(" ")
    );
}

async fn audit(config: &Config, args: AuditArgs, as_json: bool) -> ExitCode {
    let filter = match AuditFilter::new(&args) {
        Ok(f) => f,
        Err(e) => return fail(exit::INVALID, e),
    };
    let path = match args.file.clone().map_or_else(|| config.audit_path(), Ok) {
        Ok(p) => p,
        Err(e) => return fail(exit::INVALID, e),
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                exit::NOT_FOUND,
                format!("cannot open the audit log {}: {e}", path.display()),
            )
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut bad = 0usize;
    loop {
        let mut chunk = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut file, &mut chunk) {
            return fail(exit::INTERNAL, format!("reading {}: {e}", path.display()));
        }
        pending.extend_from_slice(&chunk);
        // Only complete lines: a line being written (or torn) waits for its newline.
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=end).collect();
            for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<AuditEvent>(line) {
                    Ok(e) if filter.accepts(&e) => print_audit_line(&e, as_json),
                    Ok(_) => {}
                    Err(_) => bad += 1,
                }
            }
        }
        if !args.follow {
            break;
        }
        // Like `tail -f`: look for more once the end has been reached.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if bad > 0 {
        eprintln!("termshare: skipped {bad} line(s) of the audit log that did not parse");
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------- output

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// "4m 59s" until an RFC 3339 time; "expired" once past.
fn countdown(at: &Value) -> String {
    let Some(t) = at
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return "-".into();
    };
    match t.duration_since(SystemTime::now()) {
        Ok(left) => humantime::format_duration(Duration::from_secs(left.as_secs())).to_string(),
        Err(_) => "expired".into(),
    }
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_audit_warning(audit: &Value) {
    if audit["healthy"] == json!(false) {
        out!(
            "AUDIT LOG FAILING: {} (new shares are refused)",
            str_of(&audit["error"])
        );
    }
}

fn print_badges(board: &Value) {
    let mut rows = Vec::new();
    if let Value::Object(terminals) = board {
        for (terminal, badge) in terminals {
            for s in badge["shares"].as_array().into_iter().flatten() {
                rows.push(vec![
                    terminal.clone(),
                    str_of(&s["share_id"]),
                    str_of(&s["backend"]),
                    str_of(&s["access"]),
                    str_of(&s["participants"]),
                    str_of(&s["state"]),
                    countdown(&s["expires_at"]),
                ]);
            }
        }
    }
    if rows.is_empty() {
        out!("no live shares");
        return;
    }
    print_table(
        &[
            "TERMINAL",
            "SHARE",
            "BACKEND",
            "ACCESS",
            "PARTICIPANTS",
            "STATE",
            "EXPIRES IN",
        ],
        rows,
    );
}

fn print_share(share: &Value, as_json: bool, foreground: bool) {
    if as_json {
        say!("{share}");
        return;
    }
    say!(
        "share {} of terminal {} over {} ({})",
        str_of(&share["share_id"]),
        str_of(&share["terminal"]),
        str_of(&share["backend"]),
        str_of(&share["access"])
    );
    say!("link:           {}", str_of(&share["link"]));
    if share.get("read_only_link").is_some() {
        say!("read-only link: {}", str_of(&share["read_only_link"]));
    }
    say!(
        "expires at:     {} (in {})",
        str_of(&share["expires_at"]),
        countdown(&share["expires_at"])
    );
    if foreground {
        say!("Ctrl-C revokes the share.");
    }
}

fn print_event(e: &AuditEvent, as_json: bool) {
    if as_json {
        let mut o = Map::new();
        o.insert("kind".into(), json!(e.kind.as_str()));
        o.insert("share_id".into(), json!(e.correlation_id.to_string()));
        o.insert(
            "at".into(),
            json!(humantime::format_rfc3339_millis(e.at).to_string()),
        );
        for (k, v) in &e.details {
            o.insert(k.clone(), v.clone());
        }
        say!("{}", Value::Object(o));
    } else {
        let d = |k: &str| e.details.get(k).map(|v| v.to_string()).unwrap_or_default();
        match e.kind {
            AuditKind::ShareGraceWarning => {
                say!("warning: the share ends in {} ms", d("remaining_ms"))
            }
            AuditKind::ShareRevoked | AuditKind::ShareExpired | AuditKind::ShareStopped => {
                say!(
                    "{}: worker stopped in {} ms (escalated: {}, deadline met: {})",
                    e.kind.as_str().trim_start_matches("share."),
                    d("elapsed_ms"),
                    d("escalated"),
                    d("deadline_met")
                )
            }
            AuditKind::ShareFailed => say!("failed: {}", d("cause")),
            other => say!("{}", other.as_str()),
        }
    }
}
