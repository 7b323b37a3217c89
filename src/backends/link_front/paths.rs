//! The share's secret in paths: checked on the way in, put back on the way out.

use hyper::header::{HeaderValue, LOCATION};
use hyper::Response;

/// `/s/SECRET/rest` → `Some("rest")` when SECRET matches (in constant time).
pub(super) fn strip_secret<'a>(path: &'a str, secret: &str) -> Option<&'a str> {
    let rest = path.strip_prefix("/s/")?;
    let (given, rest) = match rest.split_once('/') {
        Some((g, r)) => (g, r),
        None => (rest, ""),
    };
    let same = given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(rest)
}

/// Point the paths tty-share hands out at the secret path instead of `/s/local`.
pub(super) fn rewrite_headers<B>(resp: &mut Response<B>, secret: &str) {
    let mut changed = Vec::new();
    for (name, value) in resp.headers() {
        let relevant = name.as_str().starts_with("ttyshare-") || name == LOCATION;
        if let (true, Ok(v)) = (relevant, value.to_str()) {
            if v.contains("/s/local") {
                changed.push((name.clone(), v.replace("/s/local", &format!("/s/{secret}"))));
            }
        }
    }
    for (name, v) in changed {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(name, v);
        }
    }
}

/// The session page names its script and websocket under `/s/local`, once as a plain
/// path and once escaped for JavaScript (`\/s\/local\/`).
pub(super) fn rewrite_page(page: &[u8], secret: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    text.replace("/s/local/", &format!("/s/{secret}/"))
        .replace(r"\/s\/local\/", &format!(r"\/s\/{secret}\/"))
        .into_bytes()
}
