//! A revoke kept waiting is reported as such: its deadline counts from the request,
//! so a share session busy for 6 s makes the revoke miss it, and the report says so.
//! (A test binary of its own: the fail point it sets is global to the process.)

mod common;

use std::time::Duration;

use common::*;
use termshare_actors::{AuditKind, Settings, ShareError};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_revoke_behind_a_6s_stall_reports_its_deadline_missed() {
    let scenario = fail::FailScenario::setup();
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    // From now on the session takes 6 s over every message.
    fail::cfg("session.stall", "return(6000)").unwrap();
    let asked = Instant::now();
    let err = h
        .svc
        .revoke(info.share_id, p("human:alice"))
        .await
        .unwrap_err();
    fail::remove("session.stall");
    let ShareError::RevokeDeadlineMissed(report) = err else {
        panic!("{err}");
    };
    assert!(!report.deadline_met);
    assert!(report.elapsed >= Duration::from_secs(6), "{report:?}");
    assert!(report.elapsed <= asked.elapsed(), "{report:?}");
    let revoked = h
        .audit
        .events
        .lock()
        .iter()
        .find(|e| e.kind == AuditKind::ShareRevoked)
        .cloned()
        .unwrap();
    assert_eq!(revoked.details["deadline_met"], false);
    assert_eq!(h.world.live_count(), 0);
    h.svc.shutdown().await;
    scenario.teardown();
}
