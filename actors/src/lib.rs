#![warn(missing_docs)]
//! termshare's supervision tree, over traits.
//!
//! ```text
//! RootSupervisor                 share table, admission (policy, TTL bound, limits)
//!  ├── AuditActor                (spawned beside the root) every lifecycle event
//!  └── ShareSession × N          one per share, the single writer of its state
//!        ├── BackendWorker       owns one worker; reports link, exit; stops it
//!        └── TtlTimer            grace warnings and expiry, by generation
//! ```
//!
//! This crate starts no OS process: the real world comes in through its traits
//! ([`Backend`], [`Worker`], [`TerminalHost`], [`PolicyGate`], [`AuditSink`]), which
//! the `termshare` crate implements over tmux, tty-share, tmate and upterm. That keeps
//! every timer here testable under tokio's paused clock.
//!
//! A runtime usually holds `termshare::Termshare` (the `termshare` crate's guide shows
//! how). [`ShareService`] is the same API over backends, a host and a policy of the
//! embedder's own: [`ShareService::start`] (or [`ShareService::start_linked`] under a
//! ractor supervisor), then `share`, `extend`, `switch`, `revoke`, `list`, a share's
//! own [`ShareService::events`] and [`ShareService::ended`], and
//! [`ShareService::shutdown`].

pub mod audit;
mod badge;
mod caller;
pub mod error;
pub mod faultpoints;
mod handoff;
mod memory;
mod root;
mod service;
mod session;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod traits;
mod ttl;
mod types;
mod worker;

pub use audit::{AuditEvent, AuditKind, ShareEvent, ShareEvents, ShareEventsError, ShareUpdate};
pub use badge::{Badge, BadgeHandoff, BadgeShare, Badges};
pub use caller::{Caller, FleetOrder, Identity, Peer};
pub use error::{BackendError, InvalidInput, ShareError};
pub use handoff::{
    Approval, HandoffPackage, HandoffRequest, HandoffState, HandoffView, Refusal,
    ENDED_KEPT as HANDOFFS_KEPT, MAX_REASON as HANDOFF_REASON_MAX,
};
pub use service::{ServiceDeps, ShareService};
pub use settings::Settings;
pub use traits::{
    AuditSink, Backend, Grant, HandoffGrant, JoinRefusal, ParticipantEvent, PendingProof,
    PolicyDecision, PolicyGate, PolicyQuery, Probe, ReceiverShare, Recording, RecordingInfo,
    ServingProbe, StartedWorker, TerminalContext, TerminalHost, TerminateOutcome, Worker,
    WorkerExit, WorkerSpec, PARTICIPANT_EVENTS_QUEUE, SERVING_PROBE_TIMEOUT,
};
pub use types::{
    duration_ms, glob_match, AccessMode, BackendName, EndReason, FingerprintKey, HandoffId,
    JoinRules, Links, Principal, RevokeReport, ShareEnd, ShareId, ShareInfo, ShareRequest,
    ShareState, TerminalName,
};
