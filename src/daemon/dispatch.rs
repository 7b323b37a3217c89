//! One request to the service: parse its fields, call the service as the peer's
//! identity allows, and shape the answer.

use super::*;

/// `{"healthy": true}` or `{"healthy": false, "error": "…"}`: new shares are refused
/// while the audit log fails.
pub(super) fn audit_status(ts: &Termshare) -> Value {
    match ts.audit_error() {
        None => json!({"healthy": true}),
        Some(e) => json!({"healthy": false, "error": e}),
    }
}

fn duration(what: &str, s: &str) -> Result<Duration, ShareError> {
    termshare_actors::settings::parse_duration(s)
        .map_err(|e| termshare_actors::InvalidInput::new(what, s, &e).into())
}

/// Turn a protocol command into a call on the library API (the only implementation of
/// every rule).
pub(super) async fn dispatch(
    ts: &Termshare,
    identity: &Identity,
    command: Command,
) -> Result<Value, ShareError> {
    let caller = |claimed: Option<String>| -> Result<Caller, ShareError> {
        peers::caller(identity, claimed.as_deref())
    };
    match command {
        Command::Ping {} => {
            Ok(json!({"version": env!("CARGO_PKG_VERSION"), "protocol": protocol::VERSION}))
        }
        Command::Share {
            terminal,
            backend,
            ttl,
            grace,
            access,
            principal,
            join_timeout,
            max_participants,
            record,
        } => {
            let request = ShareRequest {
                terminal: terminal.parse::<TerminalName>()?,
                backend: BackendName::new(backend),
                access: match access {
                    Some(a) => a.parse::<AccessMode>()?,
                    None => AccessMode::ReadWrite,
                },
                caller: caller(principal)?,
                ttl: ttl.map(|t| duration("ttl", &t)).transpose()?,
                grace: grace
                    .map(|g| {
                        g.iter()
                            .map(|d| duration("grace", d))
                            .collect::<Result<_, _>>()
                    })
                    .transpose()?,
                join: termshare_actors::JoinRules {
                    timeout: join_timeout
                        .map(|t| duration("join_timeout", &t))
                        .transpose()?,
                    max_participants,
                },
                record,
            };
            ts.share(request).await.map(|i| protocol::share_json(&i))
        }
        Command::List {} => {
            // Only the shares this caller may manage (their links are secrets).
            let me = caller(None)?;
            Ok(Value::Array(
                ts.list()
                    .await?
                    .iter()
                    .filter(|info| me.may_manage(info))
                    .map(protocol::share_json)
                    .collect(),
            ))
        }
        Command::Extend {
            share_id,
            by,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            let by = duration("duration", &by)?;
            ts.extend(id, by, caller(principal)?)
                .await
                .map(|i| protocol::share_json(&i))
        }
        Command::Revoke {
            share_id,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            ts.revoke(id, caller(principal)?)
                .await
                .map(|r| protocol::report_json(&r))
        }
        Command::Rotate {
            share_id,
            principal,
        } => ts
            .rotate(share_id.parse()?, caller(principal)?)
            .await
            .map(|i| protocol::share_json(&i)),
        Command::Switch {
            share_id,
            backend,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            ts.switch(id, BackendName::new(backend), caller(principal)?)
                .await
                .map(|i| protocol::share_json(&i))
        }
        Command::Status {} => {
            let board = peers::visible_board(&ts.badges().borrow(), identity);
            let badges = serde_json::to_value(&board).map_err(ShareError::internal)?;
            let status = json!({"badges": badges, "audit": audit_status(ts)});
            #[cfg(feature = "fleet")]
            let status = match ts.fleet() {
                Some(fleet) => {
                    let mut status = status;
                    status["fleet"] = serde_json::to_value(fleet).map_err(ShareError::internal)?;
                    status
                }
                None => status,
            };
            Ok(status)
        }
        Command::Watch {} | Command::Panel {} => {
            unreachable!("handled by the connection loop")
        }
        Command::HandoffRequest {
            terminal,
            to,
            principal,
            reason,
            backend,
            ttl,
        } => {
            let request = termshare_actors::HandoffRequest {
                terminal: terminal.parse()?,
                from: caller(principal)?,
                to: to.parse()?,
                reason: reason.unwrap_or_default(),
                backend: backend.map(BackendName::new),
                ttl: ttl.map(|t| duration("ttl", &t)).transpose()?,
            };
            ts.handoff_request(request)
                .await
                .map(|v| protocol::handoff_json(&v))
        }
        Command::HandoffApprove {
            handoff_id,
            principal,
        } => ts
            .handoff_approve(handoff_id.parse()?, caller(principal)?)
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffDeny {
            handoff_id,
            principal,
            reason,
        } => ts
            .handoff_deny(handoff_id.parse()?, caller(principal)?, reason)
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffShow { handoff_id } => ts
            .handoff_show(handoff_id.parse()?, caller(None)?)
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffList {} => Ok(Value::Array(
            ts.handoff_list(caller(None)?)
                .await?
                .iter()
                .map(protocol::handoff_json)
                .collect(),
        )),
    }
}
