//! The operations a run draws from: share, extend, revoke, switch, handoff, a denied
//! request, a wait. Each acknowledged one is counted for the audit invariant.

use super::*;

impl Runner {
    pub(super) async fn op_share(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let backend = *self.rng.pick(self.env.backend_names()).unwrap();
        let principal = self.principal();
        let want_write = self.rng.chance(50);
        let access = Env::allowed_access(principal.kind() == "agent", want_write);
        let ttl = if self.fake() {
            Duration::from_secs(self.rng.between(20, 600))
        } else {
            Duration::from_millis(self.rng.between(3_000, 15_000))
        };
        let grace = vec![ttl / 3];
        let request = ShareRequest {
            terminal: terminal.clone(),
            backend: BackendName::new(backend),
            access,
            caller: principal.into(),
            ttl: Some(ttl),
            grace: Some(grace),
            join: Default::default(),
            record: false,
        };
        let acked_at = Instant::now();
        match self.env.svc().share(request).await {
            Ok(info) => {
                self.ack(info.share_id, AuditKind::ShareStarted);
                self.deadlines.insert(info.share_id, acked_at + ttl);
                self.checks.links.insert(info.links.link.clone());
                format!(
                    "share {terminal} over {backend} for {ttl:?} -> {}",
                    info.share_id
                )
            }
            Err(e) => {
                if matches!(
                    e,
                    ShareError::LimitReached { .. } | ShareError::Denied { .. }
                ) {
                    self.denials_acked += 1;
                }
                self.op_error("share", &e);
                format!("share {terminal} over {backend}: {e}")
            }
        }
    }

    pub(super) async fn op_extend(&mut self) -> String {
        let Some(s) = self.pick_live().await else {
            return "extend: no live share".into();
        };
        let by = if self.fake() {
            Duration::from_secs(self.rng.between(1, 120))
        } else {
            Duration::from_millis(self.rng.between(500, 5_000))
        };
        let who = self.principal();
        match self.env.svc().extend(s.share_id, by, who).await {
            Ok(_) => {
                self.ack(s.share_id, AuditKind::ShareExtended);
                if let Some(d) = self.deadlines.get_mut(&s.share_id) {
                    *d += by;
                }
                format!("extend {} by {by:?}", s.share_id)
            }
            Err(e) => {
                self.op_error("extend", &e);
                format!("extend {}: {e}", s.share_id)
            }
        }
    }

    pub(super) async fn op_revoke(&mut self, target: Option<ShareId>) -> String {
        let id = match target {
            Some(id) => id,
            None => match self.pick_live().await {
                Some(s) => s.share_id,
                None => return "revoke: no live share".into(),
            },
        };
        let t0 = Instant::now();
        let who = self.principal();
        let result = self.env.svc().revoke(id, who).await;
        let took = t0.elapsed();
        if took > Duration::from_secs(5) + Duration::from_millis(500) {
            self.violation("revoke within 5 s", format!("revoke of {id} took {took:?}"));
        }
        match result {
            Ok(report) => {
                self.ack(id, AuditKind::ShareRevoked);
                if !report.deadline_met || report.elapsed > Duration::from_secs(5) {
                    self.violation("revoke within 5 s", format!("{report:?}"));
                }
                format!("revoke {id} in {:?}", report.elapsed)
            }
            Err(e) => {
                if let ShareError::RevokeDeadlineMissed(r) = &e {
                    self.violation("revoke within 5 s", format!("{r:?}"));
                }
                self.op_error("revoke", &e);
                format!("revoke {id}: {e}")
            }
        }
    }

    pub(super) async fn op_switch(&mut self) -> String {
        let Some(s) = self.pick_live().await else {
            return "switch: no live share".into();
        };
        let backend = *self.rng.pick(self.env.backend_names()).unwrap();
        let who = self.principal();
        match self
            .env
            .svc()
            .switch(s.share_id, BackendName::new(backend), who)
            .await
        {
            Ok(info) => {
                self.ack(s.share_id, AuditKind::ShareSwitched);
                self.checks.links.insert(info.links.link);
                format!("switch {} to {backend}", s.share_id)
            }
            Err(e) => {
                self.op_error("switch", &e);
                format!("switch {} to {backend}: {e}", s.share_id)
            }
        }
    }

    pub(super) async fn op_handoff(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let (from, to) = if self.rng.chance(50) {
            ("human:alice", "agent:claude")
        } else {
            ("agent:claude", "human:bob")
        };
        let request = HandoffRequest {
            terminal: terminal.clone(),
            from: from.parse::<termshare_actors::Principal>().unwrap().into(),
            to: to.parse().unwrap(),
            reason: "chaos".into(),
            backend: None,
            ttl: None,
        };
        let svc = self.env.svc();
        let view = match svc.handoff_request(request).await {
            Ok(v) => v,
            Err(e) => {
                self.op_error("handoff", &e);
                return format!("handoff {terminal}: {e}");
            }
        };
        let id = view.handoff_id;
        self.ack(id, AuditKind::HandoffRequested);
        let roll = self.rng.below(10);
        if roll == 0 {
            return format!("handoff {id} left pending");
        }
        let step1 = self
            .env
            .svc()
            .handoff_approve(
                id,
                "human:owner"
                    .parse::<termshare_actors::Principal>()
                    .unwrap(),
            )
            .await;
        if let Err(e) = step1 {
            self.op_error("handoff", &e);
            return format!("handoff {id}: {e}");
        }
        self.ack(id, AuditKind::HandoffApproved);
        if roll <= 3 {
            let denied = self
                .env
                .svc()
                .handoff_deny(
                    id,
                    "human:lead".parse::<termshare_actors::Principal>().unwrap(),
                    None,
                )
                .await;
            return match denied {
                Ok(_) => {
                    self.ack(id, AuditKind::HandoffDenied);
                    format!("handoff {id} denied at step 2")
                }
                Err(e) => {
                    self.op_error("handoff", &e);
                    format!("handoff {id}: {e}")
                }
            };
        }
        match self
            .env
            .svc()
            .handoff_approve(
                id,
                "human:lead".parse::<termshare_actors::Principal>().unwrap(),
            )
            .await
        {
            Ok(done) => {
                self.ack(id, AuditKind::HandoffApproved);
                self.ack(id, AuditKind::HandoffCompleted);
                format!("handoff {id} {}", done.state.as_str())
            }
            Err(e) => {
                self.op_error("handoff", &e);
                format!("handoff {id}: {e}")
            }
        }
    }

    /// A request the policy denies (an agent asking to write): nothing may start.
    pub(super) async fn op_denied(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let before = self.env.seen_workers();
        let starts = self.env.spawn_count();
        let request = ShareRequest {
            terminal: terminal.clone(),
            backend: BackendName::new(self.env.backend_names()[0]),
            access: AccessMode::ReadWrite,
            caller: "agent:claude"
                .parse::<termshare_actors::Principal>()
                .unwrap()
                .into(),
            ttl: None,
            grace: None,
            join: Default::default(),
            record: false,
        };
        match self.env.svc().share(request).await {
            Err(ShareError::Denied { .. }) => {
                self.denials_acked += 1;
                *self
                    .summary
                    .actions
                    .entry("share.denied".into())
                    .or_default() += 1;
            }
            Err(ShareError::AuditUnavailable(_)) => {}
            other => self.violation(
                "deny by default",
                format!("agent write on {terminal} was not denied: {other:?}"),
            ),
        }
        let after = self.env.seen_workers();
        self.summary.checks += 1;
        let new: Vec<_> = after.difference(&before).collect();
        if (self.fake() && self.env.spawn_count() != starts) || (!self.fake() && !new.is_empty()) {
            self.violation(
                "a denied request spawns nothing",
                format!("new workers: {new:?}"),
            );
        }
        format!("denied request on {terminal}")
    }

    pub(super) async fn op_wait(&mut self) -> String {
        let d = if self.fake() {
            Duration::from_millis(self.rng.between(100, 40_000))
        } else {
            Duration::from_millis(self.rng.between(20, 400))
        };
        tokio::time::sleep(d).await;
        format!("wait {d:?}")
    }
}
