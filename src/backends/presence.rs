//! Joins and leaves from a backend that tells of them in text (tmate's relay notices,
//! upterm's log), as the [`ParticipantEvent`]s a session counts.
//!
//! Such a backend names each participant by address, not by a connection id: the
//! tracker gives each join an id of its own and pairs a leave with the latest join
//! from the same address. Where the backend also says how many are connected now
//! (tmate), the tracker follows that number, so a notice it never got cannot leave the
//! count wrong for long.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use termshare_actors::{ParticipantEvent, PARTICIPANT_EVENTS_QUEUE};
use tokio::sync::mpsc;

/// Participants a tracker keeps by address at once; a backend that says more are
/// connected is believed for the count, not for the list.
const MAX_TRACKED: usize = 1024;

/// Turns a backend's "joined (ADDR)" / "left (ADDR)" into join and leave events.
pub struct PresenceTracker {
    /// Connected now, as (id, address), oldest first.
    connected: Vec<(u64, String)>,
    next_id: u64,
    events: mpsc::Sender<ParticipantEvent>,
    /// The count as last known, for [`PresenceTracker::count`]'s readers; -1: never
    /// told.
    count: Arc<AtomicI64>,
}

/// The worker's side of a tracker: the events, and the count (`None` until the
/// backend has said anything, unless it tells from the start).
pub struct PresenceFeed {
    /// Each join and leave, in order.
    pub events: mpsc::Receiver<ParticipantEvent>,
    /// Participants connected, as last told; -1 until then.
    pub count: Arc<AtomicI64>,
    /// The events start from an empty share.
    pub from_start: bool,
}

impl PresenceFeed {
    /// Participants connected as last told; `None`: never told.
    pub fn count(count: &AtomicI64) -> Option<u32> {
        u32::try_from(count.load(Ordering::Relaxed)).ok()
    }
}

impl PresenceTracker {
    /// A tracker, and the feed its events and count come out of. `from_start`: the
    /// backend tells of every join from the share's start (upterm logs each one), so
    /// the count is 0 until it says otherwise; else it is unknown until it says
    /// anything (tmate's relay may never say).
    pub fn new(from_start: bool) -> (PresenceTracker, PresenceFeed) {
        let (tx, rx) = mpsc::channel(PARTICIPANT_EVENTS_QUEUE);
        let count = Arc::new(AtomicI64::new(if from_start { 0 } else { -1 }));
        let tracker = PresenceTracker {
            connected: Vec::new(),
            next_id: 1,
            events: tx,
            count: count.clone(),
        };
        let feed = PresenceFeed {
            events: rx,
            count,
            from_start,
        };
        (tracker, feed)
    }

    /// A participant from `origin` joined.
    pub fn joined(&mut self, origin: &str) {
        let id = self.next_id;
        self.next_id += 1;
        if self.connected.len() < MAX_TRACKED {
            self.connected.push((id, origin.to_owned()));
        }
        self.send(ParticipantEvent::Joined {
            id,
            origin: origin.to_owned(),
        });
        self.publish();
    }

    /// A participant from `origin` left (the latest one from there; any one, when
    /// none is known from there).
    pub fn left(&mut self, origin: &str) {
        let at = self
            .connected
            .iter()
            .rposition(|(_, o)| o == origin)
            .or_else(|| (!self.connected.is_empty()).then_some(0));
        if let Some(at) = at {
            let (id, _) = self.connected.remove(at);
            self.send(ParticipantEvent::Left { id });
        }
        self.publish();
    }

    /// The backend says `n` are connected now: joins or leaves it did not tell of
    /// (from an unknown address) bring the count there.
    pub fn connected_now(&mut self, n: u32) {
        let n = (n as usize).min(MAX_TRACKED);
        while self.connected.len() < n {
            self.joined("unknown");
        }
        while self.connected.len() > n {
            let (id, _) = self.connected.remove(0);
            self.send(ParticipantEvent::Left { id });
        }
        self.publish();
    }

    fn publish(&self) {
        self.count
            .store(self.connected.len() as i64, Ordering::Relaxed);
    }

    /// Pass `event` on, the count it leaves already published (a reader that has the
    /// event sees the count after it).
    fn send(&self, event: ParticipantEvent) {
        self.publish();
        // The session drains this queue as fast as a relay can announce joins; a
        // full queue means the session is gone or stuck, and its count is moot.
        if let Err(e) = self.events.try_send(event) {
            tracing::warn!(error = %e, "a participant notice could not be passed on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(feed: &mut PresenceFeed) -> Vec<ParticipantEvent> {
        std::iter::from_fn(|| feed.events.try_recv().ok()).collect()
    }

    #[test]
    fn joins_and_leaves_by_address_pair_up_and_the_told_count_wins() {
        let (mut t, mut feed) = PresenceTracker::new(false);
        assert_eq!(PresenceFeed::count(&feed.count), None, "unknown until told");
        t.joined("203.0.113.7");
        t.joined("198.51.100.2");
        t.joined("203.0.113.7");
        t.left("203.0.113.7");
        assert_eq!(PresenceFeed::count(&feed.count), Some(2));
        let events = drain(&mut feed);
        // The leave pairs with the latest join from that address (id 3).
        assert_eq!(events[3], ParticipantEvent::Left { id: 3 });
        // The backend says 0 are left: the two it did not tell of leave too.
        t.connected_now(0);
        assert_eq!(
            drain(&mut feed),
            [
                ParticipantEvent::Left { id: 1 },
                ParticipantEvent::Left { id: 2 }
            ]
        );
        // A leave from nobody known changes nothing.
        t.left("192.0.2.1");
        assert!(drain(&mut feed).is_empty());
        assert_eq!(PresenceFeed::count(&feed.count), Some(0));
    }
}
