//! The zygote's command on the wire: what termshare sends (`encode`) and what the
//! zygote makes of it (`decode`), checked on both sides.

use std::ffi::{CStr, CString};
use std::io;

/// The largest command a zygote accepts (program, arguments and environment).
pub(super) const MAX_COMMAND: usize = 1 << 20;

/// The command as the zygote reads it: its length, the number of arguments and of
/// variables (each a little-endian u32), then the program, the arguments and the
/// `NAME=value` variables, each ending in a NUL.
pub(super) fn encode(
    program: &str,
    args: &[String],
    env: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&(args.len() as u32).to_le_bytes());
    body.extend_from_slice(&(env.len() as u32).to_le_bytes());
    let mut push = |bytes: &[&[u8]]| -> io::Result<()> {
        for b in bytes {
            if b.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a command or variable contains a NUL byte",
                ));
            }
            body.extend_from_slice(b);
        }
        body.push(0);
        Ok(())
    };
    push(&[program.as_bytes()])?;
    for a in args {
        push(&[a.as_bytes()])?;
    }
    for (k, v) in env {
        if k.is_empty() || k.contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a variable name is empty or contains '='",
            ));
        }
        push(&[k, b"=", v])?;
    }
    if body.len() > MAX_COMMAND {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the command is longer than {MAX_COMMAND} bytes"),
        ));
    }
    let mut message = (body.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(&body);
    Ok(message)
}

pub(super) type Decoded = (CString, Vec<CString>, Vec<CString>);

/// The program, its `argv` (the program first, as `Command` does) and its `envp`.
pub(super) fn decode(body: &[u8]) -> io::Result<Decoded> {
    let bad = || io::Error::from_raw_os_error(libc::EINVAL);
    let count = |at: usize| -> io::Result<usize> {
        let b = body.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (nargs, nenv) = (count(0)?, count(4)?);
    let mut strings = body
        .get(8..)
        .ok_or_else(bad)?
        .split_inclusive(|&b| b == 0)
        .map(|s| {
            CStr::from_bytes_with_nul(s)
                .map(CStr::to_owned)
                .map_err(|_| bad())
        });
    let program = strings.next().ok_or_else(bad)??;
    let mut argv = vec![program.clone()];
    for _ in 0..nargs {
        argv.push(strings.next().ok_or_else(bad)??);
    }
    // Not `with_capacity(nenv)`: the count is read from the socket, and an absurd one
    // must end in `bad()`, not in an allocation that aborts.
    let mut envp = Vec::new();
    for _ in 0..nenv {
        envp.push(strings.next().ok_or_else(bad)??);
    }
    if strings.next().is_some() {
        return Err(bad());
    }
    Ok((program, argv, envp))
}

pub(super) fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_goes_through_the_wire_as_it_was() {
        let env = vec![(b"TERM".to_vec(), b"xterm".to_vec())];
        let args = vec!["-a".to_string(), String::new(), "x y".to_string()];
        let message = encode("/bin/prog", &args, &env).unwrap();
        let (program, argv, envp) = decode(&message[4..]).unwrap();
        assert_eq!(program.to_bytes(), b"/bin/prog");
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.to_bytes()).collect();
        assert_eq!(argv, [&b"/bin/prog"[..], b"-a", b"", b"x y"]);
        assert_eq!(envp[0].to_bytes(), b"TERM=xterm");
    }

    #[test]
    fn a_nul_or_a_broken_name_is_refused_before_anything_is_sent() {
        assert!(encode("/bin/p", &["a\0b".into()], &[]).is_err());
        assert!(encode("/bin/p", &[], &[(b"A=B".to_vec(), b"c".to_vec())]).is_err());
        assert!(encode("/bin/p", &[], &[(Vec::new(), b"c".to_vec())]).is_err());
    }

    #[test]
    fn a_short_or_padded_message_does_not_decode() {
        let message = encode("/bin/p", &["a".into()], &[]).unwrap();
        let body = &message[4..];
        assert!(decode(&body[..body.len() - 1]).is_err());
        let mut padded = body.to_vec();
        padded.extend_from_slice(b"extra\0");
        assert!(decode(&padded).is_err());
        assert!(decode(&[1, 0]).is_err());
    }
}
