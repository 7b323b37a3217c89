use super::*;
use termshare_actors::{AuditKind, ShareId};

fn event(seq: u64) -> AuditEvent {
    let mut e = AuditEvent::new(AuditKind::ShareRequested, ShareId::new());
    e.seq = seq;
    e
}

#[test]
fn a_torn_last_line_is_cut_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/audit.jsonl");
    let mut sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
    // Its own service.started is line 1.
    assert_eq!(sink.next_seq(), 2);
    sink.append(&[event(2), event(3)]).unwrap();
    drop(sink); // service.stopped is 4
                // A crash in the middle of the fifth line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"id":"0190","at":"2026-"#).unwrap();
    drop(f);
    let (sink, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert_eq!(rec.last_seq, 4);
    assert!(rec.torn_bytes > 0);
    // The two requests never ended: 5 and 6 end them, 7 is service.started.
    assert_eq!(rec.ended_shares, 2);
    assert_eq!(sink.next_seq(), 8);
    let (events, bad) = read_events(&path).unwrap();
    assert_eq!((events.len(), bad), (7, 0));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_symlink_at_the_log_path_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("passwd-copy");
    std::fs::write(&target, "root:x:0:0:root:/root:/bin/bash\ntorn").unwrap();
    let log = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let err = JsonlFileSink::open(&log, Durability::Durable)
        .err()
        .unwrap();
    assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "root:x:0:0:root:/root:/bin/bash\ntorn"
    );
}

#[test]
fn the_fingerprint_key_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("state/audit.jsonl");
    let a = load_fingerprint_key(&log).unwrap();
    let b = load_fingerprint_key(&log).unwrap();
    assert_eq!(a, b);
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir.path().join("state/fingerprint.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
}

#[test]
fn a_failing_disk_is_an_error_not_a_panic() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .unwrap();
    let mut sink = JsonlFileSink {
        path: "/dev/full".into(),
        file: Flock::lock(file, FlockArg::LockSharedNonblock).unwrap(),
        instance: Uuid::now_v7(),
        stop_on_drop: true,
        durability: Durability::Durable,
        good_len: 0,
        next_seq: 1,
        last_sync: Instant::now(),
        committed: tokio::sync::watch::Sender::new(Default::default()),
    };
    let err = sink.append(&[event(1)]).unwrap_err();
    assert!(err.contains("No space left"), "{err}");
}

/// A log as a crash leaves it: these lines, written as they are, no sink involved.
fn crashed_log(lines: &[AuditEvent]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut text = Vec::new();
    for (i, e) in lines.iter().enumerate() {
        let mut e = e.clone();
        e.seq = i as u64 + 1;
        serde_json::to_writer(&mut text, &e).unwrap();
        text.push(b'\n');
    }
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (dir, path)
}

fn share_event(kind: AuditKind, id: ShareId) -> AuditEvent {
    AuditEvent::new(kind, id)
        .terminal(&"dev".parse().unwrap())
        .principal(&"human:alice".parse().unwrap())
}

fn ends_of(path: &Path) -> Vec<(Uuid, String)> {
    read_events(path)
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.kind == AuditKind::ShareEnded)
        .map(|e| {
            (
                e.correlation_id,
                e.details["cause"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_restart_ends_what_a_crash_left_open_once() {
    let (a, b, c, d) = (
        ShareId::new(),
        ShareId::new(),
        ShareId::new(),
        ShareId::new(),
    );
    let (_dir, path) = crashed_log(&[
        share_event(AuditKind::ShareRequested, a),
        share_event(AuditKind::ShareStarted, a),
        share_event(AuditKind::ShareRequested, b),
        share_event(AuditKind::ShareDenied, b),
        share_event(AuditKind::ShareRequested, c),
        share_event(AuditKind::ShareStarted, c),
        share_event(AuditKind::ShareRevoked, c),
        // Killed in the middle of starting d.
        share_event(AuditKind::ShareRequested, d),
    ]);
    let (sink, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert!(rec.alone);
    assert_eq!((rec.last_seq, rec.ended_shares), (8, 2));
    assert_eq!(sink.next_seq(), 12, "two ends and service.started");
    drop(sink);
    let restarted = RESTARTED.to_owned();
    assert_eq!(ends_of(&path), [(a.0, restarted.clone()), (d.0, restarted)]);
    let events = read_events(&path).unwrap().0;
    let kinds: Vec<_> = events[8..].iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::ShareEnded,
            AuditKind::ShareEnded,
            AuditKind::ServiceStarted,
            AuditKind::ServiceStopped
        ]
    );
    assert_eq!(events[8].terminal.as_ref().unwrap().as_str(), "dev");
    assert_eq!(events[10].correlation_id, events[11].correlation_id);
    // Another restart ends nothing twice.
    let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert_eq!(rec.ended_shares, 0);
    assert_eq!(ends_of(&path).len(), 2);
}

#[test]
fn a_writer_that_is_not_alone_ends_nothing_of_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/audit.jsonl");
    let (mut running, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert!(rec.alone);
    let live = ShareId::new();
    let mut started = share_event(AuditKind::ShareStarted, live);
    started.seq = running.next_seq();
    running.append(&[started]).unwrap();
    // A second termshare on the same log while the first runs.
    let (second, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert!(!rec.alone);
    assert_eq!(rec.ended_shares, 0);
    assert!(ends_of(&path).is_empty(), "the running share is not over");
    drop(second);
    // The first crashes (its lock goes with its file, no service.stopped).
    running.crash();
    let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert!(rec.alone);
    assert_eq!(ends_of(&path), [(live.0, RESTARTED.to_owned())]);
}

#[test]
fn recovery_reads_from_the_last_checkpoint_across_many_blocks() {
    let before = ShareId::new();
    let after = ShareId::new();
    let filler = |n: usize| -> Vec<AuditEvent> {
        (0..n)
            .map(|i| {
                AuditEvent::new(AuditKind::HandoffRequested, ShareId::new())
                    .detail("reason", format!("{i:06} {}", "x".repeat(200)))
            })
            .collect()
    };
    let mut lines = vec![share_event(AuditKind::ShareStarted, before)];
    lines.extend(filler(1000));
    // A checkpoint: nothing before it is open (the line above is, on purpose, to
    // show it is not read).
    lines.push(
        AuditEvent::new(AuditKind::ServiceStarted, Uuid::now_v7()).detail("checkpoint", true),
    );
    lines.extend(filler(500));
    lines.push(share_event(AuditKind::ShareStarted, after));
    // More than a block (64 KiB) of later lines, and a later start that was not
    // alone (not a checkpoint).
    lines.extend(filler(600));
    lines.push(
        AuditEvent::new(AuditKind::ServiceStarted, Uuid::now_v7()).detail("checkpoint", false),
    );
    lines.extend(filler(600));
    let (_dir, path) = crashed_log(&lines);
    assert!(std::fs::metadata(&path).unwrap().len() > 4 * 64 * 1024);
    let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
    assert_eq!(rec.ended_shares, 1);
    assert_eq!(ends_of(&path), [(after.0, RESTARTED.to_owned())]);
}
