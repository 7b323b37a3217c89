//! Who is connected through the front: each participant's websocket (the one
//! tty-share streams the terminal over) counts as one participant, however many
//! plain requests its browser or client makes. Each join and leave is reported to
//! the share's session, and the live count is kept for the worker's stop.
//!
//! Anyone with the link can connect, and every join and leave is an audit line: a
//! link holder reconnecting in a loop could flood the log until admission fails
//! closed for everyone. So joins are rate-limited per share (a burst of
//! [`JOIN_BURST`], then one per [`JOIN_EVERY`]), and refusals are reported at most
//! once per [`REPORT_EVERY`] for each reason, the ones in between as a count
//! (`also`). The audit lines a share can cause are then bounded by time, not by
//! what a participant does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use termshare_actors::{JoinRefusal, ParticipantEvent, PARTICIPANT_EVENTS_QUEUE};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Joins a share lets in at once, before the steady rate applies.
pub const JOIN_BURST: u32 = 16;
/// The steady rate: one more join per this long.
pub const JOIN_EVERY: Duration = Duration::from_secs(2);
/// Refusals for one reason are reported at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The front's side: where joins and leaves go.
pub(super) struct Participants {
    /// At most this many at once; the next is turned away.
    max: Option<u32>,
    next_id: AtomicU64,
    connected: watch::Sender<u32>,
    events: mpsc::Sender<ParticipantEvent>,
    /// The join rate and the refusal reports.
    limiter: parking_lot::Mutex<Limiter>,
}

/// The worker's side: the joins and leaves, and the live count.
pub struct ParticipantFeed {
    /// Each join and leave, in order.
    pub events: mpsc::Receiver<ParticipantEvent>,
    /// Participants connected now.
    pub connected: watch::Receiver<u32>,
}

/// A token bucket for joins, and the refusals not yet reported, by reason.
struct Limiter {
    /// Joins that may come now (up to [`JOIN_BURST`]).
    tokens: u32,
    /// When the last token was added (or the bucket was made).
    refilled: Instant,
    full: Unreported,
    too_fast: Unreported,
}

/// Refusals for one reason since its last report.
#[derive(Default)]
struct Unreported {
    /// When the last report went out.
    reported: Option<Instant>,
    /// Refused since then, and the origin of the latest.
    count: u32,
    origin: String,
    /// A task will report them once [`REPORT_EVERY`] has passed.
    flush_due: bool,
}

impl Limiter {
    fn refill(&mut self, now: Instant) {
        let earned =
            now.saturating_duration_since(self.refilled).as_nanos() / JOIN_EVERY.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(JOIN_BURST);
            self.refilled += JOIN_EVERY * earned.min(JOIN_BURST);
            if self.tokens == JOIN_BURST {
                self.refilled = now;
            }
        }
    }

    fn unreported(&mut self, why: JoinRefusal) -> &mut Unreported {
        match why {
            JoinRefusal::Full => &mut self.full,
            JoinRefusal::TooFast => &mut self.too_fast,
        }
    }
}

impl Participants {
    pub(super) fn new(max: Option<u32>) -> (Arc<Participants>, ParticipantFeed) {
        let (events_tx, events) = mpsc::channel(PARTICIPANT_EVENTS_QUEUE);
        let (connected_tx, connected) = watch::channel(0);
        let front = Arc::new(Participants {
            max,
            next_id: AtomicU64::new(1),
            connected: connected_tx,
            events: events_tx,
            limiter: parking_lot::Mutex::new(Limiter {
                tokens: JOIN_BURST,
                refilled: Instant::now(),
                full: Unreported::default(),
                too_fast: Unreported::default(),
            }),
        });
        (front, ParticipantFeed { events, connected })
    }

    /// A participant's terminal connection is up: it counts until the returned guard is
    /// dropped. `None` when it is turned away: past `max`, joining too fast, or when its
    /// join cannot be reported (the session's queue is full or gone: nobody would know
    /// they are there).
    pub(super) fn join(self: &Arc<Self>, origin: String) -> Option<Joined> {
        let now = Instant::now();
        let mut limiter = self.limiter.lock();
        limiter.refill(now);
        // Counted and checked under one lock: two racing joins cannot both pass.
        let mut refusal = None;
        self.connected.send_if_modified(|n| {
            if self.max.is_some_and(|max| *n >= max) {
                refusal = Some(JoinRefusal::Full);
            } else if limiter.tokens == 0 {
                refusal = Some(JoinRefusal::TooFast);
            } else {
                limiter.tokens -= 1;
                *n += 1;
            }
            refusal.is_none()
        });
        if let Some(why) = refusal {
            self.refused(&mut limiter, now, why, origin);
            return None;
        }
        drop(limiter);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if self
            .events
            .try_send(ParticipantEvent::Joined { id, origin })
            .is_err()
        {
            self.connected.send_modify(|n| *n -= 1);
            return None;
        }
        Some(Joined {
            id,
            participants: self.clone(),
        })
    }

    /// Report a refusal now if none for `why` went out within [`REPORT_EVERY`];
    /// otherwise count it, for one report when that time is up.
    fn refused(
        self: &Arc<Self>,
        limiter: &mut Limiter,
        now: Instant,
        why: JoinRefusal,
        origin: String,
    ) {
        let pending = limiter.unreported(why);
        let quiet = pending
            .reported
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if quiet && !pending.flush_due {
            pending.reported = Some(now);
            let _ = self.events.try_send(ParticipantEvent::Refused {
                origin,
                why,
                also: 0,
            });
            return;
        }
        pending.count = pending.count.saturating_add(1);
        pending.origin = origin;
        if pending.flush_due {
            return;
        }
        pending.flush_due = true;
        let due = pending.reported.map_or(now, |at| at + REPORT_EVERY);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let report = {
                let mut limiter = me.limiter.lock();
                let pending = limiter.unreported(why);
                pending.flush_due = false;
                pending.reported = Some(Instant::now());
                let count = std::mem::take(&mut pending.count);
                (count > 0).then(|| ParticipantEvent::Refused {
                    origin: std::mem::take(&mut pending.origin),
                    why,
                    also: count - 1,
                })
            };
            if let Some(report) = report {
                // Never dropped for a full queue: wait for room.
                let _ = me.events.send(report).await;
            }
        });
    }
}

/// One connected participant; dropping it reports the leave.
pub(super) struct Joined {
    id: u64,
    participants: Arc<Participants>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let p = &self.participants;
        p.connected.send_modify(|n| *n = n.saturating_sub(1));
        let leave = ParticipantEvent::Left { id: self.id };
        if let Err(mpsc::error::TrySendError::Full(leave)) = p.events.try_send(leave) {
            // A leave is never dropped: wait for room, off this (ending) task.
            let events = p.events.clone();
            tokio::spawn(async move {
                let _ = events.send(leave).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event queued now.
    fn drain(feed: &mut ParticipantFeed) -> Vec<ParticipantEvent> {
        std::iter::from_fn(|| feed.events.try_recv().ok()).collect()
    }

    fn refusals(events: &[ParticipantEvent]) -> Vec<(JoinRefusal, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                ParticipantEvent::Refused { why, also, .. } => Some((*why, *also)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_loop_gets_a_burst_then_the_steady_rate_and_few_reports() {
        let (front, mut feed) = Participants::new(None);
        let mut admitted = 0;
        // 1,000 connections in one instant, each gone at once.
        for i in 0..1000 {
            if let Some(joined) = front.join(format!("127.0.0.1:{i}")) {
                admitted += 1;
                drop(joined);
            }
        }
        assert_eq!(admitted, JOIN_BURST);
        let events = drain(&mut feed);
        let joins = events
            .iter()
            .filter(|e| matches!(e, ParticipantEvent::Joined { .. }))
            .count();
        assert_eq!(joins, JOIN_BURST as usize);
        // One refusal reported at once; the rest wait for one summary.
        assert_eq!(refusals(&events), [(JoinRefusal::TooFast, 0)]);
        tokio::time::sleep(REPORT_EVERY).await;
        tokio::task::yield_now().await;
        let later = drain(&mut feed);
        let left = 1000 - JOIN_BURST - 1;
        assert_eq!(refusals(&later), [(JoinRefusal::TooFast, left - 1)]);
        // Then one join per JOIN_EVERY.
        tokio::time::sleep(JOIN_EVERY).await;
        assert!(front.join("again".into()).is_some());
        assert!(front.join("and again".into()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_participant_past_the_limit_is_refused_and_each_reason_is_reported_apart() {
        let (front, mut feed) = Participants::new(Some(1));
        let first = front.join("a".into()).expect("the first is in");
        for _ in 0..5 {
            assert!(front.join("b".into()).is_none());
        }
        let events = drain(&mut feed);
        assert_eq!(refusals(&events), [(JoinRefusal::Full, 0)]);
        assert_eq!(*feed.connected.borrow(), 1);
        tokio::time::sleep(REPORT_EVERY).await;
        tokio::task::yield_now().await;
        assert_eq!(refusals(&drain(&mut feed)), [(JoinRefusal::Full, 3)]);
        drop(first);
        assert_eq!(*feed.connected.borrow(), 0);
        // A quiet second later, a refusal is reported at once again.
        tokio::time::sleep(REPORT_EVERY).await;
        let again = front.join("c".into()).expect("room again");
        assert!(front.join("d".into()).is_none());
        let events = drain(&mut feed);
        assert_eq!(refusals(&events), [(JoinRefusal::Full, 0)]);
        drop(again);
    }
}
