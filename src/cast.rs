//! Reading an asciicast v2 file (what `--record` writes, what `termshare replay`
//! plays): a JSON header line, then one JSON array per event, `[seconds, "o", text]`
//! for output and `[seconds, "r", "COLSxROWS"]` for a resize (asciicast v2, as
//! asciinema 2.x writes and reads it).
//!
//! Read as a stream, line by line: a recording may be hundreds of MiB. Bad input is a
//! typed error that names the line, never a panic.

use std::io::BufRead;

use serde::Deserialize;
use thiserror::Error;

/// The longest line read (a recording writes at most 16 KiB of output per event).
pub const MAX_LINE: usize = 1024 * 1024;

/// Why a file is not a recording termshare can play.
#[derive(Debug, Error)]
pub enum CastError {
    /// It could not be read.
    #[error("cannot read the recording: {0}")]
    Io(#[from] std::io::Error),
    /// It is empty.
    #[error("the file is empty, not an asciicast recording")]
    Empty,
    /// The header is not an asciicast v2 header.
    #[error("line 1 is not an asciicast v2 header: {0}")]
    Header(String),
    /// An event line is not `[seconds, code, data]`, or goes back in time.
    #[error("line {line} is not an asciicast event: {why}")]
    Event {
        /// Its line number (1 is the header).
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// The header's fields that matter for playing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CastHeader {
    /// Must be 2.
    pub version: u32,
    /// The terminal's columns.
    pub width: u16,
    /// The terminal's rows.
    pub height: u16,
}

/// One event of a recording.
#[derive(Clone, Debug, PartialEq)]
pub enum CastEvent {
    /// Output shown at `at` seconds from the start.
    Output {
        /// Seconds from the start.
        at: f64,
        /// What the terminal was sent.
        text: String,
    },
    /// The terminal became `cols`×`rows` at `at` seconds.
    Resize {
        /// Seconds from the start.
        at: f64,
        /// New columns.
        cols: u16,
        /// New rows.
        rows: u16,
    },
    /// Another kind of event (input `i`, marker `m`): kept in the file, not played.
    Other {
        /// Seconds from the start.
        at: f64,
    },
}

impl CastEvent {
    /// Seconds from the start.
    pub fn at(&self) -> f64 {
        match self {
            CastEvent::Output { at, .. }
            | CastEvent::Resize { at, .. }
            | CastEvent::Other { at } => *at,
        }
    }
}

/// A recording being read: its header, then its events in order.
pub struct CastReader<R> {
    input: R,
    /// The header, read when the reader was opened.
    pub header: CastHeader,
    line: usize,
    last: f64,
    buf: Vec<u8>,
}

impl<R: BufRead> CastReader<R> {
    /// Read the header of `input`.
    pub fn open(mut input: R) -> Result<Self, CastError> {
        let mut buf = Vec::new();
        if read_line(&mut input, &mut buf)? == 0 {
            return Err(CastError::Empty);
        }
        let header: CastHeader =
            serde_json::from_slice(&buf).map_err(|e| CastError::Header(e.to_string()))?;
        if header.version != 2 {
            return Err(CastError::Header(format!(
                "version {} (only 2 is read)",
                header.version
            )));
        }
        Ok(CastReader {
            input,
            header,
            line: 1,
            last: 0.0,
            buf,
        })
    }

    /// The next event; `None` at the end of the file.
    pub fn next_event(&mut self) -> Option<Result<CastEvent, CastError>> {
        loop {
            self.buf.clear();
            match read_line(&mut self.input, &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(self.parse());
        }
    }

    fn parse(&mut self) -> Result<CastEvent, CastError> {
        let bad = |why: String| CastError::Event {
            line: self.line,
            why,
        };
        let (at, code, data): (f64, String, String) =
            serde_json::from_slice(&self.buf).map_err(|e| bad(e.to_string()))?;
        if !at.is_finite() || at < self.last {
            return Err(bad(format!("time {at} is before {}", self.last)));
        }
        self.last = at;
        Ok(match code.as_str() {
            "o" => CastEvent::Output { at, text: data },
            "r" => {
                let size = data
                    .split_once('x')
                    .and_then(|(c, r)| Some((c.parse().ok()?, r.parse().ok()?)));
                let Some((cols, rows)) = size else {
                    return Err(bad(format!("resize {data:?} is not COLSxROWS")));
                };
                CastEvent::Resize { at, cols, rows }
            }
            _ => CastEvent::Other { at },
        })
    }
}

/// One line into `buf` (without its newline), at most [`MAX_LINE`] bytes.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<usize, CastError> {
    let n = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if buf.len() > MAX_LINE {
        return Err(CastError::Io(std::io::Error::other(format!(
            "a line longer than {MAX_LINE} bytes"
        ))));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Result<Vec<CastEvent>, CastError> {
        let mut r = CastReader::open(text.as_bytes())?;
        std::iter::from_fn(|| r.next_event()).collect()
    }

    #[test]
    fn a_recording_reads_as_its_events() {
        let text = "{\"version\":2,\"width\":80,\"height\":24,\"env\":{\"TERM\":\"xterm\"}}\n\
                    [0.1,\"o\",\"host$ \"]\n\n[0.5,\"r\",\"100x35\"]\n[0.7,\"m\",\"\"]\n";
        let r = CastReader::open(text.as_bytes()).unwrap();
        assert_eq!((r.header.width, r.header.height), (80, 24));
        assert_eq!(
            events(text).unwrap(),
            [
                CastEvent::Output {
                    at: 0.1,
                    text: "host$ ".into()
                },
                CastEvent::Resize {
                    at: 0.5,
                    cols: 100,
                    rows: 35
                },
                CastEvent::Other { at: 0.7 },
            ]
        );
    }

    #[test]
    fn bad_input_is_a_typed_error_that_names_the_line() {
        assert!(matches!(events(""), Err(CastError::Empty)));
        assert!(matches!(events("not json\n"), Err(CastError::Header(_))));
        let v1 = "{\"version\":1,\"width\":80,\"height\":24}\n";
        assert!(matches!(events(v1), Err(CastError::Header(_))));
        let h = "{\"version\":2,\"width\":80,\"height\":24}\n";
        for (body, line) in [
            ("[1.0,\"o\",\"a\"]\n[0.5,\"o\",\"b\"]\n", 3),
            ("[1.0,\"o\"]\n", 2),
            ("[1.0,\"r\",\"wide\"]\n", 2),
            ("{}\n", 2),
        ] {
            match events(&format!("{h}{body}")) {
                Err(CastError::Event { line: l, .. }) => assert_eq!(l, line, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
