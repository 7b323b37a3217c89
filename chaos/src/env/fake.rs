//! The fake world: in-process backends and host, an in-memory audit sink that fails on
//! demand, and the paused clock.

use super::*;

pub(super) async fn start(parts: Parts) -> Env {
    let Parts {
        mode,
        dir,
        names,
        plan,
        tmux_socket,
        audit_path,
        policy,
    } = parts;
    let world = Arc::new(FakeWorld::default());
    let host = Arc::new(FakeHost::with(
        &names.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    ));
    let sink = FlakySink::default();
    let crash: Crash = {
        let world = world.clone();
        Arc::new(move |share, _| {
            world.crash(share);
        })
    };
    let backends: Vec<Arc<dyn Backend>> = mode
        .backends()
        .iter()
        .map(|name| {
            Arc::new(FaultyBackend {
                inner: Arc::new(FakeBackend::new(name, world.clone())),
                garbage: None,
                silent: None,
                plan: plan.clone(),
                crash: crash.clone(),
            }) as Arc<dyn Backend>
        })
        .collect();
    let settings = Settings {
        default_ttl: Duration::from_secs(600),
        grace: vec![Duration::from_secs(30)],
        per_terminal_limit: 1,
        link_timeout: Duration::from_secs(5),
        revoke_deadline: Duration::from_secs(5),
        terminate_grace: Duration::from_millis(500),
        probe_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let svc = ShareService::start(
        ServiceDeps {
            backends,
            policy: Arc::new(policy),
            host: host.clone(),
            audit_sink: Box::new(sink.clone()),
            fingerprint_key: termshare::actors::FingerprintKey::random(),
        },
        settings.clone(),
    )
    .await
    .expect("service");
    Env {
        mode,
        service: Some(Service::Fake(svc)),
        terminals: names,
        plan,
        settings,
        world: Some(world),
        fake_host: Some(host),
        fake_audit: Some(sink),
        tmux_socket,
        audit_path,
        _dir: dir,
    }
}
