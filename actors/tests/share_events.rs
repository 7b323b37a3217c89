//! A share's own typed events for its owner (`ShareService::events`), under tokio's
//! paused clock: every step in record order, a history for a late subscriber, and a
//! reader that falls behind cut off and told so, never skipped silently.

mod common;

use std::time::Duration;

use common::*;
use termshare_actors::audit::MemorySink;
use termshare_actors::{
    AuditKind, BackendName, EndReason, Settings, ShareEvent, ShareEvents, ShareEventsError, ShareId,
};

/// Every update until the stream ends (or an error), with the records' sequence numbers.
async fn drain(events: &mut ShareEvents) -> (Vec<ShareEvent>, Vec<u64>, Option<ShareEventsError>) {
    let (mut seen, mut seqs) = (Vec::new(), Vec::new());
    while let Some(next) = events.next().await {
        match next {
            Ok(update) => {
                seen.push(update.event);
                seqs.push(update.record.seq);
            }
            Err(e) => return (seen, seqs, Some(e)),
        }
    }
    (seen, seqs, None)
}

/// The sequence numbers of the share's lifecycle records in the audit log.
fn recorded_seqs(audit: &MemorySink, id: ShareId) -> Vec<u64> {
    audit
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == id.0)
        .filter(|e| !matches!(e.kind, AuditKind::ShareRequested))
        .map(|e| e.seq)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_owner_hears_every_step_of_its_share_typed_and_in_record_order() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.grace = Some(vec![Duration::from_secs(30)]);
    let info = h.svc.share(r).await.unwrap();
    let mut events = h.svc.events(info.share_id).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.svc
        .extend(info.share_id, Duration::from_secs(30), p("human:alice"))
        .await
        .unwrap();
    h.svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await
        .unwrap();
    // Nothing more is done: the share warns at 60 s and expires at 90 s.
    let (seen, seqs, error) = drain(&mut events).await;
    assert_eq!(error, None);
    assert_eq!(
        seen,
        [
            ShareEvent::Started {
                backend: BackendName::new("fake")
            },
            ShareEvent::Extended,
            ShareEvent::Switched {
                to: BackendName::new("fake-b")
            },
            ShareEvent::GraceWarning,
            ShareEvent::Ended(EndReason::Expired),
        ]
    );
    // Exactly the records the audit log holds for it, in its order.
    assert_eq!(seqs, recorded_seqs(&h.audit, info.share_id));
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_gets_the_history_and_an_ended_share_has_none() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    h.svc
        .extend(info.share_id, Duration::from_secs(30), p("human:alice"))
        .await
        .unwrap();
    // Subscribed after both: both are replayed, then what follows.
    let mut late = h.svc.events(info.share_id).unwrap();
    let mut more: Vec<_> = (0..15)
        .map(|_| h.svc.events(info.share_id).unwrap())
        .collect();
    assert_eq!(
        h.svc.events(info.share_id).err(),
        Some(ShareEventsError::TooManySubscribers(info.share_id)),
        "a 17th subscriber"
    );
    more.clear(); // dropped subscribers free their places
    assert!(h.svc.events(info.share_id).is_ok());
    h.svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    let (seen, _, error) = drain(&mut late).await;
    assert_eq!(error, None);
    assert_eq!(
        seen,
        [
            ShareEvent::Started {
                backend: BackendName::new("fake")
            },
            ShareEvent::Extended,
            ShareEvent::Ended(EndReason::Revoked),
        ]
    );
    assert_eq!(
        h.svc.events(info.share_id).err(),
        Some(ShareEventsError::NotLive(info.share_id))
    );
    assert_eq!(
        h.svc.ended(info.share_id).await.unwrap().reason,
        EndReason::Revoked
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_falls_a_whole_queue_behind_is_cut_off_and_told_so() {
    let mut policy = allow();
    policy.max_ttl = Some(Duration::from_secs(120));
    let h = harness(policy, Settings::default()).await;
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(60));
    let info = h.svc.share(r).await.unwrap();
    let mut idle = h.svc.events(info.share_id).unwrap();
    // Each extension past max_ttl is refused, and on the record as share.refused.
    let mut recorded = h.svc.subscribe();
    let n = termshare_actors::audit::FEED_QUEUE + 5;
    for _ in 0..n {
        let refused = h
            .svc
            .extend(info.share_id, Duration::from_secs(3600), p("human:alice"))
            .await;
        assert!(refused.is_err());
    }
    // The refusals are answered before they are written, and the writer hands each
    // event to the share's feed after the sink has it and just before the audit
    // subscribers get it: read once the last refusal has reached a subscriber.
    let last_refusal = || {
        let events = h.audit.events.lock();
        let refused: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == AuditKind::ShareRefused)
            .map(|e| e.seq)
            .collect();
        (refused.len() == n)
            .then(|| refused.into_iter().max())
            .flatten()
    };
    let mut newest_seen = None;
    // Bounded (of the paused clock): a refusal that never reaches the record fails
    // the test rather than hanging it.
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            match recorded.recv().await {
                Ok(e) => newest_seen = newest_seen.max(Some(e.seq)),
                // Fell behind: only the oldest were skipped, the newest are still queued.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    panic!("the audit writer stopped")
                }
            }
            if let (Some(last), Some(seen)) = (last_refusal(), newest_seen) {
                if seen >= last {
                    break;
                }
            }
        }
    })
    .await
    .expect("every refusal reaches the record and the subscribers");
    let (seen, _, error) = drain(&mut idle).await;
    assert_eq!(error, Some(ShareEventsError::Lagged));
    assert_eq!(seen.len(), termshare_actors::audit::FEED_QUEUE);
    assert_eq!(
        seen[0],
        ShareEvent::Started {
            backend: BackendName::new("fake")
        }
    );
    assert!(seen[1..].iter().all(|e| *e == ShareEvent::Refused));
    // The share itself is untouched, and a new subscriber is welcome.
    assert_eq!(h.svc.list().await.unwrap().len(), 1);
    assert!(h.svc.events(info.share_id).is_ok());
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_is_told_how_many_events_the_replay_left_out() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.backend = BackendName::new("fake-counting");
    let info = h.svc.share(r).await.unwrap();
    let mut early = h.svc.events(info.share_id).unwrap();
    // 300 joins: more than a history holds (fewer than a queue: `early` keeps up).
    let joins = 300u64;
    early.next().await.unwrap().unwrap(); // share.started
    for batch in 0..3 {
        // In batches the worker's queue of participant events holds.
        for id in batch * 100..(batch + 1) * 100 {
            assert!(h.world.participant(info.share_id, id, true));
        }
        for _ in 0..100 {
            let joined = early.next().await.unwrap().unwrap();
            assert_eq!(joined.event, ShareEvent::Joined);
        }
    }
    let mut late = h.svc.events(info.share_id).unwrap();
    let history = termshare_actors::audit::HISTORY as u64;
    // share.started, the marker, then the latest HISTORY - 1 joins.
    let first = late.next().await.unwrap().unwrap();
    assert!(matches!(first.event, ShareEvent::Started { .. }));
    assert_eq!(
        late.next().await.unwrap().err(),
        Some(ShareEventsError::Skipped(joins - (history - 1))),
    );
    let mut replayed = Vec::new();
    for _ in 0..history - 1 {
        let update = late.next().await.unwrap().unwrap();
        assert_eq!(update.event, ShareEvent::Joined);
        replayed.push(update.record.details["participant"].as_u64().unwrap());
    }
    assert_eq!(replayed, (joins - (history - 1)..joins).collect::<Vec<_>>());
    // The marker does not end the stream: the next event comes as it is recorded.
    assert!(h.world.participant(info.share_id, 7, false));
    let left = late.next().await.unwrap().unwrap();
    assert_eq!(left.event, ShareEvent::Left);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_end_the_log_could_not_keep_still_ends_every_stream_and_frees_the_feed() {
    let sink = termshare_actors::testing::FlakySink::default();
    let h = harness_with_sink(
        allow(),
        Settings::default(),
        Box::new(sink.clone()),
        Default::default(),
    )
    .await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let mut events = h.svc.events(info.share_id).unwrap();
    // The disk fills: the revoke's end event cannot be kept.
    sink.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let revoked = h.svc.revoke(info.share_id, p("human:alice")).await;
    assert!(revoked.is_err(), "the end was not kept: {revoked:?}");
    let (seen, _, error) = drain(&mut events).await;
    assert_eq!(
        seen,
        [ShareEvent::Started {
            backend: BackendName::new("fake")
        }]
    );
    assert_eq!(
        error,
        Some(ShareEventsError::EndNotRecorded(EndReason::Revoked))
    );
    // The feed is gone with the share, not kept for an end that will never come.
    assert_eq!(
        h.svc.events(info.share_id).err(),
        Some(ShareEventsError::NotLive(info.share_id))
    );
    assert_eq!(
        h.svc.ended(info.share_id).await.unwrap().reason,
        EndReason::Revoked
    );
    h.svc.shutdown().await;
}
