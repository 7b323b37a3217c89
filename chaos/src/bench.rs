//! `termshare-chaos bench`: every claim measured side by side with its baseline in the
//! same run. Prints a table and writes JSON rows
//! `{"name","value","unit","baseline","ratio","goal","met"}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::Actor;
use serde_json::json;
use termshare::actors::audit::{record_acked, AuditActor, AuditArgs, AuditHealth, MemorySink};
use termshare::actors::testing::{AllowAll, FakeBackend, FakeHost, FakeWorld};
use termshare::actors::{
    AccessMode, AuditEvent, AuditKind, AuditSink, BackendName, ServiceDeps, Settings, ShareId,
    ShareRequest, ShareService,
};
use termshare::audit_file::JsonlFileSink;
use termshare::config::{Config, Durability};
use termshare::policy::Policy;
use termshare::Termshare;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

impl Row {
    pub fn json(&self) -> serde_json::Value {
        json!({"name": self.name, "value": round(self.value), "unit": self.unit,
               "baseline": self.baseline.map(round), "ratio": self.ratio.map(round),
               "goal": self.goal, "met": self.met})
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4.0
}

/// A private tmux server with a session `b` whose shell shows `host$`.
struct Host {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "b",
                "-x",
                "100",
                "-y",
                "30",
            ])
            .arg("env PS1='host$ ' sh")
            .env_remove("TMUX")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "tmux failed");
        Host { dir, socket }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// `tty-share LINK` in a tmux server of its own, big enough for the shared screen.
struct Participant {
    socket: PathBuf,
    pid: i32,
    _dir: tempfile::TempDir,
}

impl Participant {
    fn join(link: &str) -> Participant {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("p.sock");
        let tmux = |args: &[&str]| {
            Command::new("tmux")
                .arg("-S")
                .arg(&socket)
                .args(args)
                .env_remove("TMUX")
                .output()
                .unwrap()
        };
        tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "p",
            "-x",
            "200",
            "-y",
            "60",
            &format!("tty-share {link}"),
        ]);
        let pid = String::from_utf8_lossy(
            &tmux(&["display-message", "-p", "-t", "=p:", "#{pane_pid}"]).stdout,
        )
        .trim()
        .parse()
        .unwrap_or(0);
        let p = Participant {
            socket: socket.clone(),
            pid,
            _dir: dir,
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            let screen = tmux(&["capture-pane", "-p", "-t", "=p:"]);
            if String::from_utf8_lossy(&screen.stdout).contains("host$") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn alive(&self) -> bool {
        termshare::process::process_state(self.pid as u32).is_some_and(|s| s != 'Z')
    }

    /// Milliseconds from `t0` until the participant's process is gone (polled at 1 ms).
    fn gone_after(&self, t0: Instant) -> f64 {
        while self.alive() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(500));
        }
        ms(t0.elapsed())
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// The same tty-share command termshare runs, spawned plainly and read until its URL.
async fn direct_tty_share(host: &Host) -> (tokio::process::Child, String, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("tty-share")
        .args([
            "--headless",
            "--no-wait",
            "--headless-cols",
            "100",
            "--headless-rows",
            "30",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--command",
            "tmux",
        ])
        .args([
            "--args",
            &format!("-S {} attach-session -t b", host.socket.display()),
        ])
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("tty-share");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut link = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some(u) = termshare::backends::tty_share::parse_link(&l) {
            link = u;
            break;
        }
    }
    let took = t0.elapsed();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, link, took)
}

async fn real_termshare(host: &Host) -> Termshare {
    let config = Config::parse(&format!(
        "[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[service]\nruntime_dir = \"{}\"\n",
        host.socket.display(),
        host.dir.path().join("audit.jsonl").display(),
        host.dir.path().join("run").display()
    ))
    .unwrap();
    let policy = Policy::parse(
        "[[rule]]\nid=\"bench\"\neffect=\"allow\"\nprincipals=[\"human:*\"]\nterminals=[\"*\"]\nbackends=[\"tty-share\"]\naccess=[\"read-only\",\"read-write\"]\n",
    )
    .unwrap();
    Termshare::start(&config, policy).await.unwrap()
}

fn request(terminal: &str, backend: &str, ttl: Duration) -> ShareRequest {
    ShareRequest {
        terminal: terminal.parse().unwrap(),
        backend: BackendName::new(backend),
        access: AccessMode::ReadWrite,
        caller: "human:bench"
            .parse::<termshare_actors::Principal>()
            .unwrap()
            .into(),
        ttl: Some(ttl),
        grace: Some(vec![]),
    }
}

fn ratio_row(name: &'static str, ratio: f64, goal: f64) -> Row {
    Row {
        name,
        value: ratio,
        unit: "x",
        baseline: Some(1.0),
        ratio: Some(ratio),
        goal: format!("<= {goal}"),
        met: Some(ratio <= goal),
    }
}

fn value_row(
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
    goal: Option<(f64, bool)>,
) -> Row {
    // goal: (limit, lower_is_better)
    Row {
        name,
        value,
        unit,
        baseline,
        ratio: baseline.map(|b| value / b),
        goal: match goal {
            Some((g, true)) => format!("<= {g}"),
            Some((g, false)) => format!(">= {g}"),
            None => "-".into(),
        },
        met: goal.map(|(g, lower)| if lower { value <= g } else { value >= g }),
    }
}

/// 1. Start to link with tty-share: termshare vs a plain spawn read to its URL.
async fn start_to_link(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for i in 0..n + 2 {
        let t0 = Instant::now();
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let t = t0.elapsed();
        ts.revoke(
            info.share_id,
            "human:bench"
                .parse::<termshare_actors::Principal>()
                .unwrap(),
        )
        .await
        .unwrap();
        let (mut child, _, d) = direct_tty_share(&host).await;
        let _ = child.kill().await;
        if i >= 2 {
            // The first rounds warm caches for both sides.
            ours.push(ms(t));
            direct.push(ms(d));
        }
    }
    ts.shutdown().await;
    let (p50, b50) = (pct(&ours, 50.0), pct(&direct, 50.0));
    rows.push(value_row(
        "start_to_link_p50_ms",
        p50,
        "ms",
        Some(b50),
        None,
    ));
    rows.push(value_row(
        "start_to_link_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&direct, 99.0)),
        None,
    ));
    rows.push(ratio_row("start_to_link_ratio", p50 / b50, 1.10));
}

/// 2. Revoke to every participant gone: termshare's revoke vs killing tty-share.
async fn revoke_to_gone(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = Arc::new(real_termshare(&host).await);
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let p = Participant::join(&info.links.link);
        // Watch the participant while the revoke runs: the revoke answers only after
        // the reap and the audit write, which come after the participant is gone.
        let t0 = Instant::now();
        let revoking = {
            let ts = ts.clone();
            tokio::spawn(async move {
                ts.revoke(
                    info.share_id,
                    "human:bench"
                        .parse::<termshare_actors::Principal>()
                        .unwrap(),
                )
                .await
            })
        };
        ours.push(tokio::task::block_in_place(|| p.gone_after(t0)));
        revoking.await.unwrap().unwrap();

        let (child, link, _) = direct_tty_share(&host).await;
        let p = Participant::join(&link);
        let pid = child.id().unwrap() as i32;
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        direct.push(tokio::task::block_in_place(|| p.gone_after(t0)));
        drop(child);
    }
    Arc::try_unwrap(ts)
        .ok()
        .expect("no revoke in flight")
        .shutdown()
        .await;
    let (p99, b99) = (pct(&ours, 99.0), pct(&direct, 99.0));
    rows.push(value_row(
        "revoke_to_gone_p50_ms",
        pct(&ours, 50.0),
        "ms",
        Some(pct(&direct, 50.0)),
        None,
    ));
    rows.push(value_row(
        "revoke_to_gone_p99_ms",
        p99,
        "ms",
        Some(b99),
        Some((50.0, true)),
    ));
    rows.push(ratio_row("revoke_to_gone_ratio", p99 / b99, 1.5));
}

/// A sink that counts and drops: the scale runs measure the tree, not event storage.
#[derive(Clone, Default)]
struct CountingSink(Arc<std::sync::atomic::AtomicU64>);

impl AuditSink for CountingSink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        self.0
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn scale_settings() -> Settings {
    Settings {
        per_terminal_limit: 1,
        grace: vec![],
        // Heartbeats off the scale (an hour): this measures the tree's own cost.
        probe_interval: Duration::from_secs(3600),
        heartbeat_timeout: Duration::from_secs(7200),
        link_timeout: Duration::from_secs(60),
        audit_timeout: Duration::from_secs(60),
        revoke_deadline: Duration::from_secs(5),
        ..Settings::default()
    }
}

async fn fake_service(n: usize, sink: Box<dyn AuditSink>) -> (Arc<ShareService>, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let host = FakeHost::with(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let world = Arc::new(FakeWorld::default());
    let mut backend = FakeBackend::new("fake", world);
    backend.link_delay = Duration::ZERO;
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(backend)],
            policy: Arc::new(AllowAll {
                max_ttl: None,
                max_concurrent: None,
                require_join_restriction: false,
            }),
            host: Arc::new(host),
            audit_sink: sink,
            fingerprint_key: termshare::actors::FingerprintKey::random(),
        },
        scale_settings(),
    )
    .await
    .unwrap();
    (Arc::new(svc), names)
}

async fn start_all(svc: &Arc<ShareService>, names: &[String], ttl: Duration) -> Vec<ShareId> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in names {
        let svc = svc.clone();
        let t = t.clone();
        tasks.spawn(async move {
            svc.share(request(&t, "fake", ttl))
                .await
                .map(|i| i.share_id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.push(r.unwrap().expect("share"));
    }
    ids
}

/// 3. Scale with an in-process backend: start, memory, revoke, shutdown.
async fn scale(n: usize, rows: &mut Vec<Row>) {
    // Baseline: the bare minimum the tree needs, three idle ractor actors per share.
    struct Idle;
    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ractor::ActorRef<()>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(3 * n);
    for _ in 0..3 * n {
        idle.push(Actor::spawn(None, Idle, ()).await.unwrap().0);
    }
    let base_start = t0.elapsed().as_secs_f64();
    let base_mem = (rss_kib() - rss0) / n as f64;
    let t0 = Instant::now();
    for a in &idle {
        a.stop(None);
    }
    for a in idle {
        while a.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
    }
    let base_stop = t0.elapsed().as_secs_f64();

    let rss0 = rss_kib();
    let (svc, names) = fake_service(n, Box::new(CountingSink::default())).await;
    let t0 = Instant::now();
    let ids = start_all(&svc, &names, Duration::from_secs(3600)).await;
    let start = t0.elapsed().as_secs_f64();
    let mem = (rss_kib() - rss0) / n as f64;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let svc = svc.clone();
        tasks.spawn(async move {
            svc.revoke(
                id,
                "human:bench"
                    .parse::<termshare_actors::Principal>()
                    .unwrap(),
            )
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("revoke");
    }
    let revoke = t0.elapsed().as_secs_f64();
    start_all(&svc, &names, Duration::from_secs(3600)).await;
    let svc = Arc::try_unwrap(svc).ok().unwrap();
    let t0 = Instant::now();
    let stopped = svc.shutdown().await;
    let shutdown = t0.elapsed().as_secs_f64();
    assert_eq!(stopped.len(), n);
    let k = n / 1000;
    rows.push(value_row(
        "scale_start_10k_s",
        start * 10.0 / k as f64,
        "s",
        Some(base_start * 10.0 / k as f64),
        Some((2.0, true)),
    ));
    rows.push(value_row(
        "scale_mem_per_share_kib",
        mem,
        "KiB",
        Some(base_mem),
        Some((48.0, true)),
    ));
    rows.push(value_row(
        "scale_revoke_10k_s",
        revoke * 10.0 / k as f64,
        "s",
        Some(base_stop * 10.0 / k as f64),
        Some((1.0, true)),
    ));
    rows.push(value_row(
        "scale_shutdown_10k_s",
        shutdown * 10.0 / k as f64,
        "s",
        Some(base_stop * 10.0 / k as f64),
        None,
    ));
}

/// 4. TTL accuracy: shares expiring in the same second; lag from deadline to event.
async fn ttl_accuracy(n: usize, rows: &mut Vec<Row>) {
    let sink = MemorySink::default();
    let (svc, names) = fake_service(n, Box::new(sink.clone())).await;
    // All deadlines land within the same second, spread evenly over it: share i
    // expires at `at + i/n s`.
    let at = SystemTime::now() + Duration::from_secs(4);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in names.clone().into_iter().enumerate() {
        let svc = svc.clone();
        let offset = Duration::from_secs(1) * i as u32 / n as u32;
        tasks.spawn(async move {
            let ttl = (at + offset)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(1));
            svc.share(request(&t, "fake", ttl))
                .await
                .map(|i| (i.share_id, i.expires_at))
        });
    }
    let mut deadlines = std::collections::HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (id, exp) = r.unwrap().expect("share");
        deadlines.insert(id.0, exp);
    }
    // Baseline: bare tokio timers for the same deadlines.
    let mut timers = tokio::task::JoinSet::new();
    let base_at = tokio::time::Instant::now() + Duration::from_secs(2);
    for i in 0..n {
        let due = base_at + Duration::from_secs(1) * i as u32 / n as u32;
        timers.spawn(async move {
            tokio::time::sleep_until(due).await;
            ms(due.elapsed())
        });
    }
    let mut base = Vec::new();
    while let Some(l) = timers.join_next().await {
        base.push(l.unwrap());
    }
    // Wait for every expiry.
    let t0 = Instant::now();
    loop {
        let expired = sink
            .events
            .lock()
            .iter()
            .filter(|e| e.kind == AuditKind::ShareExpired)
            .count();
        if expired >= n || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        // Checked rarely: the count takes the sink's lock, which the writer needs.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lags: Vec<f64> = sink
        .events
        .lock()
        .iter()
        .filter(|e| e.kind == AuditKind::ShareExpired)
        .filter_map(|e| {
            let deadline = deadlines.get(&e.correlation_id)?;
            Some(e.at.duration_since(*deadline).map(ms).unwrap_or(0.0))
        })
        .collect();
    let svc = Arc::try_unwrap(svc).ok().unwrap();
    svc.shutdown().await;
    rows.push(value_row(
        "ttl_lag_p50_ms",
        pct(&lags, 50.0),
        "ms",
        Some(pct(&base, 50.0)),
        None,
    ));
    rows.push(value_row(
        "ttl_lag_p99_ms",
        pct(&lags, 99.0),
        "ms",
        Some(pct(&base, 99.0)),
        Some((50.0, true)),
    ));
}

/// Throughput and ack latency of the durable audit log with `producers` concurrent
/// writers and `max_batch` (1: one fsync per event).
async fn audit_run(
    dir: &Path,
    total: usize,
    producers: usize,
    max_batch: usize,
) -> (f64, Vec<f64>) {
    let path = dir.join(format!("audit-{max_batch}.jsonl"));
    let sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
    let (audit, task) = Actor::spawn(
        None,
        AuditActor,
        AuditArgs {
            sink: Box::new(sink),
            subscribers: tokio::sync::broadcast::channel(16).0,
            health: Arc::new(AuditHealth::default()),
            max_batch,
        },
    )
    .await
    .unwrap();
    let per = total / producers;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let audit = audit.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let e =
                    AuditEvent::new(AuditKind::ShareExtended, ShareId::new()).detail("by_ms", 1000);
                let s = Instant::now();
                record_acked(&audit, e, Duration::from_secs(60))
                    .await
                    .expect("audit");
                lat.push(ms(s.elapsed()));
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat.extend(l.unwrap());
    }
    let rate = (per * producers) as f64 / t0.elapsed().as_secs_f64();
    audit.stop(None);
    let _ = task.await;
    (rate, lat)
}

/// 5. Audit: durable events per second with group commit vs one fsync per event.
async fn audit_throughput(total: usize, rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (rate, lat) = audit_run(dir.path(), total, 1000, 4096).await;
    let (base_rate, base_lat) = audit_run(dir.path(), (total / 50).max(500), 50, 1).await;
    rows.push(value_row(
        "audit_events_per_s",
        rate,
        "events/s",
        Some(base_rate),
        Some((100_000.0, false)),
    ));
    rows.push(value_row(
        "audit_ack_p50_ms",
        pct(&lat, 50.0),
        "ms",
        Some(pct(&base_lat, 50.0)),
        None,
    ));
    rows.push(value_row(
        "audit_ack_p99_ms",
        pct(&lat, 99.0),
        "ms",
        Some(pct(&base_lat, 99.0)),
        Some((10.0, true)),
    ));
}

/// 6. Failure detection: SIGKILL of a worker to its share's `failed` event.
async fn failure_detection(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let mut events = ts.subscribe();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let pgid = ts.live_process_groups()[0];
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        loop {
            let e = events.recv().await.unwrap();
            if e.correlation_id == info.share_id && e.kind == AuditKind::ShareFailed {
                break;
            }
        }
        ours.push(ms(t0.elapsed()));
        // Baseline: the same kill noticed by a plain tokio child wait.
        let (mut child, _, _) = direct_tty_share(&host).await;
        let pid = child.id().unwrap() as i32;
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait().await;
        base.push(ms(t0.elapsed()));
    }
    ts.shutdown().await;
    rows.push(value_row(
        "failure_detect_p50_ms",
        pct(&ours, 50.0),
        "ms",
        Some(pct(&base, 50.0)),
        None,
    ));
    rows.push(value_row(
        "failure_detect_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&base, 99.0)),
        Some((50.0, true)),
    ));
}

/// Keystroke round trips as a participant makes them (a key in, its echo out over
/// tty-share's websocket), through termshare's link front (tty-share in its private
/// namespace) vs straight to a plain tty-share on loopback. Blocks of 20 keys,
/// alternating, so drift hits both sides alike.
async fn keystroke_round_trip(n: usize, rows: &mut Vec<Row>) {
    use crate::keystroke::Keyboard;
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let info = ts
        .share(request("b", "tty-share", Duration::from_secs(600)))
        .await
        .expect("share");
    let (mut plain, plain_link, _) = direct_tty_share(&host).await;
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    let keys = |k: &mut Vec<f64>, took: Duration| k.push(ms(took));
    for _ in 0..n.div_ceil(20) {
        for (link, out) in [(&info.links.link, &mut ours), (&plain_link, &mut direct)] {
            let mut kb = Keyboard::connect(link).await;
            for _ in 0..10 {
                keys(out, kb.round_trip(b"a", b"a").await);
                keys(out, kb.round_trip(b"\x7f", b"").await);
            }
            kb.close().await;
        }
    }
    let _ = plain.kill().await;
    ts.shutdown().await;
    let (p50, b50) = (pct(&ours, 50.0), pct(&direct, 50.0));
    rows.push(value_row(
        "keystroke_rtt_p50_ms",
        p50,
        "ms",
        Some(b50),
        None,
    ));
    rows.push(value_row(
        "keystroke_rtt_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&direct, 99.0)),
        None,
    ));
    rows.push(value_row(
        "front_cost_per_keystroke_us",
        (p50 - b50) * 1000.0,
        "us",
        None,
        None,
    ));
}

/// Run every benchmark (smaller with `quick`).
pub async fn bench(quick: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let (n_real, n_scale, n_audit) = if quick {
        (5, 1_000, 20_000)
    } else {
        (30, 10_000, 200_000)
    };
    eprintln!("bench: start to link ({n_real} rounds)…");
    start_to_link(n_real, &mut rows).await;
    eprintln!("bench: revoke to participants gone ({n_real} rounds)…");
    revoke_to_gone(n_real, &mut rows).await;
    let n_keys = if quick { 40 } else { 400 };
    eprintln!("bench: keystroke round trips ({n_keys} keys each way)…");
    keystroke_round_trip(n_keys, &mut rows).await;
    eprintln!("bench: scale ({n_scale} shares)…");
    scale(n_scale, &mut rows).await;
    eprintln!("bench: ttl accuracy ({n_scale} shares)…");
    ttl_accuracy(n_scale, &mut rows).await;
    eprintln!("bench: audit ({n_audit} events)…");
    audit_throughput(n_audit, &mut rows).await;
    eprintln!("bench: failure detection ({n_real} rounds)…");
    failure_detection(n_real, &mut rows).await;
    rows
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<26} {:>12} {:<9} {:>12} {:>8}  {:<12} met",
        "name", "value", "unit", "baseline", "ratio", "goal"
    );
    for r in rows {
        println!(
            "{:<26} {:>12.3} {:<9} {:>12} {:>8}  {:<12} {}",
            r.name,
            r.value,
            r.unit,
            r.baseline.map_or("-".into(), |b| format!("{b:.3}")),
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.goal,
            match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
        );
    }
}
