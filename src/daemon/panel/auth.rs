//! Who the panel's browser is: a one-time secret in the URL `termshare panel` prints,
//! exchanged on first load for a session cookie (as Jupyter does), and a page token
//! every data and action request must carry.
//!
//! - The secret is minted over the control socket for the identity the kernel proved
//!   there (SO_PEERCRED), lives [`SECRET_TTL`], and is good once. At most
//!   [`MAX_SECRETS`] wait at once (the oldest is dropped).
//! - The session cookie is `HttpOnly; SameSite=Strict` and signed, not stored:
//!   `v1.UID.EXPIRES.NONCE.MAC`, MAC = HMAC-SHA256 under a key derived from the
//!   installation's fingerprint key. So it survives a daemon restart (the page
//!   reconnects by itself) and the daemon keeps no table of sessions. Each request
//!   maps the uid to its identity through the policy as it is now.
//! - The cookie alone opens nothing but the (empty) page. Cookies are not kept apart
//!   by port: any server another local user runs on `127.0.0.1:OTHER` that the
//!   operator's browser visits would be sent it. So every data and action request
//!   must also carry the *page token*, HMAC of the cookie under the same key. It is
//!   handed over once, in the page that took the secret, and the page keeps it in
//!   `sessionStorage`, which is per origin, port included: it reaches no other port.
//!   It goes in `X-Termshare-Token` (and, for the event stream, which cannot set a
//!   header, in its `t` query parameter). A cross-site request cannot carry it: it
//!   is the CSRF token as well.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a minted secret may wait for its browser.
pub const SECRET_TTL: Duration = Duration::from_secs(120);
/// Minted secrets waiting at once.
pub const MAX_SECRETS: usize = 64;
/// How long a panel session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "termshare_panel";

/// The panel's keys and the secrets minted and not yet used.
pub struct PanelAuth {
    key: [u8; 32],
    secrets: parking_lot::Mutex<VecDeque<Minted>>,
}

struct Minted {
    secret: String,
    uid: u32,
    at: Instant,
}

/// A valid session: whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The local user it was minted for.
    pub uid: u32,
    /// The cookie's value (its CSRF token is derived from it).
    pub cookie: String,
}

impl PanelAuth {
    /// Keys derived from the installation's fingerprint key (domain-separated: a
    /// panel MAC is never a link fingerprint).
    pub fn new(fingerprint_key: &[u8; 32]) -> Self {
        PanelAuth {
            key: hmac(fingerprint_key, b"termshare panel session key v1"),
            secrets: parking_lot::Mutex::new(VecDeque::new()),
        }
    }

    /// A one-time secret for `uid` (192 bits, URL-safe); an error only when the
    /// kernel's random source fails.
    pub fn mint(&self, uid: u32) -> Result<String, String> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let mut secrets = self.secrets.lock();
        secrets.retain(|m| m.at.elapsed() < SECRET_TTL);
        if secrets.len() >= MAX_SECRETS {
            secrets.pop_front();
        }
        secrets.push_back(Minted {
            secret: secret.clone(),
            uid,
            at: Instant::now(),
        });
        Ok(secret)
    }

    /// Use `secret` (once): the new session's cookie value, or `None`.
    pub fn exchange(&self, secret: &str) -> Option<String> {
        let mut secrets = self.secrets.lock();
        let at = secrets.iter().position(|m| {
            m.at.elapsed() < SECRET_TTL && constant_time_eq(m.secret.as_bytes(), secret.as_bytes())
        })?;
        let minted = secrets.remove(at)?;
        let expires = unix_now() + SESSION_TTL.as_secs();
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).ok()?;
        let body = format!(
            "v1.{}.{expires}.{}",
            minted.uid,
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let mac = URL_SAFE_NO_PAD.encode(hmac(&self.key, body.as_bytes()));
        Some(format!("{body}.{mac}"))
    }

    /// The session a cookie value stands for, if it is ours and not expired.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let expected = URL_SAFE_NO_PAD.encode(hmac(&self.key, body.as_bytes()));
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(uid), Some(expires), Some(_nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let expires: u64 = expires.parse().ok()?;
        if expires <= unix_now() {
            return None;
        }
        Some(Session {
            uid: uid.parse().ok()?,
            cookie: cookie.to_owned(),
        })
    }

    /// The page token of a session.
    pub fn page_token(&self, session: &Session) -> String {
        let mut input = b"page\0".to_vec();
        input.extend_from_slice(session.cookie.as_bytes());
        URL_SAFE_NO_PAD.encode(hmac(&self.key, &input))
    }

    /// Whether `token` is the session's page token.
    pub fn page_token_ok(&self, session: &Session, token: &str) -> bool {
        constant_time_eq(self.page_token(session).as_bytes(), token.as_bytes())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_good_once_and_its_session_is_signed() {
        let auth = PanelAuth::new(&[7; 32]);
        let secret = auth.mint(1000).unwrap();
        assert!(secret.len() >= 32);
        let cookie = auth.exchange(&secret).expect("a fresh secret");
        assert_eq!(auth.exchange(&secret), None, "used once");
        assert_eq!(auth.exchange("not-a-secret"), None);
        let session = auth.session(&cookie).unwrap();
        assert_eq!(session.uid, 1000);
        // Another uid, or any change, breaks the MAC.
        let forged = cookie.replacen("v1.1000.", "v1.0.", 1);
        assert_eq!(auth.session(&forged), None);
        assert_eq!(auth.session(&format!("{cookie}x")), None);
        assert_eq!(auth.session("v1.0.99999999999.x"), None);
        // Another installation's key does not know it.
        assert_eq!(PanelAuth::new(&[8; 32]).session(&cookie), None);
        // The same key (a restarted daemon) does.
        assert!(PanelAuth::new(&[7; 32]).session(&cookie).is_some());
        let token = auth.page_token(&session);
        assert!(auth.page_token_ok(&session, &token));
        assert!(!auth.page_token_ok(&session, "x"));
        assert_ne!(token, cookie, "the token is not the cookie");
    }

    #[test]
    fn secrets_are_bounded() {
        let auth = PanelAuth::new(&[7; 32]);
        let first = auth.mint(1).unwrap();
        for _ in 0..MAX_SECRETS {
            auth.mint(1).unwrap();
        }
        assert_eq!(auth.exchange(&first), None, "the oldest was dropped");
        assert_eq!(auth.secrets.lock().len(), MAX_SECRETS);
    }
}
