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

use crate::backends::presence::PresenceTracker;

/// What a presence line says.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A participant from this address joined; this many are connected now.
    Joined(&'a str, u32),
    /// A participant from this address left; this many are connected now.
    Left(&'a str, u32),
}

/// What a line of tmate's says of participants, if it is a presence line.
pub fn presence(line: &str) -> Option<Notice<'_>> {
    let line = line.trim();
    let (joined, rest) = match line.strip_prefix("A mate has joined (") {
        Some(rest) => (true, rest),
        None => (false, line.strip_prefix("A mate has left (")?),
    };
    let (address, count) = rest.split_once(") -- ")?;
    let (n, tail) = count.split_once(' ')?;
    if !tail.starts_with("client") {
        return None;
    }
    let n = n.parse().ok()?;
    Some(if joined {
        Notice::Joined(address, n)
    } else {
        Notice::Left(address, n)
    })
}

/// Feeds tmate's lines to a tracker: each presence line is a join or a leave, and the
/// count it gives is the count.
pub struct Presence(PresenceTracker);

impl Presence {
    /// Presence over `tracker` (unknown until a presence line comes).
    pub fn new(tracker: PresenceTracker) -> Self {
        Presence(tracker)
    }

    /// Take one of tmate's lines.
    pub fn feed(&mut self, line: &str) {
        match presence(line) {
            Some(Notice::Joined(address, n)) => {
                self.0.joined(address);
                self.0.connected_now(n);
            }
            Some(Notice::Left(address, n)) => {
                self.0.left(address);
                self.0.connected_now(n);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_servers_join_and_leave_lines_give_the_count() {
        use crate::backends::presence::PresenceFeed;
        use termshare_actors::ParticipantEvent;
        // Verbatim from tmate-websocket lib/tmate/session.ex (d95a4b7).
        let joined = "A mate has joined (203.0.113.7) -- 2 clients currently connected";
        let left = "A mate has left (203.0.113.7) -- 1 client currently connected";
        assert_eq!(presence(joined), Some(Notice::Joined("203.0.113.7", 2)));
        assert_eq!(presence(left), Some(Notice::Left("203.0.113.7", 1)));
        assert_eq!(presence("ssh session: ssh abc@nyc1.tmate.io"), None);
        assert_eq!(presence("A mate has joined (x) -- many clients"), None);
        let (tracker, mut feed) = PresenceTracker::new(false);
        let mut p = Presence::new(tracker);
        assert_eq!(
            PresenceFeed::count(&feed.count),
            None,
            "unknown before tmate says anything"
        );
        p.feed("Connecting to ssh.tmate.io...");
        assert_eq!(PresenceFeed::count(&feed.count), None);
        // The first notice says 2 are there: the one it names, and one from before.
        p.feed(joined);
        assert_eq!(PresenceFeed::count(&feed.count), Some(2));
        p.feed(left);
        assert_eq!(PresenceFeed::count(&feed.count), Some(1));
        let events: Vec<_> = std::iter::from_fn(|| feed.events.try_recv().ok()).collect();
        assert_eq!(
            events,
            [
                ParticipantEvent::Joined {
                    id: 1,
                    origin: "203.0.113.7".into()
                },
                ParticipantEvent::Joined {
                    id: 2,
                    origin: "unknown".into()
                },
                ParticipantEvent::Left { id: 1 },
            ]
        );
    }
}
