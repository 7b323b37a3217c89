//! The host seam: the terminals themselves (check, attach, capture, notify, record)
//! and where audit events are kept.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::types::{AccessMode, TerminalName};

/// A terminal's state at a handoff: what the receiver needs to carry on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalContext {
    /// The active pane's working directory.
    pub cwd: String,
    /// The foreground command of the active pane.
    pub command: String,
    /// The last lines of the pane, history included.
    pub scrollback: String,
    /// The pane's width in columns.
    pub cols: u16,
    /// The pane's height in rows.
    pub rows: u16,
}

/// Where audit events go to be kept.
pub trait AuditSink: Send + 'static {
    /// Append a batch; return only once it is as durable as the sink promises.
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String>;

    /// The sequence number the next event gets: one past the last one kept, so that
    /// numbering continues across restarts.
    fn next_seq(&self) -> u64 {
        1
    }
}

/// The host side: the terminal that is shared.
#[async_trait]
pub trait TerminalHost: Send + Sync + 'static {
    /// Is there such a terminal? `Ok` carries its size (cols, rows) when known, so that
    /// one round trip serves both; the error says why there is none.
    async fn check(&self, terminal: &TerminalName) -> Result<Option<(u16, u16)>, String>;

    /// The terminal's size as last seen, without asking (a share's worker starts with
    /// it while the terminal is checked; a check that finds another size starts the
    /// worker again). `None` makes the worker wait for the check.
    fn size_hint(&self, _terminal: &TerminalName) -> Option<(u16, u16)> {
        None
    }

    /// The argv that attaches a new client to the terminal.
    fn attach_command(&self, terminal: &TerminalName, access: AccessMode) -> Vec<String>;

    /// Show a message to everyone attached to the terminal (grace warnings).
    async fn notify(&self, terminal: &TerminalName, message: &str) -> Result<(), String>;

    /// Capture the terminal's context (working directory, foreground command, the
    /// last `lines` lines, size) for a handoff.
    async fn capture(
        &self,
        terminal: &TerminalName,
        lines: usize,
    ) -> Result<TerminalContext, String>;

    /// Start recording what the terminal shows, for share `share`, without changing
    /// what the host sees (no resize, no input). The error says why it cannot.
    async fn record(
        &self,
        terminal: &TerminalName,
        share: crate::types::ShareId,
    ) -> Result<Box<dyn Recording>, String> {
        let _ = (terminal, share);
        Err("this terminal host cannot record".into())
    }
}

/// A recording in progress; [`Recording::finish`] closes it. Dropping it unfinished
/// stops what records (the file stays as far as it got).
#[async_trait]
pub trait Recording: Send + Sync + 'static {
    /// Stop recording, make the file durable, and say where it is and its digest.
    async fn finish(self: Box<Self>) -> Result<RecordingInfo, String>;

    /// Says why, once the recording cannot go on before [`Recording::finish`] (the
    /// file cannot be written, it reached its size limit, what records stopped): the
    /// session then ends the share, which must not be watched unrecorded. Taken once;
    /// `None` from a recording that cannot fail on its own.
    fn failure(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        None
    }
}

/// A finished recording, as the share's end event names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingInfo {
    /// The file (asciicast v2).
    pub path: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}
