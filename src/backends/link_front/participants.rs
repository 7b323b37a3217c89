//! Who is connected through the front: each participant's websocket (the one
//! tty-share streams the terminal over) counts as one participant, however many
//! plain requests its browser or client makes. Each join and leave is reported to
//! the share's session, and the live count is kept for the worker's stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use termshare_actors::{ParticipantEvent, PARTICIPANT_EVENTS_QUEUE};
use tokio::sync::{mpsc, watch};

/// The front's side: where joins and leaves go.
pub(super) struct Participants {
    /// At most this many at once; the next is turned away.
    max: Option<u32>,
    next_id: AtomicU64,
    connected: watch::Sender<u32>,
    events: mpsc::Sender<ParticipantEvent>,
}

/// The worker's side: the joins and leaves, and the live count.
pub struct ParticipantFeed {
    /// Each join and leave, in order.
    pub events: mpsc::Receiver<ParticipantEvent>,
    /// Participants connected now.
    pub connected: watch::Receiver<u32>,
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
        });
        (front, ParticipantFeed { events, connected })
    }

    /// A participant's terminal connection is up: it counts until the returned guard is
    /// dropped. `None` when its join cannot be reported (the session's queue is full or
    /// gone): then the participant is not let in, as nobody would know they are there.
    /// Past `max`, the participant is turned away, and that is reported instead.
    pub(super) fn join(self: &Arc<Self>, origin: String) -> Option<Joined> {
        // Counted and checked in one step: two racing joins cannot both pass the limit.
        let mut admitted = false;
        self.connected.send_if_modified(|n| {
            admitted = self.max.is_none_or(|max| *n < max);
            if admitted {
                *n += 1;
            }
            admitted
        });
        if !admitted {
            let _ = self.events.try_send(ParticipantEvent::Refused { origin });
            return None;
        }
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
