//! `[fleet]` as checked: its settings, the host id's form, and the default host id.

use std::path::Path;
use std::time::Duration;

/// `[fleet]` as checked by [`Config::fleet`].
#[derive(Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// The database's libpq URI or key=value string (it may hold a password).
    pub database: String,
    /// This host's name in the fleet, on every row it writes.
    pub host_id: String,
    /// A host silent this long is shown as unreachable.
    pub lease: Duration,
}

/// The database string may carry a password: it is never printed.
impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("database", &"<redacted>")
            .field("host_id", &self.host_id)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A host id: 1-64 of letters, digits, `.`, `_`, `-` (it goes in every row and in
/// command lines, so nothing a shell or a LIKE pattern reads differently).
pub fn check_host_id(h: &str) -> Result<String, &'static str> {
    if h.is_empty() || h.len() > 64 {
        return Err("must be 1-64 characters");
    }
    if !h
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may hold only letters, digits, `.`, `_` and `-`");
    }
    Ok(h.to_owned())
}

/// The default host id: `m-` and 16 hex digits of HMAC-SHA256(machine id, "termshare
/// fleet host id"). Stable for the machine's life, and not the machine id itself,
/// which systemd asks programs not to publish (as `sd_id128_get_machine_app_specific`).
pub fn host_id_from_machine_id(path: &Path) -> Result<String, String> {
    use hmac::{Hmac, Mac};
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let id = text.trim();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{} does not hold a machine id", path.display()));
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(id.as_bytes())
        .map_err(|e| format!("machine id: {e}"))?;
    mac.update(b"termshare fleet host id");
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("m-{hex}"))
}
