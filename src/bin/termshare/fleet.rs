//! `fleet list|audit|revoke`: the fleet's database, read and written as the
//! operator's own database role (the daemon is not involved).

use std::process::ExitCode;

use termshare::config::Config;
use termshare::exit;
use termshare::fleet::read::{self, AuditQuery, ListFilter, RevokeCriteria};
use termshare::fleet::FleetError;

use crate::args::{FleetCommand, FleetDb};
use crate::audit::{audit_line_text, AuditFilter};
use crate::output::fail;

pub async fn fleet(config: &Config, cmd: FleetCommand, as_json: bool) -> ExitCode {
    match run(config, cmd, as_json).await {
        Ok(code) => code,
        Err(e) => {
            let code = match &e {
                FleetError::Invalid(_) | FleetError::Config(_) => exit::INVALID,
                FleetError::Permission(_) => exit::DENIED,
                _ => exit::FLEET_UNAVAILABLE,
            };
            fail(code, e)
        }
    }
}

/// A string from the database as text for a terminal: control characters (an
/// escape sequence a host role wrote into a row) shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `--database`, else the config's `[fleet] database`.
fn database(config: &Config, db: &FleetDb) -> Result<String, FleetError> {
    if let Some(d) = &db.database {
        return Ok(d.clone());
    }
    match config.fleet() {
        Ok(Some(f)) => Ok(f.database),
        Ok(None) => Err(FleetError::Invalid(
            "no fleet database: give --database or [fleet] database in --config".into(),
        )),
        Err(e) => Err(FleetError::Invalid(e)),
    }
}

async fn run(config: &Config, cmd: FleetCommand, as_json: bool) -> Result<ExitCode, FleetError> {
    match cmd {
        FleetCommand::List {
            db,
            host,
            principal,
            backend,
        } => {
            let conn = read::connect(&database(config, &db)?).await?;
            let filter = ListFilter {
                host,
                principal,
                backend,
            };
            let (hosts, shares) = read::list(&conn, &filter).await?;
            if as_json {
                for s in &shares {
                    out!("{}", serde_json::to_string(s).unwrap_or_default());
                }
                return Ok(ExitCode::SUCCESS);
            }
            out!(
                "{:<20}  {:<12}  {:>8}  {:>9}  {:>11}",
                "HOST",
                "STATE",
                "PID",
                "SILENT",
                "SHIPPED_SEQ"
            );
            for h in &hosts {
                out!(
                    "{:<20}  {:<12}  {:>8}  {:>9}  {:>11}",
                    clean(&h.host_id),
                    clean(&h.state),
                    h.pid.map_or("-".into(), |p| p.to_string()),
                    h.silent_for_s.map_or("-".into(), |s| format!("{s:.1}s")),
                    h.shipped_seq
                );
            }
            out!("");
            out!(
                "{:<20}  {:<36}  {:<12}  {:<20}  {:<16}  {:<9}  {:>12}  EXPIRES",
                "HOST",
                "SHARE",
                "STATE",
                "PRINCIPAL",
                "TERMINAL",
                "BACKEND",
                "PARTICIPANTS"
            );
            for s in &shares {
                out!(
                    "{:<20}  {:<36}  {:<12}  {:<20}  {:<16}  {:<9}  {:>12}  {}",
                    clean(&s.host_id),
                    s.share_id,
                    clean(&s.state),
                    clean(&s.principal),
                    clean(&s.terminal),
                    clean(&s.backend),
                    s.participants.map_or("unknown".into(), |n| n.to_string()),
                    s.expires_at
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Audit {
            db,
            host,
            filter,
            limit,
        } => {
            let f = AuditFilter::new(&filter).map_err(FleetError::Invalid)?;
            if limit < 1 {
                return Err(FleetError::Invalid("--limit must be at least 1".into()));
            }
            let conn = read::connect(&database(config, &db)?).await?;
            let query = AuditQuery {
                host,
                share: f.share,
                terminal: f.terminal,
                kind: f.kind,
                since: f.since,
                until: f.until,
                limit: limit.min(read::MAX_AUDIT_ROWS),
            };
            for event in read::audit(&conn, &query).await? {
                if as_json {
                    out!("{event}");
                    continue;
                }
                let host = clean(event["host_id"].as_str().unwrap_or("?"));
                match serde_json::from_value::<termshare::actors::AuditEvent>(event) {
                    Ok(e) => out!("{host:<20}  {}", clean(&audit_line_text(&e))),
                    Err(_) => out!("{host:<20}  (an event this termshare cannot read)"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Revoke {
            db,
            principal,
            host,
            share,
            reason,
            timeout,
        } => {
            let share = share
                .map(|s| {
                    uuid::Uuid::parse_str(&s).map_err(|_| {
                        FleetError::Invalid(format!("--share `{s}` is not a share id"))
                    })
                })
                .transpose()?;
            if let Some(p) = &principal {
                p.parse::<termshare::actors::Principal>()
                    .map_err(|e| FleetError::Invalid(e.to_string()))?;
            }
            if let Some(h) = &host {
                termshare::config::check_host_id(h)
                    .map_err(|why| FleetError::Invalid(format!("--host `{h}`: {why}")))?;
            }
            let criteria = RevokeCriteria {
                principal,
                host,
                share,
                reason,
            };
            if criteria.principal.is_none() && criteria.host.is_none() && criteria.share.is_none() {
                return Err(FleetError::Invalid(
                    "name what to revoke: --principal, --host or --share".into(),
                ));
            }
            let mut conn = read::connect(&database(config, &db)?).await?;
            let result = read::revoke(&mut conn, &criteria, timeout).await?;
            if as_json {
                for o in &result.outcomes {
                    out!("{}", serde_json::to_string(o).unwrap_or_default());
                }
                for h in &result.no_answer {
                    out!(
                        "{}",
                        serde_json::json!({"order_id": result.order_id, "host_id": h, "outcome": "no_answer"})
                    );
                }
            } else {
                out!(
                    "order {} (by {})",
                    result.order_id,
                    clean(&result.ordered_by)
                );
                for o in &result.outcomes {
                    let how = match o.outcome.as_str() {
                        "revoked" => format!(
                            "revoked in {:.0} ms{}",
                            o.detail["elapsed_ms"].as_f64().unwrap_or(0.0),
                            if o.detail["deadline_met"].as_bool() == Some(false) {
                                " (deadline missed)"
                            } else {
                                ""
                            }
                        ),
                        other => match o.detail["error"].as_str() {
                            Some(e) => clean(&format!("{other}: {e}")),
                            None => clean(other),
                        },
                    };
                    out!(
                        "{:<20}  {}  {:<20}  {how}",
                        o.host_id,
                        o.share_id,
                        o.principal
                    );
                }
                for h in &result.answered {
                    if !result.outcomes.iter().any(|o| &o.host_id == h) {
                        out!("{:<20}  no matching shares", clean(h));
                    }
                }
                for h in &result.no_answer {
                    out!(
                        "{h:<20}  no answer within {} (it carries the order out when it is back)",
                        humantime::format_duration(timeout)
                    );
                }
            }
            let failed = result.outcomes.iter().any(|o| {
                o.outcome == "failed" || o.detail["deadline_met"].as_bool() == Some(false)
            });
            Ok(if failed || !result.no_answer.is_empty() {
                ExitCode::from(exit::REVOKE_DEADLINE_MISSED as u8)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
