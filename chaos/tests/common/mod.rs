//! What the chaos tests read of the kernel's view of a process.

/// The process group of `pid`, from /proc.
pub fn pgid_of(pid: u32) -> Option<i32> {
    termshare_testkit::pgid_of(pid as i32)
}

/// `pid` is a process that runs (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    !matches!(
        termshare::process::process_state(pid),
        None | Some('Z') | Some('X')
    )
}

/// This process's live zygotes for isolated workers (`termshare-zygote PARENT FD
/// HELPER_FD`, the helper's descriptor not -1): the pool holds at most one, so a
/// second is one a cancelled start left behind.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn isolated_zygotes() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            // The parent's pid, not the argument: a zygote's connector helper is
            // forked from it and shows the same command line.
            args.len() >= 4
                && args[0] == b"termshare-zygote"
                && args[3] != b"-1"
                && termshare_testkit::parent_of(pid as i32).is_some_and(|p| p.to_string() == me)
                && alive(pid)
        })
        .collect()
}
