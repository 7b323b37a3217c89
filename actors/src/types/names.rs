//! Names that come from outside and are checked once: principals, terminals,
//! backends, access modes, and the glob patterns the policy matches them with.

use super::*;

/// `*` matches any run of characters (including none); everything else literally.
/// Used for principal, terminal and backend patterns in the policy.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Who acts: `human:NAME` or `agent:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    /// The principal as written, `KIND:NAME`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `human` or `agent`.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map(|(k, _)| k).unwrap_or("")
    }
}

impl FromStr for Principal {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InvalidInput::new("principal", s, why);
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| bad("expected human:NAME or agent:NAME"))?;
        if kind != "human" && kind != "agent" {
            return Err(bad("the kind must be `human` or `agent`"));
        }
        if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
            return Err(bad(
                "the name must be 1-64 characters of letters, digits, `.`, `_`, `-`, `@`",
            ));
        }
        Ok(Principal(s.to_owned()))
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

impl TryFrom<String> for Principal {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a host terminal (a tmux session by default). Restricted to characters
/// that tmux takes literally in a target (`.` and `:` select windows and panes there)
/// and that survive tty-share's whitespace splitting of `--args`. A name may not start
/// with what tmux's target syntax reads as something other than a session name (`@1`
/// is a window id, `$1` a session id, `%1` a pane id, `+`/`-` window offsets) or what a
/// program would read as an option (`-x`): `termshare share @1` must never reach
/// another session than the one it checked. (Attach targets are also written `=NAME`,
/// which tmux matches exactly; this is the second lock.)
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TerminalName(String);

impl TerminalName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TerminalName {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '+'))
        {
            return Err(InvalidInput::new(
                "terminal",
                s,
                "must be 1-64 characters of letters, digits, `_`, `-`, `@`, `+`",
            ));
        }
        if s.starts_with(['@', '$', '%', '+', '-', '=', '~', '!', '{']) {
            return Err(InvalidInput::new(
                "terminal",
                s,
                "must not start with `@`, `+` or `-`, which tmux or the attach program would \
                 read as a window id, a window offset or an option rather than a session name",
            ));
        }
        Ok(TerminalName(s.to_owned()))
    }
}

impl TryFrom<String> for TerminalName {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TerminalName> for String {
    fn from(t: TerminalName) -> String {
        t.0
    }
}

impl fmt::Display for TerminalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's registered name. The three termshare ships are constants; any other
/// name (a backend of the embedder's own, `fake` in tests) is [`BackendName::new`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendName(std::borrow::Cow<'static, str>);

impl BackendName {
    /// tty-share: a browser or `tty-share LINK` joins (behind termshare's link front).
    pub const TTY_SHARE: BackendName = BackendName(std::borrow::Cow::Borrowed("tty-share"));
    /// tmate: an ssh relay (tmate.io or a self-hosted one).
    pub const TMATE: BackendName = BackendName(std::borrow::Cow::Borrowed("tmate"));
    /// upterm: an ssh relay through an uptermd server.
    pub const UPTERM: BackendName = BackendName(std::borrow::Cow::Borrowed("upterm"));

    /// Any backend's name (the escape hatch for a backend of the embedder's own).
    pub fn new(name: impl Into<String>) -> Self {
        BackendName(std::borrow::Cow::Owned(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether participants may type into the shared terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    /// `read-only`: participants watch; their keystrokes are not passed on.
    #[serde(rename = "read-only")]
    ReadOnly,
    /// `read-write`: participants may type into the terminal.
    #[serde(rename = "read-write")]
    ReadWrite,
}

impl AccessMode {
    /// `read-only` or `read-write`, as the protocol, policy and audit write it.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "read-only",
            AccessMode::ReadWrite => "read-write",
        }
    }
}

impl FromStr for AccessMode {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" => Ok(AccessMode::ReadOnly),
            "read-write" => Ok(AccessMode::ReadWrite),
            _ => Err(InvalidInput::new(
                "access",
                s,
                "expected `read-only` or `read-write`",
            )),
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
