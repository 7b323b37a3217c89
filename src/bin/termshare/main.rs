//! The `termshare` command line: one module per job.
//!
//! - [`args`]: the commands and flags (clap);
//! - [`share`]: `share`, through the daemon or in the foreground;
//! - [`serve`]: the daemon;
//! - [`client`]: `list`, `extend`, `revoke`, `switch`, `status` against the daemon;
//! - [`handoff`]: `handoff request|approve|deny|show|list`;
//! - [`audit`]: reading the audit log;
//! - [`replay`]: playing a recording;
//! - [`output`]: how results are printed, and the exit on a closed stdout.

#[macro_use]
mod output;
mod args;
mod audit;
mod client;
#[cfg(feature = "fleet")]
mod fleet;
mod handoff;
mod replay;
mod serve;
mod share;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use termshare::config::Config;
use termshare::exit;
use termshare::protocol::Command as Request;

use args::{Cli, Command};
use client::Socket;
use output::fail;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return fail(exit::INVALID, e),
        },
        None => Config::default(),
    };
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(exit::INTERNAL, format!("cannot start the runtime: {e}")),
    };
    let json = cli.json;
    let socket = match socket_of(&config, &cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Share(args) => share::share(config, &socket, args, json).await,
            Command::Serve { policy, check } => {
                serve::serve(config, &socket.path, policy, check).await
            }
            Command::List => client::list(&socket, json).await,
            Command::Extend {
                share,
                duration,
                principal,
            } => {
                let by = humantime::format_duration(duration).to_string();
                let cmd = Request::Extend {
                    share_id: share,
                    by,
                    principal,
                };
                client::one_share(&socket, cmd, json).await
            }
            Command::Revoke { share, principal } => {
                let cmd = Request::Revoke {
                    share_id: share,
                    principal,
                };
                client::revoke(&socket, cmd, json).await
            }
            Command::Rotate { share, principal } => {
                let cmd = Request::Rotate {
                    share_id: share,
                    principal,
                };
                client::one_share(&socket, cmd, json).await
            }
            Command::Switch {
                share,
                backend,
                principal,
            } => {
                let cmd = Request::Switch {
                    share_id: share,
                    backend,
                    principal,
                };
                client::one_share(&socket, cmd, json).await
            }
            Command::Status { watch } => client::status(&socket, watch, json).await,
            Command::Audit(args) => audit::audit(&config, args, json).await,
            Command::Replay(args) => replay::replay(args).await,
            Command::Panel { open } => client::panel(&config, &socket, open, json).await,
            Command::Handoff(cmd) => handoff::handoff(&socket, cmd, json).await,
            #[cfg(feature = "fleet")]
            Command::Fleet(cmd) => fleet::fleet(&config, cmd, json).await,
            #[cfg(not(feature = "fleet"))]
            Command::Fleet(_) => fail(
                exit::INVALID,
                "this build has no fleet support (cargo feature `fleet`)",
            ),
        }
    })
}

/// Logs to stderr through `tracing`: `RUST_LOG`, else `[service] log`, else `info` for
/// the daemon and `warn` for a command.
fn init_logging(config: &Config, daemon: bool) {
    let default_level = if daemon { "info" } else { "warn" };
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
}

/// The daemon's socket (`--socket`, else the config's), and whom to trust on it.
/// `audit` needs none.
fn socket_of(config: &Config, cli: &Cli) -> Result<Socket, ExitCode> {
    let needs_socket = !matches!(
        cli.command,
        Command::Audit(_) | Command::Replay(_) | Command::Fleet(_)
    );
    let path = match config.socket_path(cli.socket.as_deref()) {
        Ok(s) => s,
        Err(e) if needs_socket => return Err(fail(exit::INVALID, e)),
        Err(_) => PathBuf::new(),
    };
    let daemon_uid = match &config.service.daemon_user {
        None => None,
        Some(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Some(u.uid.as_raw()),
            _ => {
                return Err(fail(
                    exit::INVALID,
                    format!("service.daemon_user `{name}`: no such user"),
                ))
            }
        },
    };
    Ok(Socket { path, daemon_uid })
}
