//! `termshare replay FILE`: play a recording (asciicast v2) on this terminal, with
//! its timing, as `asciinema play` would.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use sha2::Digest;
use termshare::cast::{CastError, CastEvent, CastReader};
use termshare::exit;

use crate::args::ReplayArgs;
use crate::output::{fail, stdout_failed};

pub async fn replay(args: ReplayArgs) -> ExitCode {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return fail(exit::INVALID, "--speed must be a positive number");
    }
    if let Some(expected) = &args.expect_sha256 {
        // The end event's digest: play only the very file that was recorded.
        let actual = match digest(&args.file) {
            Ok(d) => d,
            Err(e) => return fail(exit::NOT_FOUND, format!("{}: {e}", args.file.display())),
        };
        if !actual.eq_ignore_ascii_case(expected) {
            return fail(
                exit::INVALID,
                format!(
                    "{} has SHA-256 {actual}, not {expected}: it is not the recording on the record",
                    args.file.display()
                ),
            );
        }
    }
    let file = match std::fs::File::open(&args.file) {
        Ok(f) => f,
        Err(e) => return fail(exit::NOT_FOUND, format!("{}: {e}", args.file.display())),
    };
    let mut cast = match CastReader::open(std::io::BufReader::new(file)) {
        Ok(c) => c,
        Err(e) => return fail(exit::INVALID, format!("{}: {e}", args.file.display())),
    };
    let mut last = 0.0;
    let mut out = std::io::stdout().lock();
    while let Some(event) = cast.next_event() {
        let event = match event {
            Ok(e) => e,
            Err(e @ CastError::Io(_)) => {
                return fail(exit::INTERNAL, format!("{}: {e}", args.file.display()))
            }
            Err(e) => return fail(exit::INVALID, format!("{}: {e}", args.file.display())),
        };
        let CastEvent::Output { at, text } = event else {
            // A resize cannot be played on someone else's terminal without changing
            // it; other events are not output.
            continue;
        };
        if !args.no_wait {
            let mut pause = Duration::from_secs_f64(((at - last) / args.speed).max(0.0));
            if let Some(limit) = args.idle_limit {
                pause = pause.min(limit);
            }
            tokio::time::sleep(pause).await;
        }
        last = at;
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            stdout_failed(e);
        }
    }
    ExitCode::SUCCESS
}

/// The file's SHA-256, hex, as the end event gives it.
fn digest(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
