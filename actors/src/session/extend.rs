//! Extensions: on the record first, in order, one at a time.
//!
//! An extension happens only once its `share.extended` event is kept: the event is
//! sent, and the extension applied when the writer confirms it, off the mailbox. One
//! is in flight at a time; others wait their turn (bounded), each judged against the
//! deadline the previous one left. An expiry tick that comes while one is in flight
//! waits for it: if the extension lands, the tick is stale. A share that ends first
//! withdraws the extension's event if the writer has not taken it yet, so a refused
//! extension never appears in the log.

use std::collections::VecDeque;
use std::time::Duration;

use ractor::ActorRef;
use tokio::time::Instant;

use super::{Phase, SessionMsg, SessionState, ShareReply};
use crate::audit::{self, record, AuditKind, Withdrawal};
use crate::caller::Caller;
use crate::error::{human, InvalidInput, ShareError};
use crate::types::ShareState;

/// Extensions waiting behind the one in flight; more are refused.
const MAX_WAITING: usize = 64;

/// An extension asked for and not yet settled.
pub struct PendingExtension {
    by: Duration,
    max_ttl: Option<Duration>,
    caller: Caller,
    reply: ShareReply,
}

/// The one being recorded: what it will set, and how to withdraw its event.
struct InFlight {
    ext: PendingExtension,
    new_deadline: Instant,
    withdrawal: Withdrawal,
}

#[derive(Default)]
pub(super) struct Extensions {
    in_flight: Option<InFlight>,
    waiting: VecDeque<PendingExtension>,
    /// An expiry tick (its generation) that came while one was in flight.
    deferred_expiry: Option<u64>,
}

impl Extensions {
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub(super) fn defer_expiry(&mut self, generation: u64) {
        self.deferred_expiry = Some(generation);
    }

    /// The share ended: every extension still waiting is refused with `error`, and the
    /// one in flight too unless its record was already being written (then it did
    /// happen, before the end, and its caller hears so).
    pub(super) fn refuse_all(&mut self, error: &ShareError) -> Option<(ShareReply, Duration)> {
        for ext in self.waiting.drain(..) {
            let _ = ext.reply.send(Err(error.clone()));
        }
        let flight = self.in_flight.take()?;
        if flight.withdrawal.withdraw() {
            let _ = flight.ext.reply.send(Err(error.clone()));
            None
        } else {
            Some((flight.ext.reply, flight.ext.by))
        }
    }
}

impl SessionState {
    pub(super) fn extend(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        by: Duration,
        max_ttl: Option<Duration>,
        caller: Caller,
        reply: ShareReply,
    ) {
        let ext = PendingExtension {
            by,
            max_ttl,
            caller,
            reply,
        };
        if self.extensions.in_flight() {
            if self.extensions.waiting.len() >= MAX_WAITING {
                let err = InvalidInput::new(
                    "extension",
                    &self.id().to_string(),
                    "too many extensions of this share are waiting; try again",
                );
                let _ = ext.reply.send(Err(err.into()));
            } else {
                self.extensions.waiting.push_back(ext);
            }
            return;
        }
        self.start_extension(myself, ext);
    }

    /// Judge `ext` against the share as it is now; if it may happen, send its event.
    fn start_extension(&mut self, myself: &ActorRef<SessionMsg>, ext: PendingExtension) {
        let refusal = match self.phase {
            Phase::Ended => Some(match self.ended.get() {
                Some(reason) => ShareError::ShareEnded(self.id(), reason.clone()),
                None => ShareError::ShareEnding(self.id()),
            }),
            // Mid-switch, which rule bounds the share is not settled yet: extend after.
            Phase::Switching(_) => Some(
                InvalidInput::new(
                    "extension",
                    &self.id().to_string(),
                    "the share is switching backends; extend it once the switch is done",
                )
                .into(),
            ),
            _ if ext.by.is_zero() || ext.by > crate::settings::MAX_DURATION => Some(
                InvalidInput::new(
                    "extension",
                    &human(ext.by),
                    "must be positive and at most a year",
                )
                .into(),
            ),
            _ => None,
        };
        if let Some(err) = refusal {
            let _ = ext.reply.send(Err(err));
            return;
        }
        let new_deadline = self.deadline + ext.by;
        let total = new_deadline - self.started;
        if let Some(max) = ext.max_ttl.filter(|max| total > *max) {
            let err = ShareError::ExtendAboveMax {
                share_id: self.id(),
                by: human(ext.by),
                total: human(total),
                max: human(max),
            };
            record(
                &self.ctx.audit,
                self.event(AuditKind::ShareRefused)
                    .by(&ext.caller)
                    .detail("action", "extend")
                    .detail("by_ms", ext.by.as_millis() as u64)
                    .detail("reason", err.to_string()),
            );
            let _ = ext.reply.send(Err(err));
            return;
        }
        // On the record first: an extension the log cannot keep does not happen.
        let event = self
            .event(AuditKind::ShareExtended)
            .by(&ext.caller)
            .detail("by_ms", ext.by.as_millis() as u64)
            .detail(
                "expires_at",
                humantime::format_rfc3339_millis(self.info.expires_at + ext.by).to_string(),
            );
        let ack = audit::send(&self.ctx.audit, event);
        let withdrawal = ack.withdrawal();
        let (timeout, me) = (self.ctx.settings.audit_timeout, myself.clone());
        self.run(async move {
            let result = ack.wait(timeout).await;
            let _ = me.cast(SessionMsg::ExtendRecorded(result));
        });
        self.extensions.in_flight = Some(InFlight {
            ext,
            new_deadline,
            withdrawal,
        });
    }

    pub(super) async fn extend_recorded(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: Result<(), String>,
    ) {
        let Some(flight) = self.extensions.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.deadline = flight.new_deadline;
                self.max_ttl = flight.ext.max_ttl;
                self.info.expires_at += flight.ext.by;
                if self.info.state == ShareState::Expiring {
                    self.info.state = ShareState::Active;
                }
                self.arm_ttl();
                self.publish();
                let _ = flight.ext.reply.send(Ok(self.info.clone()));
            }
            Err(e) => {
                let _ = flight.ext.reply.send(Err(ShareError::AuditUnavailable(e)));
            }
        }
        // An expiry that waited for this one: still due unless the deadline moved.
        if let Some(generation) = self.extensions.deferred_expiry.take() {
            self.expired(myself, generation).await;
            if matches!(self.phase, Phase::Ended) {
                return;
            }
        }
        if let Some(next) = self.extensions.waiting.pop_front() {
            self.start_extension(myself, next);
        }
    }
}
