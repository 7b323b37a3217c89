//! Who is in an upterm share, live, from upterm's own log.
//!
//! `upterm host` logs each participant's join and leave (host/host.go at v0.24.0,
//! lines 330 and 354: `logger.Info("Client joined", "client", client.Addr)` and
//! `logger.Info("Client left", "client", client.Addr)`) through slog's JSON handler
//! (internal/logging/logging.go) into `$XDG_STATE_HOME/upterm/upterm.log`
//! (utils/utils.go, `UptermLogFilePath`), which is the share's own private directory
//! here. A line looks like:
//!
//! ```text
//! {"time":"…","level":"INFO","msg":"Client joined","server":"ssh://…","session":"…",
//!  "cmd":["sleep","infinity"],"force_cmd":"…","client":"203.0.113.7:51234"}
//! ```
//!
//! The host process writes it itself, for every join, so the count is live from 0.
//! The file is followed as the kernel reports changes to its directory (inotify),
//! not polled.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::backends::presence::{PresenceFeed, PresenceTracker};
use crate::process::Attached;

/// Follows one share's upterm log; stops when dropped (with its worker).
pub struct LogFollower {
    task: tokio::task::JoinHandle<()>,
    _watcher: notify::RecommendedWatcher,
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attached for LogFollower {}

/// Follow `state/upterm/upterm.log` under `state_home` (created 0700 now, so that it
/// can be watched before upterm writes anything). Joins and leaves come out of the
/// returned feed.
pub fn follow(state_home: &Path) -> std::io::Result<(LogFollower, PresenceFeed)> {
    use notify::Watcher;
    let dir = state_home.join("upterm");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    // One pending wake-up is enough: each reads to the end of the file.
    let (wake, mut woken) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| e.kind.is_modify() || e.kind.is_create()) {
            let _ = wake.try_send(());
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    let (tracker, feed) = PresenceTracker::new(true);
    let path = dir.join("upterm.log");
    let task = tokio::spawn(async move {
        let mut log = LogReader::new(path, tracker);
        loop {
            log.read_new();
            if woken.recv().await.is_none() {
                return;
            }
        }
    });
    let follower = LogFollower {
        task,
        _watcher: watcher,
    };
    Ok((follower, feed))
}

use std::os::unix::fs::DirBuilderExt;

/// Reads what upterm appended since the last read, line by line.
struct LogReader {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// A line not yet ended by its newline.
    pending: Vec<u8>,
    tracker: PresenceTracker,
}

/// The most of a line kept while waiting for its end (upterm's lines are short).
const MAX_LINE: usize = 64 * 1024;

impl LogReader {
    fn new(path: PathBuf, tracker: PresenceTracker) -> Self {
        LogReader {
            path,
            file: None,
            pending: Vec::new(),
            tracker,
        }
    }

    fn read_new(&mut self) {
        if self.file.is_none() {
            // Not there until upterm's first log line; O_NOFOLLOW: never another file.
            use std::os::unix::fs::OpenOptionsExt;
            self.file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.path)
                .ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut chunk = Vec::new();
        if file.read_to_end(&mut chunk).is_err() {
            return;
        }
        self.pending.extend_from_slice(&chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.take(&line);
        }
        if self.pending.len() > MAX_LINE {
            self.pending.clear(); // not a line of upterm's
        }
    }

    fn take(&mut self, line: &[u8]) {
        let Ok(entry) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        let client = entry["client"].as_str().unwrap_or("unknown");
        match entry["msg"].as_str() {
            Some("Client joined") => self.tracker.joined(client),
            Some("Client left") => self.tracker.left(client),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use termshare_actors::ParticipantEvent;

    /// Lines as upterm v0.24.0 writes them (slog JSON; fields from host/host.go).
    fn line(msg: &str, client: &str) -> String {
        format!(
            "{{\"time\":\"2026-12-02T19:00:00.123456789Z\",\"level\":\"INFO\",\"msg\":\"{msg}\",\
             \"server\":\"ssh://uptermd.example.org:22\",\"session\":\"abc\",\
             \"cmd\":[\"sleep\",\"infinity\"],\"force_cmd\":\"tmux attach\",\"client\":\"{client}\"}}\n"
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_and_leaves_come_as_upterm_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (_follower, mut feed) = follow(dir.path()).unwrap();
        assert_eq!(PresenceFeed::count(&feed.count), Some(0), "live from 0");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("upterm/upterm.log"))
            .unwrap();
        log.write_all(line("Starting sshd server", "").as_bytes())
            .unwrap();
        log.write_all(line("Client joined", "203.0.113.7:51234").as_bytes())
            .unwrap();
        let joined = tokio::time::timeout(std::time::Duration::from_secs(2), feed.events.recv())
            .await
            .expect("no join within 2 s")
            .unwrap();
        assert_eq!(
            joined,
            ParticipantEvent::Joined {
                id: 1,
                origin: "203.0.113.7:51234".into()
            }
        );
        // A line written in two parts is read once it is whole.
        let left = line("Client left", "203.0.113.7:51234");
        let (a, b) = left.split_at(40);
        log.write_all(a.as_bytes()).unwrap();
        log.flush().unwrap();
        log.write_all(b.as_bytes()).unwrap();
        let left = tokio::time::timeout(std::time::Duration::from_secs(2), feed.events.recv())
            .await
            .expect("no leave within 2 s")
            .unwrap();
        assert_eq!(left, ParticipantEvent::Left { id: 1 });
        assert_eq!(PresenceFeed::count(&feed.count), Some(0));
    }
}
