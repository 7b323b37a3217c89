//! Each share's own events, for its owner: [`crate::ShareService::events`].
//!
//! The audit broadcast (`subscribe()`) is for display: a slow reader misses events.
//! An owner that drives a share needs every step of *its* share, typed. So the audit
//! writer, once a batch is on the record, also hands each share event to that share's
//! feed: a history kept while the share lives (a late subscriber gets it replayed), and
//! a bounded channel per subscriber. What an owner sees is exactly what was recorded,
//! in record order. The feed ends with the share's end event, then is forgotten
//! (`ended()` still answers how it ended).
//!
//! Bounds: a feed exists only from `share.started` to the share's end, at most
//! [`MAX_FEEDS`] at once; each keeps [`HISTORY`] events (its `share.started` and the
//! latest ones; a late subscriber is told how many were left out between them,
//! [`ShareEventsError::Skipped`]); each subscriber's queue holds [`HISTORY`] +
//! [`QUEUE_SLACK`] events, and a subscriber that falls that far behind is cut off and
//! told so ([`ShareEventsError::Lagged`]), never silently skipped. At most
//! [`MAX_SUBSCRIBERS`] subscribers per share.
//!
//! A feed never outlives its share's end, even when that end never reaches the
//! record: the writer hands every batch the sink refused back here
//! ([`ShareFeeds::unrecorded`]), and a lost end closes the feed with
//! [`ShareEventsError::EndNotRecorded`]; a writer that stops closes every feed
//! ([`ShareEventsError::AuditStopped`]). No subscriber waits for an end that will not
//! come.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{AuditEvent, AuditKind};
use crate::types::{BackendName, EndReason, ShareId};

/// Shares with a feed at once (live shares are fewer: `max_live_shares`).
pub const MAX_FEEDS: usize = 65_536;
/// Events a feed keeps for late subscribers: the `share.started` and the latest ones.
pub const HISTORY: usize = 256;
/// Room in a subscriber's queue beyond a full history replay.
pub const QUEUE_SLACK: usize = 64;
/// A subscriber's queue: a whole history replay, and room beyond it.
pub const FEED_QUEUE: usize = HISTORY + QUEUE_SLACK;
/// Subscribers to one share's events at once.
pub const MAX_SUBSCRIBERS: usize = 16;

/// One step in a share's life, as it went on the record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareEvent {
    /// The share is live, over this backend (`share.started`).
    Started {
        /// The backend serving it.
        backend: BackendName,
    },
    /// Its end is near: a grace warning was shown on the terminal (`share.grace_warning`).
    GraceWarning,
    /// Its TTL was extended (`share.extended`); `list()` has the new expiry.
    Extended,
    /// It moved to another backend, with new links (`share.switched`).
    Switched {
        /// The backend serving it now.
        to: BackendName,
    },
    /// A switch failed; the share stays on its backend (`share.switch_failed`).
    SwitchFailed,
    /// The backend gave it new links while it ran (`share.relinked`).
    Relinked,
    /// An action on it was refused; it is unchanged (`share.refused`).
    Refused,
    /// A participant joined (`share.joined`); the record has its id and origin
    /// fingerprint, and `list()` the count.
    Joined,
    /// A participant left or was cut off (`share.left`).
    Left,
    /// A participant was turned away at the limit (`share.join_refused`).
    JoinRefused,
    /// It got a new link; everyone on the old one was cut off (`share.rotated`).
    Rotated,
    /// It ended, and how (`share.revoked`, `.expired`, `.stopped`, `.failed`). The last
    /// event of every feed.
    Ended(EndReason),
}

/// A [`ShareEvent`] with the audit record it was read from (its `seq`, time, who
/// asked and every detail).
#[derive(Clone, Debug)]
pub struct ShareUpdate {
    /// What happened.
    pub event: ShareEvent,
    /// The line in the audit log that says so.
    pub record: AuditEvent,
}

/// Why a share's event stream cannot be had, or stopped early.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ShareEventsError {
    /// The share is not live (never started here, or already ended: see `ended()`).
    #[error("share {0} is not live")]
    NotLive(ShareId),
    /// The share already has [`MAX_SUBSCRIBERS`] subscribers.
    #[error("share {0} already has {MAX_SUBSCRIBERS} subscribers")]
    TooManySubscribers(ShareId),
    /// This subscriber fell more than its queue behind and was cut off; the audit log
    /// has every event.
    #[error("fell more than {FEED_QUEUE} events behind and was cut off")]
    Lagged,
    /// Not an end: the replay for a late subscriber left out this many events between
    /// `share.started` and the latest [`HISTORY`] (the audit log has them); the
    /// stream goes on.
    #[error("{0} earlier events were left out of the replay (the audit log has them)")]
    Skipped(u64),
    /// The share ended, but the audit log could not keep its end event; the stream
    /// ends here (`ended()` says how the share ended).
    #[error("the share ended ({0}), but its end could not be recorded")]
    EndNotRecorded(EndReason),
    /// The audit writer stopped: no event will be recorded, or come, any more.
    #[error("the audit log stopped; no more events will come")]
    AuditStopped,
}

/// What a subscriber's queue carries: a recorded update, or the replay's gap marker.
type Item = Result<ShareUpdate, ShareEventsError>;

/// One subscriber's stream of one share's events, ending with [`ShareEvent::Ended`]
/// (or with the error that says why no end will come).
pub struct ShareEvents {
    rx: mpsc::Receiver<Item>,
    /// Why the feed closed this stream early, set before its sender is dropped.
    closed: Arc<parking_lot::Mutex<Option<ShareEventsError>>>,
}

impl ShareEvents {
    /// The next event; `None` once the share's end has been received. An `Err` ends
    /// the stream, except [`ShareEventsError::Skipped`], which only marks a gap in
    /// the replay.
    pub async fn next(&mut self) -> Option<Result<ShareUpdate, ShareEventsError>> {
        match self.rx.recv().await {
            Some(item) => Some(item),
            None => self.closed.lock().take().map(Err),
        }
    }
}

struct Subscriber {
    tx: mpsc::Sender<Item>,
    closed: Arc<parking_lot::Mutex<Option<ShareEventsError>>>,
}

impl Subscriber {
    /// End this subscriber's stream with `why` (its queue is dropped with `self`).
    fn close(self, why: ShareEventsError) {
        *self.closed.lock() = Some(why);
    }
}

#[derive(Default)]
struct Feed {
    history: VecDeque<ShareUpdate>,
    /// Events dropped from `history` (between `share.started` and the rest).
    skipped: u64,
    subscribers: Vec<Subscriber>,
}

impl Feed {
    /// Close every subscriber's stream with `why`.
    fn close(self, why: ShareEventsError) {
        for s in self.subscribers {
            s.close(why.clone());
        }
    }
}

/// Every live share's feed. Written by the audit writer only.
#[derive(Default)]
pub(crate) struct ShareFeeds {
    feeds: parking_lot::Mutex<HashMap<Uuid, Feed>>,
}

impl ShareFeeds {
    /// Hand a recorded event to its share's feed (if it is a share event).
    pub(crate) fn publish(&self, record: &AuditEvent) {
        let Some(event) = share_event(record) else {
            return;
        };
        let id = record.correlation_id;
        let mut feeds = self.feeds.lock();
        if matches!(event, ShareEvent::Started { .. }) && feeds.len() < MAX_FEEDS {
            feeds.entry(id).or_default();
        }
        let ended = matches!(event, ShareEvent::Ended(_));
        let Some(feed) = feeds.get_mut(&id) else {
            return;
        };
        let update = ShareUpdate {
            event,
            record: record.clone(),
        };
        let mut kept = Vec::with_capacity(feed.subscribers.len());
        for s in feed.subscribers.drain(..) {
            match s.tx.try_send(Ok(update.clone())) {
                Ok(()) => kept.push(s),
                Err(mpsc::error::TrySendError::Full(_)) => s.close(ShareEventsError::Lagged),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        feed.subscribers = kept;
        if ended {
            feeds.remove(&id);
            return;
        }
        if feed.history.len() >= HISTORY {
            feed.history.remove(1); // keep `share.started`, drop the oldest after it
            feed.skipped += 1;
        }
        feed.history.push_back(update);
    }

    /// The sink refused these records: a share end among them will never be
    /// published, so its feed closes now with [`ShareEventsError::EndNotRecorded`].
    /// Other lost records are simply not in the stream, as they are not in the log.
    pub(crate) fn unrecorded(&self, records: &[AuditEvent]) {
        let mut feeds = self.feeds.lock();
        for record in records {
            if let Some(ShareEvent::Ended(reason)) = share_event(record) {
                if let Some(feed) = feeds.remove(&record.correlation_id) {
                    feed.close(ShareEventsError::EndNotRecorded(reason));
                }
            }
        }
    }

    /// The writer stopped: every stream ends with [`ShareEventsError::AuditStopped`],
    /// and no feed is opened any more.
    pub(crate) fn close_all(&self) {
        let mut feeds = self.feeds.lock();
        for (_, feed) in feeds.drain() {
            feed.close(ShareEventsError::AuditStopped);
        }
    }

    /// A stream of the share's events: its history so far, then each as recorded.
    pub(crate) fn subscribe(&self, id: ShareId) -> Result<ShareEvents, ShareEventsError> {
        let mut feeds = self.feeds.lock();
        let feed = feeds.get_mut(&id.0).ok_or(ShareEventsError::NotLive(id))?;
        feed.subscribers.retain(|s| !s.tx.is_closed());
        if feed.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(ShareEventsError::TooManySubscribers(id));
        }
        // Room for a whole history and its gap marker, and the slack.
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        for (i, update) in feed.history.iter().enumerate() {
            // Cannot fail: the queue holds a whole history and the marker.
            let _ = tx.try_send(Ok(update.clone()));
            if i == 0 && feed.skipped > 0 {
                let _ = tx.try_send(Err(ShareEventsError::Skipped(feed.skipped)));
            }
        }
        let closed = Arc::new(parking_lot::Mutex::new(None));
        feed.subscribers.push(Subscriber {
            tx,
            closed: closed.clone(),
        });
        Ok(ShareEvents { rx, closed })
    }
}

/// The typed step an audit record of a share stands for; `None` for records that are
/// not a live share's (requests, denials, handoffs, the service's own).
fn share_event(record: &AuditEvent) -> Option<ShareEvent> {
    let backend = || record.backend.clone().unwrap_or(BackendName::new(""));
    Some(match record.kind {
        AuditKind::ShareStarted => ShareEvent::Started { backend: backend() },
        AuditKind::ShareGraceWarning => ShareEvent::GraceWarning,
        AuditKind::ShareExtended => ShareEvent::Extended,
        AuditKind::ShareSwitched => ShareEvent::Switched {
            to: match record.details.get("to").and_then(|t| t.as_str()) {
                Some(to) => BackendName::new(to),
                None => backend(),
            },
        },
        AuditKind::ShareSwitchFailed => ShareEvent::SwitchFailed,
        AuditKind::ShareRelinked => ShareEvent::Relinked,
        AuditKind::ShareRefused => ShareEvent::Refused,
        AuditKind::ShareJoined => ShareEvent::Joined,
        AuditKind::ShareLeft => ShareEvent::Left,
        AuditKind::ShareJoinRefused => ShareEvent::JoinRefused,
        AuditKind::ShareRotated => ShareEvent::Rotated,
        AuditKind::ShareRevoked => ShareEvent::Ended(EndReason::Revoked),
        AuditKind::ShareExpired => ShareEvent::Ended(EndReason::Expired),
        AuditKind::ShareStopped => ShareEvent::Ended(EndReason::Stopped),
        AuditKind::ShareFailed => ShareEvent::Ended(failure(record)),
        AuditKind::ShareEnded => ShareEvent::Ended(EndReason::Stopped),
        _ => return None,
    })
}

/// A `share.failed` record's reason: the terminal went away, or the cause it names.
fn failure(record: &AuditEvent) -> EndReason {
    let cause = record.details.get("cause").and_then(|c| c.as_str());
    match cause {
        Some("terminal closed") => EndReason::TerminalClosed,
        Some(cause) => EndReason::Failed(cause.to_owned()),
        None => EndReason::Failed(String::new()),
    }
}
