//! tmux's client protocol, spoken directly for a read-only query (the terminal check).
//!
//! Why not the `tmux` binary: the check runs beside every share's start, and a tmux
//! client process costs about 1.6 ms of CPU (exec, dynamic linking, its own setup)
//! where the same messages cost microseconds from here. On two cores that process
//! competed with tty-share's own start (BENCHMARKS.md, issue 18). And the query goes
//! over the very connection whose peer the kernel named as the user's own server
//! (`TmuxHost::connect_verified`): nothing can take the server's place between the
//! proof and the question.
//!
//! Why so careful: the protocol is tmux's private one. A tmux server that reads a
//! message of the wrong size calls `fatalx` (3.2-3.5) and the user loses every
//! session. So it is spoken only to a server whose own `#{version}` is one read here
//! from the source (see [`version_is_known`]); any other server, and any answer not
//! understood, gets the `tmux` binary instead (`TmuxHost::check`). No crate speaks
//! this protocol, hence this file.
//!
//! The exchange, as tmux's own client makes it for a command (client.c,
//! `client_send_identify` and `client_dispatch_wait`, at tmux 3.3a; the same in 3.2
//! to 3.6b): identify messages, then `MSG_COMMAND` (argc and the NUL-terminated
//! arguments, `;` separating commands as on a command line). Left out: the stdin and
//! stdout descriptors (the server then has no terminal for this client, the state a
//! `tmux CMD </dev/null` client reaches once the server finds stdin is not a tty) and
//! the environment (a query needs none). The server answers `MSG_WRITE_OPEN` for
//! stdout or stderr, which we accept with `MSG_WRITE_READY`, then `MSG_WRITE`s, then
//! `MSG_EXIT` with the command's status.
//!
//! Framing (OpenBSD imsg, tmux's compat/imsg.h): a 16-byte header in host byte order,
//! `type: u32`, `len: u16` (header included), `flags: u16`, `peerid: u32` (the
//! protocol version, 8 since tmux 2.x), `pid: u32`. tmux 3.6 reads `len` as a `u32`
//! whose top bit marks a passed descriptor; without descriptors, and on a
//! little-endian machine, both read the same bytes. Big-endian machines use the
//! binary.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// tmux's `PROTOCOL_VERSION`, 8 from tmux 2.x through 3.6b.
const PROTOCOL_VERSION: u32 = 8;
/// imsg's header size and its largest message (`MAX_IMSGSIZE`).
const HEADER: usize = 16;
const MAX_MESSAGE: usize = 16384;
/// The most output one query may bring back; a check's is one short line.
pub(super) const MAX_OUTPUT: usize = 64 * 1024;

// Message types (tmux-protocol.h).
const MSG_VERSION: u32 = 12;
const MSG_IDENTIFY_FLAGS: u32 = 100;
const MSG_IDENTIFY_TERM: u32 = 101;
const MSG_IDENTIFY_TTYNAME: u32 = 102;
const MSG_IDENTIFY_DONE: u32 = 106;
const MSG_IDENTIFY_CLIENTPID: u32 = 107;
const MSG_IDENTIFY_CWD: u32 = 108;
const MSG_IDENTIFY_FEATURES: u32 = 109;
const MSG_IDENTIFY_LONGFLAGS: u32 = 111;
const MSG_COMMAND: u32 = 200;
const MSG_EXIT: u32 = 203;
const MSG_SHUTDOWN: u32 = 210;
const MSG_WRITE_OPEN: u32 = 303;
const MSG_WRITE: u32 = 304;
const MSG_WRITE_READY: u32 = 305;
const MSG_WRITE_CLOSE: u32 = 306;
const MSG_FLAGS: u32 = 218;

/// tmux's `CLIENT_UTF8` (0x10000 in 3.2-3.6): without it the server replaces every
/// byte outside ASCII in what it prints with `_`, and a session `café` would be
/// listed as `caf_`, the name of another session or of none.
const CLIENT_UTF8: u64 = 0x10000;

/// What a query printed and how it ended, as the `tmux` binary would have.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    /// The commands' exit status (`MSG_EXIT`): 0 when every command succeeded.
    pub status: i32,
    /// What went to the client's stdout and stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a query over the wire gave no answer. Every one of them means "ask the tmux
/// binary instead", never "the terminal is missing".
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("the tmux server speaks protocol version {0}, not {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("the tmux server's answer was not understood: {0}")]
    Malformed(&'static str),
    #[error("the command does not fit in one tmux message")]
    TooLong,
    #[error("the tmux server's answer is over {MAX_OUTPUT} bytes")]
    TooMuchOutput,
    #[error("the tmux server closed the connection before it answered")]
    Closed,
    #[error("talking to the tmux server: {0}")]
    Io(#[from] io::Error),
}

/// Is `version` (the server's `#{version}`, e.g. `3.3a`) one whose protocol this
/// file was checked against: 3.2 to 3.6, any letter release. `next-3.7`, `master`
/// and anything older are not.
pub(super) fn version_is_known(version: &str) -> bool {
    let Some(rest) = version.trim().strip_prefix("3.") else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let letter = &rest[digits.len()..];
    matches!(digits.as_str(), "2" | "3" | "4" | "5" | "6")
        && (letter.is_empty() || (letter.len() == 1 && letter.as_bytes()[0].is_ascii_lowercase()))
}

/// Run `argv` (tmux command words) on the server at the other end of `stream`.
pub(super) async fn query(mut stream: UnixStream, argv: &[&str]) -> Result<Answer, WireError> {
    if !cfg!(target_endian = "little") {
        return Err(WireError::Malformed(
            "big-endian machines use the tmux binary",
        ));
    }
    stream.write_all(&request(argv)?).await?;
    let mut answer = Answer::default();
    // Which of stdout (1) and stderr (2) the server has opened.
    let mut opened = [false; 3];
    loop {
        let (kind, data) = read_message(&mut stream).await?;
        match kind {
            MSG_VERSION => return Err(WireError::Version(data.version)),
            MSG_WRITE_OPEN => {
                // msg_write_open { stream, fd, flags } + path: accept stdout and stderr.
                let stream_id = int_at(&data.body, 0)?;
                if !(1..=2).contains(&stream_id) {
                    return Err(WireError::Malformed(
                        "a write to a stream other than 1 or 2",
                    ));
                }
                opened[stream_id as usize] = true;
                let mut ready = Vec::with_capacity(8);
                ready.extend_from_slice(&stream_id.to_ne_bytes());
                ready.extend_from_slice(&0i32.to_ne_bytes());
                stream.write_all(&message(MSG_WRITE_READY, &ready)?).await?;
            }
            MSG_WRITE => {
                let out = match int_at(&data.body, 0)? {
                    1 if opened[1] => &mut answer.stdout,
                    2 if opened[2] => &mut answer.stderr,
                    _ => return Err(WireError::Malformed("output to an unopened stream")),
                };
                out.extend_from_slice(&data.body[4..]);
                if answer.stdout.len() + answer.stderr.len() > MAX_OUTPUT {
                    return Err(WireError::TooMuchOutput);
                }
            }
            MSG_EXIT => {
                // The status, then maybe a message.
                answer.status = int_at(&data.body, 0)?;
                return Ok(answer);
            }
            MSG_SHUTDOWN => return Err(WireError::Closed),
            // Nothing to answer: a stream closed, the client's flags changed.
            MSG_WRITE_CLOSE | MSG_FLAGS => {}
            // Anything else (a read of stdin, a detach, an exec…) wants an answer a
            // query cannot give: waiting would only hang.
            _ => return Err(WireError::Malformed("a message a query does not expect")),
        }
    }
}

/// The identify messages and the command, in one buffer.
fn request(argv: &[&str]) -> Result<Vec<u8>, WireError> {
    if argv.is_empty() {
        // argc 0 makes the server run `new-session` (or default-client-command).
        return Err(WireError::Malformed("an empty command"));
    }
    let mut out = Vec::with_capacity(256);
    out.extend(message(
        MSG_IDENTIFY_FLAGS,
        &(CLIENT_UTF8 as i32).to_ne_bytes(),
    )?);
    out.extend(message(MSG_IDENTIFY_LONGFLAGS, &CLIENT_UTF8.to_ne_bytes())?);
    out.extend(message(MSG_IDENTIFY_TERM, b"\0")?);
    out.extend(message(MSG_IDENTIFY_FEATURES, &0i32.to_ne_bytes())?);
    // Mandatory: every version reads the client's tty name when identification is
    // done, and a server never sent one dereferences a null pointer.
    out.extend(message(MSG_IDENTIFY_TTYNAME, b"\0")?);
    out.extend(message(MSG_IDENTIFY_CWD, b"/\0")?);
    out.extend(message(
        MSG_IDENTIFY_CLIENTPID,
        &(std::process::id() as i32).to_ne_bytes(),
    )?);
    out.extend(message(MSG_IDENTIFY_DONE, &[])?);
    let mut command = Vec::new();
    command.extend_from_slice(
        &i32::try_from(argv.len())
            .map_err(|_| WireError::TooLong)?
            .to_ne_bytes(),
    );
    for word in argv {
        if word.contains('\0') {
            return Err(WireError::Malformed("a command word with a NUL byte"));
        }
        command.extend_from_slice(word.as_bytes());
        command.push(0);
    }
    out.extend(message(MSG_COMMAND, &command)?);
    Ok(out)
}

/// One framed message: the header, then `body`.
fn message(kind: u32, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = HEADER + body.len();
    if len > MAX_MESSAGE {
        return Err(WireError::TooLong);
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // flags: no descriptor
    out.extend_from_slice(&PROTOCOL_VERSION.to_ne_bytes());
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // pid: tmux sends -1
    out.extend_from_slice(body);
    Ok(out)
}

/// A received message's body and the protocol version its header carried.
struct Received {
    version: u32,
    body: Vec<u8>,
}

async fn read_message(stream: &mut UnixStream) -> Result<(u32, Received), WireError> {
    let mut header = [0u8; HEADER];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let word = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().unwrap_or_default());
    let kind = word(0);
    // Old layout: u16 length then u16 flags (1: a descriptor came); 3.6: u32 length
    // whose top bit marks a descriptor. A message is at most 16 KiB, so the low 16
    // bits are the length in both, and the high 16 can only be one of those marks.
    let len = (word(4) & 0xffff) as usize;
    if !matches!(word(4) >> 16, 0 | 1 | 0x8000) || !(HEADER..=MAX_MESSAGE).contains(&len) {
        return Err(WireError::Malformed("a message length out of range"));
    }
    let mut body = vec![0u8; len - HEADER];
    match stream.read_exact(&mut body).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    Ok((
        kind,
        Received {
            version: word(8) & 0xff,
            body,
        },
    ))
}

fn int_at(body: &[u8], at: usize) -> Result<i32, WireError> {
    body.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or(WireError::Malformed("a message shorter than its fields"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versions_read_from_the_source_are_known_and_no_other() {
        for v in [
            "3.2", "3.2a", "3.3a", "3.4", "3.5a", "3.6", "3.6b", " 3.3a\n",
        ] {
            assert!(version_is_known(v), "{v}");
        }
        for v in [
            "3.1c", "3.7", "next-3.7", "master", "3.10", "2.9a", "3.3ab", "3.", "", "3.3A",
        ] {
            assert!(!version_is_known(v), "{v}");
        }
    }

    #[test]
    fn a_message_is_framed_as_imsg_frames_it() {
        let m = message(MSG_IDENTIFY_CWD, b"/\0").unwrap();
        assert_eq!(m.len(), 18);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 108);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 18);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 0);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 8);
        assert_eq!(&m[16..], b"/\0");
    }

    /// Runs a query against a stand-in server that reads the request and then sends
    /// `reply`, and ends its side; it reads on until the client hangs up.
    async fn against(reply: Vec<u8>) -> Result<Answer, WireError> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let _ = theirs.read(&mut request).await;
            let _ = theirs.write_all(&reply).await;
            let _ = theirs.shutdown().await;
            // Read on until the client hangs up, as a server would.
            while matches!(theirs.read(&mut request).await, Ok(n) if n > 0) {}
        });
        let answer = query(ours, &["has-session"]).await;
        server.await.unwrap();
        answer
    }

    fn write(stream: i32, data: &[u8]) -> Vec<u8> {
        let mut body = stream.to_ne_bytes().to_vec();
        body.extend_from_slice(data);
        message(MSG_WRITE, &body).unwrap()
    }

    #[tokio::test]
    async fn an_answer_is_read_and_every_surprise_is_an_error_not_an_answer() {
        let open = |s: i32| {
            message(
                MSG_WRITE_OPEN,
                &[s.to_ne_bytes(), 1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat(),
            )
            .unwrap()
        };
        let exit = |status: i32| message(MSG_EXIT, &status.to_ne_bytes()).unwrap();

        let ok = [open(1), write(1, b"80 24 off\n"), exit(0)].concat();
        let answer = against(ok).await.unwrap();
        assert_eq!(
            (answer.status, answer.stdout.as_slice()),
            (0, &b"80 24 off\n"[..])
        );
        let failed = [open(2), write(2, b"can't find session: S\n"), exit(1)].concat();
        let answer = against(failed).await.unwrap();
        assert_eq!(
            (answer.status, answer.stderr.as_slice()),
            (1, &b"can't find session: S\n"[..])
        );

        let version = message(MSG_VERSION, &[]).unwrap();
        assert!(matches!(against(version).await, Err(WireError::Version(8))));
        assert!(matches!(against(vec![]).await, Err(WireError::Closed)));
        assert!(matches!(
            against([open(1), write(1, b"half")].concat()).await,
            Err(WireError::Closed)
        ));
        let mut short = message(MSG_EXIT, &[]).unwrap();
        short[4] = 3; // a length shorter than the header
        assert!(matches!(against(short).await, Err(WireError::Malformed(_))));
        assert!(matches!(
            against([write(1, b"x"), exit(0)].concat()).await,
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            against([open(3), exit(0)].concat()).await,
            Err(WireError::Malformed(_))
        ));
        // MSG_READ_OPEN: the server would wait for stdin; a query gives up at once.
        let read_open = message(300, &[1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat()).unwrap();
        assert!(matches!(
            against([read_open, exit(0)].concat()).await,
            Err(WireError::Malformed(_))
        ));
        let mut odd_flags = exit(0);
        odd_flags[6] = 2; // neither the old descriptor flag nor 3.6's mark
        assert!(matches!(
            against(odd_flags).await,
            Err(WireError::Malformed(_))
        ));
        let mut marked = exit(0);
        marked[7] = 0x80; // 3.6's descriptor mark (little-endian): still read
        assert!(against(marked).await.is_ok());
        let flood: Vec<u8> = std::iter::once(open(1))
            .chain(std::iter::repeat_with(|| write(1, &[b'x'; 16000])).take(5))
            .flatten()
            .collect();
        assert!(matches!(
            against(flood).await,
            Err(WireError::TooMuchOutput)
        ));
    }

    /// The request byte by byte, against sizes read from tmux's server-client.c (not
    /// from this file's own constants): a wrong size would make tmux 3.2-3.5 exit.
    #[test]
    fn the_request_is_what_tmux_reads_byte_for_byte() {
        let bytes = request(&["has-session", "-t", "=S"]).unwrap();
        let mut at = 0;
        let mut seen = Vec::new();
        while at < bytes.len() {
            let kind = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap()) as usize;
            assert_eq!(&bytes[at + 6..at + 8], &[0, 0], "flags");
            assert_eq!(
                u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                8
            );
            seen.push((kind, len - 16, bytes[at + 16..at + len].to_vec()));
            at += len;
        }
        let mut command = 3i32.to_ne_bytes().to_vec();
        command.extend_from_slice(b"has-session\0-t\0=S\0");
        let pid = (std::process::id() as i32).to_ne_bytes().to_vec();
        let expected: Vec<(u32, usize, Vec<u8>)> = vec![
            // IDENTIFY_FLAGS, sizeof (int): CLIENT_UTF8
            (100, 4, 0x10000i32.to_ne_bytes().to_vec()),
            // IDENTIFY_LONGFLAGS, sizeof (uint64_t)
            (111, 8, 0x10000u64.to_ne_bytes().to_vec()),
            // IDENTIFY_TERM, NUL-terminated
            (101, 1, b"\0".to_vec()),
            // IDENTIFY_FEATURES, sizeof (int)
            (109, 4, vec![0; 4]),
            // IDENTIFY_TTYNAME, NUL-terminated
            (102, 1, b"\0".to_vec()),
            // IDENTIFY_CWD, NUL-terminated
            (108, 2, b"/\0".to_vec()),
            // IDENTIFY_CLIENTPID, sizeof (pid_t)
            (107, 4, pid),
            // IDENTIFY_DONE, empty
            (106, 0, vec![]),
            // COMMAND: argc, then each word NUL-terminated
            (200, command.len(), command),
        ];
        assert_eq!(seen, expected);
        assert!(matches!(request(&[]), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_command_too_long_or_with_a_nul_is_refused_before_anything_is_sent() {
        let long = "x".repeat(MAX_MESSAGE);
        assert!(matches!(request(&[&long]), Err(WireError::TooLong)));
        assert!(matches!(request(&["a\0b"]), Err(WireError::Malformed(_))));
    }
}
