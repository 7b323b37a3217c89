//! Commands against a running daemon: `list`, `extend`, `revoke`, `switch`, `status`,
//! and the connection they share.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use termshare::client::{Client, ClientError, ConnectError};
use termshare::config::Config;
use termshare::exit;
use termshare::protocol::Command as Request;

use crate::output::{
    countdown, fail, print_audit_warning, print_badges, print_share, print_table, str_of,
};

/// The daemon's socket, and whom the client trusts to listen on it.
pub struct Socket {
    pub path: PathBuf,
    /// `[service] daemon_user`: a shared daemon that is not ours.
    pub daemon_uid: Option<u32>,
}

pub async fn connect(socket: &Socket) -> Result<Client, ExitCode> {
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

pub fn client_fail(e: ClientError) -> ExitCode {
    match e {
        ClientError::Remote(r) => fail(r.exit, r.message),
        other => fail(exit::INTERNAL, other),
    }
}

pub async fn list(socket: &Socket, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(&Request::List {}).await {
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
                        "PARTICIPANTS",
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
                                participants(&s["participants"]),
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

/// `termshare panel`: the lane panel's address, signed in as you (a one-time secret,
/// good for two minutes). With `--open`, the browser is given a file of yours that
/// sends it there, never the address itself: a command line is readable by every
/// local user, who could race the browser to the secret (Jupyter does the same).
pub async fn panel(config: &Config, socket: &Socket, open: bool, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = match client.call(&Request::Panel {}).await {
        Ok(v) => str_of(&v["url"]),
        Err(e) => return client_fail(e),
    };
    if as_json {
        out!("{}", serde_json::json!({ "url": url }));
    } else {
        out!("{url}");
    }
    if open {
        let page = match redirect_page(config, &url) {
            Ok(p) => p,
            Err(e) => return fail(exit::INTERNAL, format!("cannot open the panel: {e}")),
        };
        let opened = std::process::Command::new("xdg-open")
            .arg(&page)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = opened {
            return fail(
                exit::INTERNAL,
                format!("cannot run xdg-open: {e}; open the address above"),
            );
        }
    }
    ExitCode::SUCCESS
}

/// A page that sends its browser to `url`: `panel-RANDOM.html`, 0600, in the runtime
/// directory (checked like every directory termshare writes to). Pages older than a
/// secret's life are removed first.
fn redirect_page(config: &Config, url: &str) -> Result<std::path::PathBuf, String> {
    use std::io::Write as _;
    let dir = config.runtime_dir().map_err(|e| e.to_string())?;
    let dir = termshare::secure_fs::open_dir(&dir, true, termshare::secure_fs::Trust::default())
        .map_err(|e| e.to_string())?;
    if let Ok(entries) = std::fs::read_dir(dir.path()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(120));
            if name.starts_with("panel-") && name.ends_with(".html") && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| e.to_string())?;
    let name = format!(
        "panel-{}.html",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let flags =
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL;
    let mut file = dir.open_file(&name, flags).map_err(|e| e.to_string())?;
    // The address is the daemon's: http, an IP and port, a base64url secret. Escaped
    // all the same.
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    writeln!(
        file,
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
         <title>termshare panel</title><a href=\"{escaped}\">Open the termshare panel</a>"
    )
    .map_err(|e| e.to_string())?;
    Ok(dir.path().join(name))
}

pub async fn one_share(socket: &Socket, cmd: Request, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(&cmd).await {
        Ok(share) => {
            print_share(&share, as_json, false);
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

pub async fn revoke(socket: &Socket, cmd: Request, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(&cmd).await {
        Ok(report) => {
            if as_json {
                out!("{report}");
            } else {
                out!(
                    "revoked share {}: worker stopped in {:.1} ms (escalated: {}, deadline met: {}); \
                     participants before: {}, after: {}",
                    str_of(&report["share_id"]),
                    report["elapsed_ms"].as_f64().unwrap_or(f64::NAN),
                    report["escalated"],
                    report["deadline_met"],
                    participants(&report["participants_before"]),
                    participants(&report["participants_after"]),
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => client_fail(e),
    }
}

pub async fn status(socket: &Socket, watch: bool, as_json: bool) -> ExitCode {
    let mut client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !watch {
        return match client.call(&Request::Status {}).await {
            Ok(status) => {
                if as_json {
                    out!("{status}");
                } else {
                    print_audit_warning(&status["audit"]);
                    print_fleet(&status["fleet"]);
                    print_badges(&status["badges"]);
                }
                ExitCode::SUCCESS
            }
            Err(e) => client_fail(e),
        };
    }
    if let Err(e) = client.call(&Request::Watch {}).await {
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

/// With `[fleet]`: the host id, the shipping lag, the lease, and any error.
fn print_fleet(fleet: &Value) {
    if fleet.is_null() {
        return;
    }
    out!(
        "fleet: host {}, shipped seq {} of {} (lag {} events), lease {}",
        fleet["host_id"].as_str().unwrap_or("?"),
        fleet["shipped_seq"],
        fleet["committed_seq"],
        fleet["lag_events"],
        if fleet["lease_held"].as_bool() == Some(true) {
            "held"
        } else {
            "not held"
        }
    );
    for key in ["shipper_error", "agent_error"] {
        if let Some(e) = fleet[key].as_str() {
            out!("fleet: {}: {e}", key.replace('_', " "));
        }
    }
}

/// A participant count as people read it: the number, or `unknown` where the backend
/// cannot tell (never a guessed 0).
fn participants(count: &Value) -> String {
    match count.as_u64() {
        Some(n) => n.to_string(),
        None => "unknown".into(),
    }
}
