//! What the chaos tests read of the kernel's view of a process.

/// The process group of `pid`, from /proc.
pub fn pgid_of(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// `pid` is a process that runs (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    !matches!(
        termshare::process::process_state(pid),
        None | Some('Z') | Some('X')
    )
}
