//! Ids: of a share, of a handoff (UUIDv7, so they sort by creation time)

use super::*;

/// The identity of one share. UUIDv7, so ids sort by creation time in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShareId(pub Uuid);

impl ShareId {
    /// A fresh UUIDv7 id, which sorts by creation time.
    pub fn new() -> Self {
        ShareId(Uuid::now_v7())
    }
}

impl From<ShareId> for Uuid {
    fn from(id: ShareId) -> Uuid {
        id.0
    }
}

/// Lets `event.correlation_id == share_id` read as it means.
impl PartialEq<ShareId> for Uuid {
    fn eq(&self, other: &ShareId) -> bool {
        *self == other.0
    }
}

impl Default for ShareId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ShareId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(ShareId)
            .map_err(|_| InvalidInput::new("share id", s, "expected a UUID"))
    }
}

/// The identity of one handoff (UUIDv7). Its audit events carry it as correlation id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HandoffId(pub Uuid);

impl HandoffId {
    /// A fresh UUIDv7 id, which sorts by creation time.
    pub fn new() -> Self {
        HandoffId(Uuid::now_v7())
    }
}

impl Default for HandoffId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<HandoffId> for Uuid {
    fn from(id: HandoffId) -> Uuid {
        id.0
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for HandoffId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(HandoffId)
            .map_err(|_| InvalidInput::new("handoff id", s, "expected a UUID"))
    }
}
