//! What upterm needs to start without a person at the keyboard, all in the share's
//! private directory (0700), never in the user's `~/.ssh`:
//!
//! - a known_hosts file of termshare's own. uptermd presents a host *certificate*, so
//!   upterm accepts only an `@cert-authority PATTERN KEY` line for it (a plain host-key
//!   line, or none, makes upterm ask "The authenticity of host … (yes/no)?" on stdout
//!   and exit 1 when stdin is not a terminal). From `server_ca_key`, or a copy of the
//!   configured `known_hosts` (so upterm can never write to the user's file).
//! - a private key to authenticate to the server: the configured `private_key`, else an
//!   ed25519 key made for this share alone (0600), gone with the share.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Key types an `@cert-authority` line may name (OpenSSH's `ssh-keygen -L` names).
const CA_KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// Check `server_ca_key`: `TYPE BASE64 [COMMENT]` on one line. It is written into a
/// known_hosts file, so a newline or a second entry in it is refused.
pub fn check_ca_key(key: &str) -> Result<(), String> {
    if key.contains(['\n', '\r', '\0']) {
        return Err("server_ca_key must be one line".into());
    }
    let mut words = key.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Err("server_ca_key must be `TYPE BASE64`, e.g. `ssh-ed25519 AAAA…`".into());
    };
    if !CA_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "server_ca_key type `{kind}` is not one of {}",
            CA_KEY_TYPES.join(", ")
        ));
    }
    let base64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    if !blob.starts_with("AAAA") || !blob.chars().all(base64) {
        return Err("server_ca_key's key is not base64 (`AAAA…`)".into());
    }
    Ok(())
}

/// The known_hosts pattern of an upterm server URL: `HOST` on port 22, else
/// `[HOST]:PORT` (OpenSSH's form, which upterm's known_hosts code reads).
pub fn host_pattern(server: &str) -> Option<String> {
    let rest = server.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        // `[v6]` or `[v6]:PORT`
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse::<u16>().ok()?),
                None if after.is_empty() => (host, 22),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, p)) => (host, p.parse::<u16>().ok()?),
            None => (authority, 22),
        },
    };
    if host.is_empty() || host.contains([' ', ',', '\n']) {
        return None;
    }
    Some(if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    })
}

/// Write a file only the user can read, that did not exist before.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The share's known_hosts in `dir`: the CA line for `server`, or a copy of `copy_of`.
pub fn write_known_hosts(
    dir: &Path,
    server: &str,
    ca_key: Option<&str>,
    copy_of: Option<&Path>,
) -> Result<PathBuf, String> {
    let path = dir.join("known_hosts");
    let text = match (ca_key, copy_of) {
        (Some(key), _) => {
            let pattern = host_pattern(server)
                .ok_or_else(|| format!("cannot tell the host of the upterm server `{server}`"))?;
            format!("@cert-authority {pattern} {}\n", key.trim())
        }
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read known_hosts {}: {e}", file.display()))?,
        (None, None) => String::new(),
    };
    write_private(&path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// A new ed25519 key for this share alone, in OpenSSH's format, 0600 in `dir`.
pub fn ephemeral_key(dir: &Path) -> Result<PathBuf, String> {
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let path = dir.join("id_ed25519");
    write_private(&path, pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_keys_are_one_well_formed_line() {
        assert!(check_ca_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 uptermd-ca").is_ok());
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3",
            "ssh-ed25519 notbase64!",
            "ssh-ed25519 AAAAC3\n@cert-authority * ssh-ed25519 AAAAevil",
        ] {
            assert!(check_ca_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_patterns_follow_openssh() {
        assert_eq!(
            host_pattern("ssh://127.0.0.1:2222").as_deref(),
            Some("[127.0.0.1]:2222")
        );
        assert_eq!(
            host_pattern("ssh://uptermd.upterm.dev:22").as_deref(),
            Some("uptermd.upterm.dev")
        );
        assert_eq!(
            host_pattern("ssh://uptermd.upterm.dev").as_deref(),
            Some("uptermd.upterm.dev")
        );
        assert_eq!(
            host_pattern("wss://u.example.org:443/x").as_deref(),
            Some("[u.example.org]:443")
        );
        assert_eq!(
            host_pattern("ssh://[::1]:2222").as_deref(),
            Some("[::1]:2222")
        );
        assert_eq!(host_pattern("nonsense"), None);
    }

    #[test]
    fn the_files_are_private_and_new() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let kh = write_known_hosts(
            dir.path(),
            "ssh://127.0.0.1:2222",
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3"),
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "@cert-authority [127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3\n"
        );
        let key = ephemeral_key(dir.path()).unwrap();
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        for f in [&kh, &key] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        // Never over a file that is already there (a planted symlink included).
        assert!(ephemeral_key(dir.path()).is_err());
    }
}
