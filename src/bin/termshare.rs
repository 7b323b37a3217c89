//! The `termshare` command line. `share` runs the subsystem in the foreground: it prints
//! the share, then its lifecycle events, and stays until the TTL ends or it is told to
//! stop (SIGINT/SIGTERM), which revokes the share and reaps its worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use termshare::actors::{
    AccessMode, AuditEvent, AuditKind, BackendName, Principal, ShareInfo, ShareRequest,
    TerminalName,
};
use termshare::config::Config;
use termshare::exit;
use termshare::policy::Policy;
use termshare::Termshare;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "termshare", version, about = "Share a live terminal safely")]
struct Cli {
    /// Config file (TOML); every key is optional.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Share a terminal (a tmux session) in the foreground until its TTL ends or Ctrl-C.
    Share(ShareArgs),
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
    /// Policy file (TOML); without one every share is denied.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return fail(exit::INVALID, e),
        },
        None => Config::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(exit::INTERNAL, format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Share(args) => runtime.block_on(share(config, args)),
    }
}

async fn share(config: Config, args: ShareArgs) -> ExitCode {
    let request = match build_request(&args) {
        Ok(r) => r,
        Err(e) => return fail(exit::INVALID, e),
    };
    let policy_path = args
        .policy
        .clone()
        .or_else(|| config.policy.as_deref().map(|p| config.resolve(p)));
    let policy = match &policy_path {
        Some(p) => match Policy::load(p) {
            Ok(p) => p,
            Err(e) => return fail(exit::INVALID, e),
        },
        None => Policy::default(),
    };
    let (mut sigint, mut sigterm) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return fail(exit::INTERNAL, "cannot install signal handlers"),
    };
    let ts = match Termshare::start(&config, policy).await {
        Ok(t) => t,
        Err(e @ termshare::StartError::Config(_)) => return fail(exit::INVALID, e),
        Err(e) => return fail(exit::INTERNAL, e),
    };
    let mut events = ts.subscribe();
    let principal = request.principal.clone();
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
    print_share(&info, args.json);
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
                    print_event(&e, args.json);
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
            print_event(&e, args.json);
        }
    }
    ts.shutdown().await;
    match revoked {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(exit::code(&e), e),
    }
}

fn build_request(args: &ShareArgs) -> Result<ShareRequest, String> {
    let terminal: TerminalName = args
        .terminal
        .parse()
        .map_err(|e: termshare::actors::InvalidInput| e.to_string())?;
    let access: AccessMode = args
        .access
        .parse()
        .map_err(|e: termshare::actors::InvalidInput| e.to_string())?;
    let principal: Principal = match &args.principal {
        Some(p) => p
            .parse()
            .map_err(|e: termshare::actors::InvalidInput| e.to_string())?,
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            format!("human:{user}")
                .parse()
                .map_err(|e: termshare::actors::InvalidInput| format!("{e}; pass --as"))?
        }
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
        principal,
        ttl: args.ttl,
        grace: args.grace.clone(),
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_share(info: &ShareInfo, as_json: bool) {
    if as_json {
        let mut o = json!({
            "share_id": info.share_id.to_string(),
            "terminal": info.terminal.as_str(),
            "backend": info.backend.as_str(),
            "access": info.access.as_str(),
            "link": info.links.link,
            "expires_at": rfc3339(info.expires_at),
        });
        if let Some(ro) = &info.links.read_only_link {
            o["read_only_link"] = json!(ro);
        }
        println!("{o}");
    } else {
        println!(
            "sharing terminal {} over {} ({}), share {}",
            info.terminal, info.backend, info.access, info.share_id
        );
        println!("link:           {}", info.links.link);
        if let Some(ro) = &info.links.read_only_link {
            println!("read-only link: {ro}");
        }
        println!("expires at:     {}", rfc3339(info.expires_at));
        println!("Ctrl-C revokes the share.");
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
        println!("{}", Value::Object(o));
    } else {
        let d = |k: &str| e.details.get(k).map(|v| v.to_string()).unwrap_or_default();
        match e.kind.as_str() {
            "share.grace_warning" => {
                println!("warning: the share ends in {} ms", d("remaining_ms"))
            }
            "share.revoked" | "share.expired" | "share.stopped" => println!(
                "{}: worker stopped in {} ms (escalated: {}, deadline met: {})",
                e.kind.as_str().trim_start_matches("share."),
                d("elapsed_ms"),
                d("escalated"),
                d("deadline_met")
            ),
            "share.failed" => println!("failed: {}", d("cause")),
            other => println!("{other}"),
        }
    }
}
