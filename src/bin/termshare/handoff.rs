//! `handoff request|approve|deny|show|list` against the daemon.

use std::process::ExitCode;

use serde_json::Value;

use crate::args::HandoffCommand;
use crate::client::{client_fail, connect, Socket};
use crate::output::str_of;
use termshare::protocol::Command as Request;

pub async fn handoff(socket: &Socket, cmd: HandoffCommand, as_json: bool) -> ExitCode {
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
            ttl,
        } => Request::HandoffRequest {
            terminal,
            to,
            principal,
            reason,
            backend,
            ttl: ttl.map(|d| humantime::format_duration(d).to_string()),
        },
        HandoffCommand::Approve { handoff, principal } => Request::HandoffApprove {
            handoff_id: handoff,
            principal,
        },
        HandoffCommand::Deny {
            handoff,
            principal,
            reason,
        } => Request::HandoffDeny {
            handoff_id: handoff,
            principal,
            reason,
        },
        HandoffCommand::Show { handoff } => Request::HandoffShow {
            handoff_id: handoff,
        },
        HandoffCommand::List => Request::HandoffList {},
    };
    match client.call(&request).await {
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
