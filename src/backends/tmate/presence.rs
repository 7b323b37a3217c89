//! Who is in a tmate share, as far as tmate is told.
//!
//! A relay with a websocket server (tmate.io runs one) tells the tmate client each
//! time a participant joins or leaves, and tmate `-F` prints it on stdout. The text is
//! tmate-websocket's (`lib/tmate/session.ex`, `notify_client_presence_daemon`, at
//! d95a4b7):
//!
//! ```text
//! A mate has joined (203.0.113.7) -- 2 clients currently connected
//! A mate has left (203.0.113.7) -- 1 client currently connected
//! ```
//!
//! A standalone tmate-ssh-server (no websocket server) tells the client nothing: it
//! logs `Client joined (cid=N)` on its own side only (tmate-ssh-server
//! `tmate-websocket.c`, `tmate_notify_client_join`, which returns early without
//! `tmate_has_websocket()`). So the count is unknown until the first such line, and
//! termshare says unknown, never 0. The relay-side path cannot run here (no tmate.io):
//! this parsing is tested from the texts above.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The participant count a presence line gives, if the line is one.
pub fn presence(line: &str) -> Option<u32> {
    let rest = line
        .trim()
        .strip_prefix("A mate has joined (")
        .or_else(|| line.trim().strip_prefix("A mate has left ("))?;
    let (_, count) = rest.split_once(") -- ")?;
    let (n, tail) = count.split_once(' ')?;
    if !tail.starts_with("client") {
        return None;
    }
    n.parse().ok()
}

/// The count as last told: `None` until tmate has said anything.
#[derive(Clone, Default)]
pub struct Presence(Arc<AtomicI64>);

impl Presence {
    /// Unknown until a presence line comes.
    pub fn new() -> Self {
        Presence(Arc::new(AtomicI64::new(-1)))
    }

    /// Take one of tmate's lines.
    pub fn feed(&self, line: &str) {
        if let Some(n) = presence(line) {
            self.0.store(i64::from(n), Ordering::Relaxed);
        }
    }

    /// Participants connected, as tmate was last told; `None`: never told.
    pub fn count(&self) -> Option<u32> {
        u32::try_from(self.0.load(Ordering::Relaxed)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_servers_join_and_leave_lines_give_the_count() {
        // Verbatim from tmate-websocket lib/tmate/session.ex (d95a4b7).
        let joined = "A mate has joined (203.0.113.7) -- 2 clients currently connected";
        let left = "A mate has left (203.0.113.7) -- 1 client currently connected";
        assert_eq!(presence(joined), Some(2));
        assert_eq!(presence(left), Some(1));
        assert_eq!(presence("ssh session: ssh abc@nyc1.tmate.io"), None);
        assert_eq!(presence("A mate has joined (x) -- many clients"), None);
        let p = Presence::new();
        assert_eq!(p.count(), None, "unknown before tmate says anything");
        p.feed("Connecting to ssh.tmate.io...");
        assert_eq!(p.count(), None);
        p.feed(joined);
        assert_eq!(p.count(), Some(2));
        p.feed(left);
        assert_eq!(p.count(), Some(1));
    }
}
