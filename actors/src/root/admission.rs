//! One gate for a new share, a switch and an extension: who asks, what the policy
//! allows, the bounds; and the refusal on the record when it says no.

use super::*;

impl RootState {
    /// Admission: everything that can refuse a share or a switch, before anything is
    /// spawned: the policy rule for the backend and access, the TTL bound counted from
    /// the share's start, the join restriction, the per-terminal limit, and whether the
    /// backend can run here.
    pub(super) fn admit(&self, q: &AdmissionQuery<'_>) -> Result<Admitted, Refusal> {
        if self.shutting_down {
            return Err((ShareError::ShuttingDown, None));
        }
        // Fail closed, and keep memory flat: while the log cannot keep up, nothing new
        // starts (what is live can still end).
        if let Some(why) = self.audit_health.refusal() {
            return Err((ShareError::AuditUnavailable(why), None));
        }
        if q.moving.is_none() && self.shares.len() >= self.ctx.settings.max_live_shares {
            return Err((
                ShareError::ServiceFull {
                    what: "live shares",
                    limit: self.ctx.settings.max_live_shares,
                },
                None,
            ));
        }
        let backend = self
            .backends
            .get(q.backend)
            .cloned()
            .ok_or_else(|| (ShareError::UnknownBackend(q.backend.clone()), None))?;
        let grant = match self.policy.evaluate(&PolicyQuery {
            principal: q.principal,
            terminal: q.terminal,
            backend: q.backend,
            access: q.access,
        }) {
            PolicyDecision::Allow(g) => g,
            PolicyDecision::Deny { rule_id, reason } => {
                return Err((
                    ShareError::Denied {
                        rule_id: rule_id.clone(),
                        reason,
                    },
                    rule_id,
                ))
            }
        };
        let rule = Some(grant.rule_id.clone());
        if q.total_ttl.is_zero() || q.total_ttl > crate::settings::MAX_DURATION {
            let err = crate::error::InvalidInput::new(
                "ttl",
                &human(q.total_ttl),
                "must be positive and at most a year",
            );
            return Err((err.into(), rule));
        }
        if let Some(max) = grant.max_ttl {
            if q.total_ttl > max {
                return Err((
                    ShareError::TtlAboveMax {
                        requested: human(q.total_ttl),
                        max: human(max),
                        rule_id: grant.rule_id.clone(),
                    },
                    rule,
                ));
            }
        }
        let limit = grant
            .max_concurrent
            .map_or(self.ctx.settings.per_terminal_limit, |m| {
                m.min(self.ctx.settings.per_terminal_limit)
            });
        let others = self.per_terminal.get(q.terminal).map_or(0, |s| {
            s.iter().filter(|id| Some(**id) != q.moving).count() as u32
        });
        if others >= limit {
            return Err((
                ShareError::LimitReached {
                    terminal: q.terminal.clone(),
                    limit,
                },
                rule,
            ));
        }
        if (grant.require_join_restriction || self.ctx.settings.require_join_restriction)
            && !backend.restricts_joins()
        {
            let by = if grant.require_join_restriction {
                format!("rule `{}`", grant.rule_id)
            } else {
                "the config ([access] require_join_restriction)".to_string()
            };
            return Err((
                ShareError::Denied {
                    rule_id: rule.clone(),
                    reason: format!(
                        "{by} requires a join restriction (authorized keys or GitHub users), \
                         which backend {} does not have",
                        q.backend
                    ),
                },
                rule,
            ));
        }
        let join = within_rule(q.join, &grant, q.total_ttl).map_err(|e| (e, rule.clone()))?;
        if join.any() && !backend.counts_participants() {
            let err = crate::error::InvalidInput::new(
                "join",
                q.backend.as_str(),
                "a join timeout or participant limit needs a backend that sees each \
                 participant (tty-share); this one cannot tell",
            );
            return Err((err.into(), rule));
        }
        if let Some(0) = join.max_participants {
            let err =
                crate::error::InvalidInput::new("max_participants", "0", "must be at least 1");
            return Err((err.into(), rule));
        }
        if let Some(t) = join.timeout {
            if t.is_zero() || t >= q.total_ttl {
                let err = crate::error::InvalidInput::new(
                    "join_timeout",
                    &human(t),
                    "must be positive and shorter than the share's TTL",
                );
                return Err((err.into(), rule));
            }
        }
        backend
            .check()
            .map_err(|e| (ShareError::Backend(e), rule.clone()))?;
        Ok(Admitted {
            grant,
            backend,
            join,
        })
    }

    /// May `caller` act on the live share `info` (extend, revoke, switch)? Its claim
    /// must be proven, and it must own the share or be the operator.
    pub(super) fn authorize(&self, info: &ShareInfo, caller: &Caller) -> Result<(), ShareError> {
        let denied = |reason| ShareError::Denied {
            rule_id: None,
            reason,
        };
        caller.check_claim().map_err(denied)?;
        if !caller.may_manage(info) {
            return Err(denied(format!(
                "{} may not act on share {} of {}",
                caller.principal, info.share_id, info.principal
            )));
        }
        Ok(())
    }

    /// Put a refused action on a live share on the record (the share is unchanged).
    pub(super) fn refused(
        &self,
        info: &ShareInfo,
        action: &str,
        caller: &Caller,
        err: &ShareError,
    ) {
        if matches!(err, ShareError::AuditUnavailable(_)) {
            // The log is what refused: another event would only queue behind it.
            return;
        }
        record(
            &self.ctx.audit,
            AuditEvent::new(AuditKind::ShareRefused, info.share_id)
                .principal(&info.principal)
                .terminal(&info.terminal)
                .backend(&info.backend)
                .by(caller)
                .detail("action", action)
                .detail("reason", err.to_string()),
        );
    }
}

/// The request's join rules within the rule's maxima: a maximum the request leaves
/// unset becomes the share's; one the request exceeds is a denial.
fn within_rule(
    mut join: crate::types::JoinRules,
    grant: &crate::traits::Grant,
    ttl: std::time::Duration,
) -> Result<crate::types::JoinRules, ShareError> {
    let denied = |what: &str, asked: String, max: String| ShareError::Denied {
        rule_id: Some(grant.rule_id.clone()),
        reason: format!(
            "{what} {asked} is above the maximum {max} of rule `{}`",
            grant.rule_id
        ),
    };
    if let Some(max) = grant.max_join_timeout {
        match join.timeout {
            Some(t) if t > max => return Err(denied("join timeout", human(t), human(max))),
            Some(_) => {}
            // A maximum at or past the TTL needs no timer: the TTL ends the share first.
            None if max >= ttl => {}
            None => join.timeout = Some(max),
        }
    }
    if let Some(max) = grant.max_participants {
        match join.max_participants {
            Some(n) if n > max => {
                return Err(denied("max participants", n.to_string(), max.to_string()))
            }
            Some(_) => {}
            None => join.max_participants = Some(max),
        }
    }
    Ok(join)
}
