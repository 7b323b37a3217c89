//! termshare's test kit: what the integration tests, the chaos harness and the
//! benchmarks share. Private tmux hosts, real participants, real local users, process
//! table checks, policies. Every guard cleans up in `Drop`, so a failing test leaves
//! nothing running.

mod participant;
mod policies;
pub mod postgres;
mod procs;
mod tmux;
pub mod users;

pub use participant::Participant;
pub use policies::{allow_all, handoff_chain, policy, NO_AGENT_WRITES};
pub use postgres::{Postgres, TlsFiles};
pub use procs::{
    descendants, environ_of, parent_of, pgid_of, pid_alive, processes_mentioning, processes_where,
    wait_until,
};
pub use tmux::Tmux;

/// Tests that switch uids or add users need root; they are `#[ignore]`d and run by
/// `scripts/test.sh` as root (CI). Run by hand without root, they fail here, loudly.
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root: run it as root (scripts/test.sh does in CI)"
    );
}
