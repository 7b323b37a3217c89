//! The faults a run injects, in turn: worker kills and stops, crashes of actors, a
//! slow or silent backend, a failing audit disk, a host terminal killed.

use super::*;

impl Runner {
    pub(super) async fn fault(&mut self) -> String {
        let n = self.cfg.faults.len();
        if n == 0 {
            return self.op_wait().await;
        }
        let kind = self.cfg.faults[self.fault_cursor % n];
        let target = if kind.needs_share() {
            match self.pick_live().await {
                Some(s) => Some(s),
                None => return self.op_share().await, // the fault waits for a share
            }
        } else {
            None
        };
        self.fault_cursor += 1;
        *self.summary.faults.entry(kind.name()).or_default() += 1;
        let plan = self.env.plan.clone();
        match kind {
            FaultKind::WorkerSigkill => {
                let s = target.unwrap();
                self.env.kill_worker(&s);
                format!("FAULT sigkill worker of {}", s.share_id)
            }
            FaultKind::WorkerSigstop => {
                let s = target.unwrap();
                self.env.stop_worker(&s);
                self.stopped.push(s.clone());
                format!("FAULT sigstop worker of {}", s.share_id)
            }
            FaultKind::WorkerSigcont => {
                // A short hang that ends before the heartbeat timeout: no failure.
                let s = target.unwrap();
                self.env.stop_worker(&s);
                tokio::time::sleep(self.env.settings.heartbeat_timeout / 4).await;
                self.env.cont_worker(&s);
                let older = std::mem::take(&mut self.stopped);
                for share in &older {
                    self.env.cont_worker(share);
                }
                format!("FAULT sigstop+sigcont worker of {}", s.share_id)
            }
            FaultKind::WorkerChildrenKilled => {
                let s = target.unwrap();
                self.env.kill_worker_children(&s);
                format!("FAULT kill children of the worker of {}", s.share_id)
            }
            FaultKind::SessionPanic => {
                let s = target.unwrap();
                fail::cfg("session.handle", "1*panic").unwrap();
                let r = self
                    .env
                    .svc()
                    .extend(
                        s.share_id,
                        Duration::from_secs(1),
                        "human:alice"
                            .parse::<termshare_actors::Principal>()
                            .unwrap(),
                    )
                    .await;
                fail::remove("session.handle");
                if r.is_ok() {
                    self.ack(s.share_id, AuditKind::ShareExtended);
                    if let Some(d) = self.deadlines.get_mut(&s.share_id) {
                        *d += Duration::from_secs(1);
                    }
                }
                format!("FAULT session panic ({}) -> {r:?}", s.share_id)
            }
            FaultKind::WorkerPanic => {
                // The next worker message panics: the rotation asked of the target's
                // worker (or a heartbeat report of another that came first).
                let s = target.unwrap();
                fail::cfg("worker.handle", "1*panic").unwrap();
                let who: termshare_actors::Principal = "human:alice".parse().unwrap();
                let r = self.env.svc().rotate(s.share_id, who).await;
                fail::remove("worker.handle");
                if r.is_ok() {
                    self.ack(s.share_id, AuditKind::ShareRotated);
                }
                format!("FAULT worker actor panic ({}) -> {r:?}", s.share_id)
            }
            FaultKind::StartError => {
                fail::cfg("worker.start", "1*return").unwrap();
                let r = self.op_share().await;
                fail::remove("worker.start");
                format!("FAULT start error: {r}")
            }
            FaultKind::SlowLink => {
                let ms = if self.fake() { 2000 } else { 300 };
                fail::cfg("backend.slow_link", &format!("1*return({ms})")).unwrap();
                let r = self.op_share().await;
                fail::remove("backend.slow_link");
                format!("FAULT slow link: {r}")
            }
            FaultKind::AuditError => {
                fail::cfg("audit.append", "1*return").unwrap();
                let r = self.op_share().await;
                fail::remove("audit.append");
                format!("FAULT audit write fails: {r}")
            }
            FaultKind::GarbageOutput | FaultKind::NoLink | FaultKind::LinkThenExit => {
                let f = match kind {
                    FaultKind::GarbageOutput => StartFault::Garbage,
                    FaultKind::NoLink => StartFault::NoLink,
                    _ => StartFault::LinkThenExit,
                };
                *plan.next_start.lock() = Some(f);
                let r = self.op_share().await;
                plan.next_start.lock().take();
                format!("FAULT {f:?}: {r}")
            }
            FaultKind::ExitDuringRevoke => {
                let s = target.unwrap();
                plan.exit_on_terminate.lock().insert(s.share_id);
                let r = self.op_revoke(Some(s.share_id)).await;
                plan.exit_on_terminate.lock().remove(&s.share_id);
                format!("FAULT exit during revoke: {r}")
            }
            FaultKind::TerminalKilled => {
                let s = target.unwrap();
                let on_it: Vec<ShareId> = self
                    .live()
                    .await
                    .into_iter()
                    .filter(|x| x.terminal == s.terminal)
                    .map(|x| x.share_id)
                    .collect();
                self.env.kill_terminal(&s.terminal, &on_it);
                format!("FAULT host terminal {} killed (and recreated)", s.terminal)
            }
        }
    }
}
