//! Raw HTTP to a share's link, for what a browser or an attacker would send: status
//! lines, headers, websocket handshakes on any path.

use std::time::Duration;

/// Send `GET /PATH` under the share's link's host, with `headers`, and read the
/// answer until the server closes (or 3 s). `path` is taken from the link itself
/// (`/s/SECRET/`) followed by `under`.
pub fn raw_get(link: &str, under: &str, headers: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = link.strip_prefix("http://").unwrap();
    let (host, base) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET /{base}{under} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// The status line of a plain `GET` of `link` (`HTTP/1.1 404 Not Found`, ...).
pub fn http_status(link: &str) -> String {
    let got = raw_get(link, "", "Connection: close\r\n");
    let text = String::from_utf8_lossy(&got);
    text.lines().next().unwrap_or_default().to_owned()
}

/// The terminal websocket's path tty-share hands out (its `TTYSHARE-TTY-WSPATH`
/// header, as the front rewrote it), relative to the share's link.
pub fn tty_ws_path(link: &str) -> String {
    let got = raw_get(link, "", "Connection: close\r\n");
    let got = String::from_utf8_lossy(&got);
    let header = got
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("ttyshare-tty-wspath")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no TTYSHARE-TTY-WSPATH in {got:?}"));
    let base = link
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .1;
    header
        .strip_prefix(&format!("/{base}"))
        .unwrap_or_else(|| panic!("{header} is not under /{base}"))
        .to_owned()
}

/// A websocket handshake for `path` under the share's link, raw; what came back,
/// until the server closed the connection (or 3 s).
pub fn raw_upgrade(link: &str, path: &str) -> Vec<u8> {
    raw_get(
        link,
        path,
        "Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    )
}

/// A websocket handshake for `path` under the share's link that hangs up as soon as
/// the answer's head is in (a client reconnecting in a loop); the status line, or
/// `None` when the connection was refused or cut before an answer.
pub fn upgrade_then_hang_up(link: &str, path: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let rest = link.strip_prefix("http://")?;
    let (host, base) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET /{base}{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).ok()? > 2 {
        line.clear();
    }
    Some(status.trim_end().to_owned())
}
