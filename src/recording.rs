//! Recording what a shared terminal shows, as an asciicast v2 file (the format
//! `asciinema play`/`cat` and the asciinema web player read).
//!
//! A read-only tmux client of termshare's own is attached to the terminal in a pty of
//! the terminal's size, and everything tmux draws for it is written down with its
//! time. `attach-session -r` makes the client read-only *and* size-ignoring (tmux ≥
//! 3.2), so the host's window keeps its size and nothing is ever typed into it. The
//! file is created 0600 with `O_EXCL` in a directory that must be the user's and
//! writable by nobody else (`[recording] dir`); its SHA-256 goes into the share's end
//! event.
//!
//! When the terminal's window changes size, the recording client's pty follows (so
//! tmux draws it whole) and the file gets a `[seconds, "r", "COLSxROWS"]` event; the
//! size is sampled once a second (tmux has no way to tell a client of another
//! window's resize without a hook in the user's own server).
//!
//! A recording that cannot go on (the disk refuses a write, the file reaches
//! `[recording] max_bytes`, the recording client stops) says so at once
//! ([`termshare_actors::Recording::failure`]) and its share ends: a share meant to be
//! recorded is never watched unrecorded.
//!
//! Hand-written rather than a crate: asciicast v2 is a JSON header line and one JSON
//! array per chunk (`[seconds, "o", text]`); the one subtle part, not splitting a
//! UTF-8 character across two events, is a few lines here.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::pty::{openpty, Winsize};
use sha2::{Digest, Sha256};
use termshare_actors::{Recording, RecordingInfo, ShareId, TerminalName};

use crate::launch::CleanEnv;
use crate::secure_fs::{self, Trust};

/// The terminal type the recording client runs under (and the file's header says).
const TERM: &str = "xterm-256color";
/// How long a stop waits for the recording client to go before it is killed.
const CLIENT_EXIT: Duration = Duration::from_secs(1);
/// How often the terminal's size is sampled for resize events.
const SIZE_SAMPLE: Duration = Duration::from_secs(1);
/// The most one recording may grow to unless `[recording] max_bytes` says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The terminal's size now (cols, rows), or `None` when it cannot be told.
pub type SizeProbe = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(u16, u16)>> + Send>>
        + Send
        + Sync,
>;

/// The file's events, written by the pty reader (output) and the size sampler
/// (resizes), in time order.
struct Events {
    out: std::io::BufWriter<std::fs::File>,
    started: Instant,
    /// Bytes in the file so far (the header included).
    written: u64,
    /// The most the file may hold.
    max_bytes: u64,
}

impl Events {
    fn write(&mut self, kind: &str, text: &str) -> std::io::Result<()> {
        let t = self.started.elapsed().as_secs_f64();
        let line = format!("{}\n", serde_json::json!([t, kind, text]));
        if self.written + line.len() as u64 > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "it reached its size limit of {} bytes ([recording] max_bytes)",
                self.max_bytes
            )));
        }
        self.out.write_all(line.as_bytes())?;
        self.out.flush()?;
        self.written += line.len() as u64;
        Ok(())
    }
}

/// How a recording tells its share it cannot go on: sent once, unless the recording
/// is being finished (then stopping is what was asked).
#[derive(Clone)]
struct Failure {
    tx: Arc<parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<String>>>>,
    finishing: Arc<std::sync::atomic::AtomicBool>,
}

impl Failure {
    fn new() -> (Failure, tokio::sync::oneshot::Receiver<String>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let failure = Failure {
            tx: Arc::new(parking_lot::Mutex::new(Some(tx))),
            finishing: Arc::default(),
        };
        (failure, rx)
    }

    fn report(&self, why: String) {
        if self.finishing.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(tx) = self.tx.lock().take() {
            let _ = tx.send(why);
        }
    }
}

/// Where and with what a tmux terminal is recorded.
pub struct Recorder {
    /// The tmux binary and its server's socket.
    pub tmux: PathBuf,
    /// The tmux server's socket.
    pub socket: PathBuf,
    /// The directory the files go in.
    pub dir: PathBuf,
    /// The clean environment of every command termshare runs.
    pub env: Arc<CleanEnv>,
    /// The terminal's size now, sampled for resize events.
    pub size: SizeProbe,
    /// The most one file may grow to ([`DEFAULT_MAX_BYTES`] unless configured).
    pub max_bytes: u64,
}

impl Recorder {
    /// Start recording `terminal` (of `cols`×`rows`) into `DIR/SHARE_ID.cast`.
    pub fn start(
        &self,
        terminal: &TerminalName,
        share: ShareId,
        (cols, rows): (u16, u16),
    ) -> Result<Box<dyn Recording>, String> {
        let dir = secure_fs::open_dir(&self.dir, true, Trust::default())
            .map_err(|e| format!("the recording directory is refused: {e}"))?;
        let name = format!("{share}.cast");
        let mut file = dir
            .open_file(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
            .map_err(|e| format!("cannot create the recording: {e}"))?;
        let header = serde_json::json!({
            "version": 2, "width": cols, "height": rows,
            "timestamp": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs()).unwrap_or(0),
            "env": {"TERM": TERM},
        });
        let header = format!("{header}\n");
        if header.len() as u64 > self.max_bytes {
            return Err(format!(
                "[recording] max_bytes ({}) is too small for a recording",
                self.max_bytes
            ));
        }
        file.write_all(header.as_bytes())
            .map_err(|e| format!("cannot write the recording: {e}"))?;
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).map_err(|e| format!("no pty: {e}"))?;
        // Never inherited by anything else termshare starts (a worker holding the
        // slave would keep the recording open; one holding the master could read it).
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("no pty: {e}"))?;
        }
        let child = self
            .client(terminal, pty.slave)
            .map_err(|e| format!("cannot start the recording client: {e}"))?;
        // The child holds the only slave end now: the master reads EOF (EIO) once the
        // client is gone.
        let resizer = pty.master.try_clone().map_err(|e| format!("no pty: {e}"))?;
        let master = std::fs::File::from(pty.master);
        let events = Arc::new(parking_lot::Mutex::new(Events {
            out: std::io::BufWriter::new(file),
            started: Instant::now(),
            written: header.len() as u64,
            max_bytes: self.max_bytes,
        }));
        let (failure, failed) = Failure::new();
        let writer = {
            let (events, failure) = (events.clone(), failure.clone());
            std::thread::Builder::new()
                .name("termshare-record".into())
                .spawn(move || {
                    let written = write_output(master, events);
                    failure.report(match &written {
                        Ok(()) => "the recording client stopped".to_string(),
                        Err(e) => format!("the recording cannot be written: {e}"),
                    });
                    written
                })
                .map_err(|e| format!("cannot start the recording thread: {e}"))?
        };
        let sampler = tokio::spawn(follow_size(
            self.size.clone(),
            (cols, rows),
            resizer,
            events,
            failure.clone(),
        ));
        Ok(Box::new(TmuxRecording {
            child,
            writer: Some(writer),
            sampler,
            path: dir.path().join(&name),
            failure,
            failed: Some(failed),
        }))
    }

    /// `tmux -S SOCKET attach-session -r -t =TERMINAL` on the pty's slave, in a
    /// session of its own with the pty as its controlling terminal.
    fn client(
        &self,
        terminal: &TerminalName,
        slave: OwnedFd,
    ) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.tmux);
        self.env.apply(&mut cmd);
        cmd.env("TERM", TERM)
            .arg("-S")
            .arg(&self.socket)
            .args(["attach-session", "-r", "-t", &format!("={terminal}")])
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Gone with termshare, even a kill -9 of it (the client is in a session
                // of its own, out of any group termshare kills).
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)?;
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

/// Keep the recording client's pty at the terminal's size, and put each change in the
/// file as an `"r"` event.
async fn follow_size(
    size: SizeProbe,
    mut last: (u16, u16),
    master: OwnedFd,
    events: Arc<parking_lot::Mutex<Events>>,
    failure: Failure,
) {
    let mut tick = tokio::time::interval(SIZE_SAMPLE);
    loop {
        tick.tick().await;
        let Some(now) = size().await else {
            continue;
        };
        if now == last {
            continue;
        }
        last = now;
        let ws = Winsize {
            ws_col: now.0,
            ws_row: now.1,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer; the fd is ours.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                libc::TIOCSWINSZ,
                &ws,
            );
        }
        if let Err(e) = events.lock().write("r", &format!("{}x{}", now.0, now.1)) {
            failure.report(format!("the recording cannot be written: {e}"));
            return;
        }
    }
}

/// Copy what the client is shown into the file as `[seconds, "o", text]` lines until
/// it is gone.
fn write_output(
    mut master: std::fs::File,
    events: Arc<parking_lot::Mutex<Events>>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    // Bytes of a UTF-8 character cut off at the end of the last read.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EIO: the client and its pty are gone
        };
        carry.extend_from_slice(&buf[..n]);
        let text = take_utf8(&mut carry);
        if !text.is_empty() {
            let mut events = events.lock();
            if let Err(e) = events.write("o", &text) {
                // What is in the file stays, durable, for the end event's digest.
                let _ = events.out.flush();
                let _ = events.out.get_ref().sync_all();
                return Err(e);
            }
        }
    }
    let events = events.lock();
    events.out.get_ref().sync_all()
}

/// The longest valid UTF-8 prefix of `bytes` as text (invalid bytes as U+FFFD), leaving
/// only an incomplete character at the end in `bytes`.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let tail = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = tail;
    text
}

struct TmuxRecording {
    child: tokio::process::Child,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Follows the terminal's size; aborted when the recording ends.
    sampler: tokio::task::JoinHandle<()>,
    path: PathBuf,
    /// Tells the share the recording stopped before it was finished.
    failure: Failure,
    failed: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl Drop for TmuxRecording {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

#[async_trait]
impl Recording for TmuxRecording {
    fn failure(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        self.failed.take()
    }

    async fn finish(mut self: Box<Self>) -> Result<RecordingInfo, String> {
        self.failure
            .finishing
            .store(true, std::sync::atomic::Ordering::Release);
        self.sampler.abort();
        // A client that is already gone stopped recording early: the file is short.
        let gone_early = self.child.try_wait().ok().flatten();
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(CLIENT_EXIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let writer = self.writer.take().ok_or("already finished")?;
        let path = self.path.clone();
        let (info, written) = tokio::task::spawn_blocking(move || {
            let written = writer
                .join()
                .map_err(|_| "the recording thread panicked".to_string())?;
            Ok::<_, String>((digest(&path)?, written))
        })
        .await
        .map_err(|e| e.to_string())??;
        if let Err(e) = written {
            return Err(format!(
                "the recording stopped early, it cannot be written: {e}: {} is incomplete \
                 (sha256 {})",
                info.path, info.sha256
            ));
        }
        match gone_early {
            Some(status) => Err(format!(
                "the recording client stopped before the share ended ({status}): {} is incomplete \
                 (sha256 {})",
                info.path, info.sha256
            )),
            None => Ok(info),
        }
    }
}

/// The finished file's SHA-256 and size.
fn digest(path: &Path) -> Result<RecordingInfo, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(|e| e.to_string())?;
    Ok(RecordingInfo {
        path: path.display().to_string(),
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_is_written_whole() {
        let mut bytes = "ab€".as_bytes().to_vec();
        bytes.pop(); // the euro sign cut short
        assert_eq!(take_utf8(&mut bytes), "ab");
        assert_eq!(bytes.len(), 2);
        bytes.push(0xac);
        assert_eq!(take_utf8(&mut bytes), "€");
        assert!(bytes.is_empty());
        let mut invalid = vec![b'x', 0xff, b'y'];
        assert_eq!(take_utf8(&mut invalid), "x\u{fffd}y");
    }
}
