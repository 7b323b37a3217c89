//! Policies the tests, the chaos harness and the benchmarks share.

use std::path::{Path, PathBuf};

/// `[[rule]]` text allowing `backends` to every human and agent on every terminal,
/// read-only and read-write, for at most `max_ttl`.
pub fn allow_all(backends: &[&str], max_ttl: &str) -> String {
    let list = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[rule]]\nid = \"test\"\neffect = \"allow\"\nprincipals = [\"human:*\", \"agent:*\"]\nterminals = [\"*\"]\nbackends = [{list}]\naccess = [\"read-only\", \"read-write\"]\nmax_ttl = \"{max_ttl}\"\n"
    )
}

/// Agents never write: a deny rule to put before the others.
pub const NO_AGENT_WRITES: &str = "[[rule]]\nid = \"no-agent-writes\"\neffect = \"deny\"\nprincipals = [\"agent:*\"]\nterminals = [\"*\"]\nbackends = [\"*\"]\naccess = [\"read-write\"]\n";

/// A two-step handoff chain (owner, then lead) between any principals.
pub fn handoff_chain(step_timeout: &str, agent_access: &str) -> String {
    format!(
        "[[handoff]]\nid = \"chain\"\nfrom = [\"human:*\", \"agent:*\"]\nto = [\"human:*\", \"agent:*\"]\nterminals = [\"*\"]\napprovers = [\"human:owner\", \"human:lead\"]\nstep_timeout = \"{step_timeout}\"\nagent_access = \"{agent_access}\"\n"
    )
}

/// A policy file allowing `backends` to everyone on every terminal.
pub fn policy(dir: &Path, backends: &[&str], max_ttl: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(&path, allow_all(backends, max_ttl)).unwrap();
    path
}
