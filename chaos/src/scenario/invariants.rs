//! The invariants, checked after every step at a cost that does not grow with the run:
//! the live state is bounded by the shares, and the audit log is read from where the
//! last check stopped, with running counts.
//!
//! Each state invariant has its own time bound, counted from when a problem was first
//! seen: a share past its TTL by more than 1 s, two live shares on a terminal, a dead
//! host terminal are violations at first sight; a worker without its share (or a share
//! without its worker) may exist only while a start or an end settles. The TTL is also
//! checked exactly, from each `share.expired` event's `past_deadline_ms`, so a late
//! expiry that ends between two checks is still caught.

use super::*;

use crate::env::AuditCursor;

/// How long each kind of problem may last before it is a violation.
fn bound(invariant: &str, link_timeout: Duration) -> Duration {
    match invariant {
        // A start in progress has a worker whose share is not started yet (its pid is
        // learnt from `share.started`): up to the link timeout, then its cleanup.
        "no worker without a live share" => link_timeout + Duration::from_secs(1),
        // A share whose worker just died ends a few ms later.
        "a live share has its worker" => Duration::from_secs(1),
        _ => Duration::ZERO,
    }
}

#[derive(Default)]
pub(super) struct Checks {
    audit: AuditCursor,
    /// Acknowledged actions: (correlation id, kind) → how many.
    acked: HashMap<(Uuid, AuditKind), u32>,
    /// Events in the log so far, by the same key.
    logged: HashMap<(Uuid, AuditKind), u32>,
    /// Keys acknowledged or logged since the last audit check: only these can have
    /// changed.
    dirty: HashSet<(Uuid, AuditKind)>,
    /// End events per share.
    ends: HashMap<Uuid, u32>,
    denied: u64,
    last_seq: u64,
    /// Every link handed out, to be sure none is on the record.
    pub(super) links: HashSet<String>,
    /// Problems present at the last check, and since when: (invariant, subject).
    open: HashMap<(&'static str, String), (Instant, String)>,
}

impl Checks {
    pub(super) fn acknowledged(&mut self, id: Uuid, kind: AuditKind) {
        *self.acked.entry((id, kind)).or_default() += 1;
        self.dirty.insert((id, kind));
    }
}

/// Links in `text`: every `scheme://…` run (up to a quote, a space or a backslash).
fn links_in(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("://").filter_map(move |(at, _)| {
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-'))
            .map_or(0, |i| i + 1);
        let end = text[at..]
            .find(['"', ' ', '\\', '\''])
            .map_or(text.len(), |i| at + i);
        (start < at).then(|| &text[start..end])
    })
}

impl Runner {
    /// The state problems now: (invariant, subject, detail).
    async fn state_problems(&mut self) -> Vec<(&'static str, String, String)> {
        let mut problems = Vec::new();
        let live = self.live().await;
        self.summary.checks += 4;
        let mut per_terminal: HashMap<&str, usize> = HashMap::new();
        for s in &live {
            *per_terminal.entry(s.terminal.as_str()).or_default() += 1;
        }
        for (t, n) in per_terminal {
            if n > 1 {
                let detail = format!("{t} has {n} live shares");
                problems.push(("per-terminal limit", t.to_string(), detail));
            }
        }
        let now = Instant::now();
        for s in &live {
            if let Some(deadline) = self.deadlines.get(&s.share_id) {
                if now > *deadline + Duration::from_secs(1) {
                    problems.push((
                        "no share outlives its TTL by 1 s",
                        s.share_id.to_string(),
                        format!("{} is {:?} past its deadline", s.share_id, now - *deadline),
                    ));
                }
            }
        }
        let seen = self.env.seen_workers();
        let mut owned: HashSet<Seen> = HashSet::new();
        for s in &live {
            if let Some(w) = self.env.worker_of(s) {
                owned.insert(w.clone());
                let should_run = matches!(s.state, ShareState::Active | ShareState::Expiring);
                if should_run && !seen.contains(&w) {
                    problems.push((
                        "a live share has its worker",
                        s.share_id.to_string(),
                        format!("{} ({:?}) has no worker {w:?}", s.share_id, s.state),
                    ));
                }
            }
        }
        for w in seen.difference(&owned) {
            problems.push((
                "no worker without a live share",
                format!("{w:?}"),
                format!("orphan worker {w:?}"),
            ));
        }
        for t in &self.env.terminals {
            if !self.env.terminal_alive(t) {
                problems.push((
                    "host terminals survive worker faults",
                    t.to_string(),
                    format!("terminal {t} is gone"),
                ));
            }
        }
        problems
    }

    /// The state invariants, each against its own bound from first sight.
    pub(super) async fn check(&mut self) {
        let now = Instant::now();
        let link_timeout = self.env.settings.link_timeout;
        let mut still = HashMap::new();
        for (invariant, subject, detail) in self.state_problems().await {
            let key = (invariant, subject);
            let since = self.checks.open.get(&key).map_or(now, |(t, _)| *t);
            if now.duration_since(since) >= bound(invariant, link_timeout) {
                let lasted = now.duration_since(since);
                self.violation(invariant, format!("{detail} (for {lasted:?})"));
            } else {
                still.insert(key, (since, detail));
            }
        }
        self.checks.open = still;
    }

    /// After the last step: wait out the longest bound while problems remain, so that
    /// none is left unjudged.
    pub(super) async fn settle(&mut self) {
        let longest = bound(
            "no worker without a live share",
            self.env.settings.link_timeout,
        );
        let until = Instant::now() + longest + Duration::from_millis(100);
        while !self.checks.open.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.check().await;
        }
        self.check().await;
    }

    /// Audit invariants on what was written since the last check: every acknowledged
    /// action has exactly one event, numbering has no gaps, a share ends once, no share
    /// expired more than 1 s late, and no link is on the record.
    pub(super) fn check_audit(&mut self) {
        let new = self.env.new_audit_events(&mut self.checks.audit);
        self.summary.checks += 6;
        let mut late = Vec::new();
        let mut leaked = Vec::new();
        for e in &new {
            let key = (e.correlation_id, e.kind);
            *self.checks.logged.entry(key).or_default() += 1;
            self.checks.dirty.insert(key);
            if e.seq != self.checks.last_seq + 1 {
                let (want, got) = (self.checks.last_seq + 1, e.seq);
                self.violation(
                    "audit numbering has no gaps",
                    format!("expected seq {want}, found {got}"),
                );
            }
            self.checks.last_seq = e.seq;
            if e.kind.is_terminal() && e.kind != AuditKind::ShareDenied {
                *self.checks.ends.entry(e.correlation_id).or_default() += 1;
                if self.checks.ends[&e.correlation_id] > 1 {
                    self.violation(
                        "a share ends once",
                        format!("{} ended again", e.correlation_id),
                    );
                }
            }
            if e.kind == AuditKind::ShareDenied {
                self.checks.denied += 1;
            }
            if e.kind == AuditKind::ShareExpired {
                let past = e.details.get("past_deadline_ms").and_then(|v| v.as_f64());
                if past.is_some_and(|ms| ms > 1000.0) {
                    late.push(format!(
                        "{} expired {:.0} ms past its deadline",
                        e.correlation_id,
                        past.unwrap_or(0.0)
                    ));
                }
            }
            let text = serde_json::to_string(e).unwrap_or_default();
            for link in links_in(&text) {
                if self.checks.links.contains(link) {
                    leaked.push(link.to_owned());
                }
            }
        }
        for detail in late {
            self.violation("no share outlives its TTL by 1 s", detail);
        }
        for link in leaked {
            self.violation("no link in the audit log", link);
        }
        let dirty: Vec<_> = self.checks.dirty.drain().collect();
        for key in dirty {
            let Some(&n) = self.checks.acked.get(&key) else {
                continue;
            };
            let got = self.checks.logged.get(&key).copied().unwrap_or(0);
            if got != n {
                self.violation(
                    "each acknowledged action has exactly one event",
                    format!(
                        "{} {}: {n} acknowledged, {got} in the log",
                        key.0,
                        key.1.as_str()
                    ),
                );
            }
        }
        if self.checks.denied < self.denials_acked {
            self.violation(
                "denials are audited",
                format!(
                    "{} denials acknowledged, {} in the log",
                    self.denials_acked, self.checks.denied
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::links_in;

    #[test]
    fn links_are_found_inside_json() {
        let text = r#"{"a":"see http://127.0.0.1:8000/s/SECRET/ now","b":"fake://fake/123"}"#;
        let found: Vec<&str> = links_in(text).collect();
        assert_eq!(
            found,
            ["http://127.0.0.1:8000/s/SECRET/", "fake://fake/123"]
        );
    }
}
