//! The fleet through a real PostgreSQL: a private cluster per test (initdb in a temp
//! directory, run by pg_ctl as a non-root user, on a Unix socket only), real daemons
//! as separate processes with separate tmux servers, real tty-share workers.

mod common;

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use common::{pid_alive, wait_until, Daemon, Postgres, Tmux};
use serde_json::{json, Value};

/// A host of the fleet: its tmux server and its daemon.
struct Host {
    tmux: Tmux,
    daemon: Option<Daemon>,
    extra: String,
}

/// The test's own user, allowed to act as the principals the tests share as.
fn policy_text() -> String {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    format!(
        "{}\n[[identity]]\nuser = \"{me}\"\nprincipals = [\"human:tester\", \"agent:x\", \"agent:y\"]\n",
        common::allow_all(&["tty-share"], "2h")
    )
}

impl Host {
    fn start(pg: &Postgres, db: &str, host_id: &str, lease: &str) -> Host {
        let tmux = Tmux::new("work");
        let extra = format!(
            "[limits]\nper_terminal = 4\n[fleet]\ndatabase = \"{}\"\nhost_id = \"{host_id}\"\nlease = \"{lease}\"\n",
            pg.url(db)
        );
        let mut host = Host {
            tmux,
            daemon: None,
            extra,
        };
        host.restart();
        host
    }

    /// Start (again) the daemon, with the same config, log and socket, and wait
    /// until the fleet sees it live.
    fn restart(&mut self) {
        self.restart_offline();
        let host_id = self.host_id();
        let registered = wait_until(Duration::from_secs(10), || {
            let (code, out, _) = self.fleet(&["list", "--host", &host_id]);
            code == 0
                && out
                    .lines()
                    .any(|l| l.starts_with(&format!("{host_id} ")) && l.contains(" live "))
        });
        assert!(registered.is_some(), "{host_id} never showed as live");
    }

    /// Start (again) the daemon without waiting for the database (it may be away).
    fn restart_offline(&mut self) {
        let policy = self.tmux.dir.path().join("policy.toml");
        std::fs::write(&policy, policy_text()).unwrap();
        self.daemon = Some(Daemon::start_with_policy(&self.tmux, &policy, &self.extra));
    }

    fn host_id(&self) -> String {
        let at = self.extra.find("host_id = \"").unwrap() + "host_id = \"".len();
        self.extra[at..].split('"').next().unwrap().to_owned()
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// Share the host's terminal as `principal`: (share id, worker pid).
    fn share(&self, principal: &str) -> (String, i32) {
        let v = self.daemon().json(&[
            "share",
            "work",
            "--backend",
            "tty-share",
            "--ttl",
            "30m",
            "--as",
            principal,
            "--daemon",
        ]);
        (
            v["share_id"].as_str().unwrap().to_owned(),
            v["worker_pid"].as_i64().unwrap() as i32,
        )
    }

    /// `termshare fleet ARGS` with this host's config: (exit code, stdout, stderr).
    fn fleet(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["fleet"];
        full.extend_from_slice(args);
        self.daemon().run(&full)
    }

    /// `fleet list --json`: one object per share.
    fn fleet_list(&self) -> Vec<Value> {
        let (code, out, err) = self.fleet(&["list", "--json"]);
        assert_eq!(code, 0, "fleet list: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The last seq of the local log.
    fn last_seq(&self) -> i64 {
        self.tmux
            .audit_all()
            .last()
            .and_then(|e| e["seq"].as_i64())
            .unwrap()
    }
}

#[test]
fn two_hosts_one_database_list_shows_both_and_revoke_by_principal_ends_only_its_shares() {
    let pg = Postgres::start();
    pg.create_database("two");
    let a = Host::start(&pg, "two", "host-a", "10s");
    let b = Host::start(&pg, "two", "host-b", "10s");
    let (ax, ax_pid) = a.share("agent:x");
    let (ah, ah_pid) = a.share("human:tester");
    let (bx, bx_pid) = b.share("agent:x");
    let (by, by_pid) = b.share("agent:y");

    // Both hosts' shares, seen from either host.
    let seen = wait_until(Duration::from_secs(10), || a.fleet_list().len() == 4);
    assert!(seen.is_some(), "fleet list: {:?}", a.fleet_list());
    let list = b.fleet_list();
    for (host, id, principal) in [
        ("host-a", &ax, "agent:x"),
        ("host-a", &ah, "human:tester"),
        ("host-b", &bx, "agent:x"),
        ("host-b", &by, "agent:y"),
    ] {
        let row = list
            .iter()
            .find(|s| s["share_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in {list:?}"));
        assert_eq!(row["host_id"], host);
        assert_eq!(row["principal"], principal);
        assert_eq!(row["state"], "active");
    }
    // Filters.
    let (code, out, _) = a.fleet(&["list", "--json", "--principal", "agent:x"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out, _) = a.fleet(&[
        "list",
        "--json",
        "--host",
        "host-b",
        "--backend",
        "tty-share",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");

    // The order: both agent:x shares, on both hosts, within the revoke deadline.
    let ordered = Instant::now();
    let (code, out, err) = a.fleet(&["revoke", "--principal", "agent:x", "--json"]);
    let took = ordered.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    let outcomes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2, "{out}");
    let order_id = outcomes[0]["order_id"].as_str().unwrap().to_owned();
    for o in &outcomes {
        assert_eq!(o["outcome"], "revoked", "{o}");
        assert_eq!(o["order_id"], order_id.as_str());
        assert_eq!(o["detail"]["deadline_met"], true, "{o}");
        assert!(o["detail"]["elapsed_ms"].as_f64().unwrap() > 0.0, "{o}");
        assert_eq!(o["detail"]["participants_after"], 0, "{o}");
    }
    assert!(took < Duration::from_secs(5), "fleet revoke took {took:?}");
    eprintln!("measured: fleet revoke of 2 shares on 2 hosts, command start to exit: {took:?}");
    assert!(
        !pid_alive(ax_pid) && !pid_alive(bx_pid),
        "agent:x workers still run"
    );
    assert!(
        pid_alive(ah_pid) && pid_alive(by_pid),
        "other shares' workers were stopped"
    );

    // share.revoked in both local logs, naming the order and the database role.
    for (host, id) in [(&a, &ax), (&b, &bx)] {
        let revoked: Vec<Value> = host
            .tmux
            .audit()
            .into_iter()
            .filter(|e| e["kind"] == "share.revoked")
            .collect();
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0]["correlation_id"], id.as_str());
        assert_eq!(revoked[0]["details"]["fleet_order"], order_id.as_str());
        assert_eq!(revoked[0]["details"]["by"], "fleet:termshare");
    }
    // ... and in the database, shipped.
    let shipped = wait_until(Duration::from_secs(10), || {
        pg.psql(
            "two",
            &format!(
                "SELECT string_agg(host_id, ',' ORDER BY host_id) FROM termshare.audit_events \
                 WHERE kind = 'share.revoked' AND event -> 'details' ->> 'fleet_order' = '{order_id}'"
            ),
        ) == "host-a,host-b"
    });
    assert!(
        shipped.is_some(),
        "share.revoked not shipped from both hosts"
    );
    // fleet audit finds them, with host_id on each.
    let (code, out, err) = a.fleet(&["audit", "--kind", "revoked", "--json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut hosts: Vec<&str> = events
        .iter()
        .map(|e| e["host_id"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["host-a", "host-b"], "{out}");
    let (code, out, _) = a.fleet(&["audit", "--host", "host-b", "--share", &bx, "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().count() >= 3,
        "requested, started, revoked: {out}"
    );
    assert!(
        out.lines().all(|l| l.contains("\"host_id\":\"host-b\"")),
        "{out}"
    );

    // The view drops them; the others stay.
    let gone = wait_until(Duration::from_secs(5), || {
        let ids: Vec<String> = a
            .fleet_list()
            .iter()
            .map(|s| s["share_id"].as_str().unwrap().to_owned())
            .collect();
        ids.len() == 2 && ids.contains(&ah) && ids.contains(&by)
    });
    assert!(gone.is_some(), "{:?}", a.fleet_list());

    // A second order matching nothing: every host answers, nothing is revoked.
    let (code, out, err) = b.fleet(&["revoke", "--principal", "agent:x"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("host-a") && out.contains("no matching shares"),
        "{out}"
    );
    assert!(pid_alive(ah_pid) && pid_alive(by_pid));
}

#[test]
fn a_database_outage_during_a_burst_stalls_nothing_and_loses_nothing() {
    let pg = Postgres::start();
    pg.create_database("burst");
    let mut hosts = [
        Host::start(&pg, "burst", "burst-1", "10s"),
        Host::start(&pg, "burst", "burst-2", "10s"),
    ];
    let shares: Vec<String> = hosts.iter().map(|h| h.share("human:tester").0).collect();
    let mut conns: Vec<Conn> = hosts
        .iter()
        .map(|h| Conn::open(&h.daemon().socket))
        .collect();
    let mut slowest = Duration::ZERO;
    let mut extend = |conns: &mut Vec<Conn>, i: usize, n: usize| {
        let t = Instant::now();
        let reply = conns[i].call(&json!({
            "v": 1, "id": n, "cmd": "extend", "share_id": shares[i], "by": "1s"
        }));
        slowest = slowest.max(t.elapsed());
        assert_eq!(reply["ok"], true, "action {n} on host {i}: {reply}");
    };
    // 1,000 audited actions, 500 per host; the database goes away after 200.
    for n in 0..1000 {
        if n == 200 {
            pg.stop();
        }
        extend(&mut conns, n % 2, n);
    }
    // While it is down: one host restarts (its shipper resumes from the database's
    // shipped seq when it is back).
    drop(conns);
    hosts[0].daemon.take().unwrap().stop();
    hosts[0].restart_offline();
    // status says the database is away, and the host holds no lease.
    let status = |h: &Host| -> Value {
        let (code, out, err) = h.daemon().run(&["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.lines().next().unwrap()).unwrap()
    };
    let away = wait_until(Duration::from_secs(10), || {
        let s = status(&hosts[0]);
        s["fleet"]["shipper_error"].is_string() && s["fleet"]["agent_error"].is_string()
    });
    assert!(away.is_some(), "{}", status(&hosts[0]));
    assert_eq!(status(&hosts[0])["fleet"]["lease_held"], false);
    pg.start_again();
    eprintln!(
        "measured: slowest of 1,000 actions with the database stopped after 200: {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a local action took {slowest:?} while the database was away"
    );

    // Every event of both hosts, exactly once: (host, seq) from 1 to the log's last.
    for host in &hosts {
        let id = host.daemon().config.clone();
        let host_id = host.host_id();
        let host_id = host_id.as_str();
        let complete = wait_until(Duration::from_secs(20), || {
            let last = host.last_seq();
            pg.psql(
                "burst",
                // (host_id, seq) is the key, so no duplicates; N rows from 1 to N: no gaps.
                &format!(
                    "SELECT count(*) || ',' || coalesce(min(seq), 0) || ',' || coalesce(max(seq), 0) \
                     FROM termshare.audit_events WHERE host_id = '{host_id}'"
                ),
            ) == format!("{last},1,{last}")
        });
        assert!(
            complete.is_some(),
            "{host_id} ({}): local last seq {}, database {}",
            id.display(),
            host.last_seq(),
            pg.psql(
                "burst",
                &format!("SELECT count(*), min(seq), max(seq) FROM termshare.audit_events WHERE host_id = '{host_id}'")
            )
        );
        // The lines are the local log's, byte for byte as JSON.
        let local: Vec<Value> = host.tmux.audit_all();
        let remote = pg.psql(
            "burst",
            &format!("SELECT event::text FROM termshare.audit_events WHERE host_id = '{host_id}' ORDER BY seq"),
        );
        let remote: Vec<Value> = remote
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            local, remote,
            "{host_id}: the database's events differ from the log's"
        );
        let caught_up = wait_until(Duration::from_secs(5), || {
            let s = status(host);
            s["fleet"]["lag_events"] == 0
                && s["fleet"]["shipper_error"].is_null()
                && s["fleet"]["lease_held"] == true
        });
        assert!(caught_up.is_some(), "{}", status(host));
    }
    let extended = hosts[1]
        .tmux
        .audit()
        .iter()
        .filter(|e| e["kind"] == "share.extended")
        .count();
    assert_eq!(extended, 500);
}

#[test]
fn a_killed_daemon_shows_as_unreachable_within_its_lease() {
    let pg = Postgres::start();
    pg.create_database("lease");
    let mut dead = Host::start(&pg, "lease", "doomed", "2s");
    let watcher = Host::start(&pg, "lease", "watcher", "2s");
    let (id, worker) = dead.share("agent:x");
    let live = wait_until(Duration::from_secs(10), || {
        watcher
            .fleet_list()
            .iter()
            .any(|s| s["share_id"] == id.as_str() && s["state"] == "active")
    });
    assert!(live.is_some());
    let mut daemon = dead.daemon.take().unwrap();
    daemon.cli.signal(libc::SIGKILL);
    let killed = Instant::now();
    daemon.cli.child.wait().unwrap();
    let lapsed = wait_until(Duration::from_secs(10), || {
        watcher
            .fleet_list()
            .iter()
            .any(|s| s["share_id"] == id.as_str() && s["state"] == "unreachable")
    });
    let after = killed.elapsed();
    eprintln!("measured: kill -9 to `unreachable` in fleet list (lease 2 s): {after:?}");
    assert!(lapsed.is_some(), "{:?}", watcher.fleet_list());
    // The lease is 2 s (renewed every 0.67 s); each look is a `fleet list` process.
    assert!(
        after < Duration::from_secs(3),
        "shown unreachable after {after:?}"
    );
    let (code, out, _) = watcher.fleet(&["list"]);
    assert_eq!(code, 0);
    let doomed_line = out.lines().find(|l| l.starts_with("doomed ")).unwrap();
    assert!(doomed_line.contains("unreachable"), "{out}");
    let watcher_line = out.lines().find(|l| l.starts_with("watcher ")).unwrap();
    assert!(watcher_line.contains("live"), "{out}");
    // The worker did not outlive its daemon.
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(worker)).is_some(),
        "worker {worker} outlived a killed daemon"
    );
    // Back: the host is live again and its old share is gone from the view.
    dead.restart();
    let back = wait_until(Duration::from_secs(10), || {
        let (_, out, _) = watcher.fleet(&["list"]);
        out.lines()
            .any(|l| l.starts_with("doomed ") && l.contains("live"))
            && !out.contains(&id)
    });
    assert!(back.is_some(), "{}", watcher.fleet(&["list"]).1);
}

#[test]
fn an_order_made_while_a_host_was_cut_off_is_carried_out_when_it_reconnects() {
    let pg = Postgres::start();
    pg.create_database("catchup");
    let away = Host::start(&pg, "catchup", "away", "10s");
    let present = Host::start(&pg, "catchup", "present", "10s");
    let (away_share, away_worker) = away.share("agent:x");
    let (_, present_worker) = present.share("agent:x");
    assert!(wait_until(Duration::from_secs(10), || present.fleet_list().len() == 2).is_some());

    // Cut "away" off: its daemon paused, its connections ended by the database, so
    // no notification can reach it.
    let pid = away.daemon().cli.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let cut = pg.psql(
        "catchup",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name IN ('termshare agent away', 'termshare shipper away')",
    );
    assert_eq!(cut, "2", "the agent's and the shipper's connections");
    let (code, out, err) = present.fleet(&[
        "revoke",
        "--principal",
        "agent:x",
        "--timeout",
        "1s",
        "--json",
    ]);
    assert_eq!(code, 10, "a host did not answer: {out}{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["host_id"] == "present" && l["outcome"] == "revoked"));
    assert!(lines
        .iter()
        .any(|l| l["host_id"] == "away" && l["outcome"] == "no_answer"));
    let order_id = lines[0]["order_id"].as_str().unwrap().to_owned();
    assert!(!pid_alive(present_worker));
    assert!(pid_alive(away_worker), "a paused daemon revoked");

    // Back: it reconnects, reads the order it missed, and carries it out.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let done = wait_until(Duration::from_secs(15), || !pid_alive(away_worker));
    assert!(done.is_some(), "the missed order was not carried out");
    let recorded = wait_until(Duration::from_secs(10), || {
        pg.psql(
            "catchup",
            &format!(
                "SELECT o.outcome || ',' || a.matched FROM termshare.revoke_outcomes o \
                 JOIN termshare.revoke_acks a USING (order_id, host_id) \
                 WHERE o.order_id = '{order_id}' AND o.host_id = 'away'"
            ),
        ) == "revoked,1"
    });
    assert!(recorded.is_some());
    let revoked: Vec<Value> = away
        .tmux
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "share.revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["correlation_id"], away_share.as_str());
    assert_eq!(revoked[0]["details"]["fleet_order"], order_id.as_str());
}

#[test]
fn a_second_daemon_under_a_host_id_in_use_is_refused_not_merged() {
    let pg = Postgres::start();
    pg.create_database("clone");
    let first = Host::start(&pg, "clone", "same", "10s");
    first.share("agent:x");
    // A clone (another log, the same machine id) starts while the first runs.
    let mut second = Host {
        tmux: Tmux::new("work"),
        daemon: None,
        extra: first.extra.clone(),
    };
    second.restart_offline();
    second.share("agent:y");
    let refused = wait_until(Duration::from_secs(10), || {
        let (_, out, _) = second.daemon().run(&["status", "--json"]);
        let s: Value = serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap();
        s["fleet"]["agent_error"]
            .as_str()
            .is_some_and(|e| e.contains("held by another live daemon"))
    });
    assert!(refused.is_some(), "the clone took the host id");
    // Nothing of the clone's log reached the database: it holds exactly the first's.
    let first_done = wait_until(Duration::from_secs(10), || {
        pg.psql(
            "clone",
            "SELECT count(*) FROM termshare.audit_events WHERE host_id = 'same'",
        ) == first.last_seq().to_string()
    });
    assert!(first_done.is_some());
    let remote = pg.psql(
        "clone",
        "SELECT event::text FROM termshare.audit_events WHERE host_id = 'same' ORDER BY seq",
    );
    let remote: Vec<Value> = remote
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        remote,
        first.tmux.audit_all(),
        "the clone's events were merged"
    );
    let listed: Vec<String> = first
        .fleet_list()
        .iter()
        .map(|s| s["principal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        ["agent:x"],
        "the clone's share is not the first's to show"
    );
}

/// The README's grants, as it prints them.
fn readme_grants() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find("CREATE ROLE termshare_host")
        .expect("README's grants");
    let start = readme[..at].rfind("```sql\n").unwrap() + "```sql\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

#[test]
fn who_may_order_a_fleet_revoke_is_the_databases_grants_as_the_readme_gives_them() {
    let pg = Postgres::start();
    pg.create_database("roles");
    // A DBA applies the schema and the README's grants; the daemon is no superuser.
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0001_fleet.sql"
    ))
    .unwrap();
    pg.psql("roles", &schema);
    pg.psql("roles", &readme_grants());
    let mut host = Host {
        tmux: Tmux::new("work"),
        daemon: None,
        extra: format!(
            "[limits]\nper_terminal = 4\n[fleet]\ndatabase = \"{}\"\nhost_id = \"roles-1\"\nlease = \"10s\"\n",
            pg.url_as("roles", "termshare_host")
        ),
    };
    host.restart();
    let (share, worker) = host.share("agent:x");
    assert!(wait_until(Duration::from_secs(10), || host.fleet_list().len() == 1).is_some());
    assert!(
        wait_until(Duration::from_secs(10), || {
            pg.psql(
                "roles",
                "SELECT shipped_seq > 0 FROM termshare.hosts WHERE host_id = 'roles-1'",
            ) == "t"
        })
        .is_some(),
        "the host role ships"
    );

    // A reader lists, and may not order.
    let reader = pg.url_as("roles", "fleet_reader");
    let (code, out, _) = host.fleet(&["list", "--json", "--database", &reader]);
    assert_eq!(code, 0, "a reader can list");
    assert_eq!(out.lines().count(), 1);
    // The same role through a libpq service file.
    let services = host.tmux.dir.path().join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "[other]\nuser=nobody\n\n[fleet]\n{}\n",
            reader.replace(' ', "\n")
        ),
    )
    .unwrap();
    let config = host.daemon().config.to_str().unwrap().to_owned();
    let mut cli = common::Cli::spawn_with_env(
        &[
            "--config",
            &config,
            "fleet",
            "list",
            "--json",
            "--database",
            "service=fleet",
        ],
        None,
        &[("PGSERVICEFILE", services.to_str().unwrap())],
    );
    let (status, out, err) = cli.finish();
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().count(), 1);
    let (code, _, err) = host.fleet(&["revoke", "--principal", "agent:x", "--database", &reader]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("permission denied for table revoke_orders"),
        "{err}"
    );
    assert!(pid_alive(worker), "a refused order revoked a share");
    assert_eq!(
        pg.psql("roles", "SELECT count(*) FROM termshare.revoke_orders"),
        "0"
    );
    // The host role may not order either.
    let (code, _, err) = host.fleet(&[
        "revoke",
        "--principal",
        "agent:x",
        "--database",
        &pg.url_as("roles", "termshare_host"),
    ]);
    assert_eq!(code, 3, "{err}");

    // A revoker may; the database, not the client, says who ordered.
    let revoker = pg.url_as("roles", "fleet_revoker");
    let (code, out, err) = host.fleet(&[
        "revoke",
        "--share",
        &share,
        "--database",
        &revoker,
        "--reason",
        "drill",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("(by fleet_revoker)") && out.contains("revoked in"),
        "{out}"
    );
    assert!(!pid_alive(worker));
    let revoked = host
        .tmux
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.revoked")
        .unwrap();
    assert_eq!(revoked["details"]["by"], "fleet:fleet_revoker");
    assert_eq!(
        pg.psql(
            "roles",
            "SELECT ordered_by || ',' || reason FROM termshare.revoke_orders"
        ),
        "fleet_revoker,drill"
    );

    // Bad input is refused before anything is sent.
    for (args, what) in [
        (vec!["revoke"], "name what to revoke"),
        (vec!["revoke", "--principal", "root"], "principal"),
        (vec!["revoke", "--host", "a b"], "--host"),
        (vec!["revoke", "--share", "nope"], "--share"),
        (vec!["audit", "--since", "yesterday-ish"], "yesterday-ish"),
        (vec!["audit", "--limit", "0"], "--limit"),
    ] {
        let (code, _, err) = host.fleet(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
    assert_eq!(
        pg.psql("roles", "SELECT count(*) FROM termshare.revoke_orders"),
        "1"
    );
    // An unreachable database is its own exit code, and the string's password is
    // never printed.
    let (code, _, err) = host.fleet(&[
        "list",
        "--database",
        "host=/nonexistent port=1 user=u password=hunter2 dbname=x",
    ]);
    assert_eq!(code, 12, "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = host.fleet(&["list", "--database", "host=x password='hunter2"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// A raw protocol connection for the burst (a CLI process per action would measure
/// process starts, not the daemon).
struct Conn {
    write: std::os::unix::net::UnixStream,
    read: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl Conn {
    fn open(socket: &std::path::Path) -> Conn {
        let s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            write: s.try_clone().unwrap(),
            read: std::io::BufReader::new(s),
        }
    }

    fn call(&mut self, request: &Value) -> Value {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        self.write.write_all(&line).unwrap();
        let mut reply = String::new();
        self.read.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

#[test]
fn tls_to_the_database_is_checked_as_libpq_sslmode_says() {
    let (pg, tls) = Postgres::start_tls();
    pg.create_database("tls");
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0001_fleet.sql"
    ))
    .unwrap();
    pg.psql("tls", &schema);
    let url = |host: &str, rest: &str| {
        format!(
            "host={host} port={} user=termshare dbname=tls {rest}",
            tls.port
        )
    };
    let ca = tls.ca.display().to_string();
    let other = tls.other_ca.display().to_string();
    let tmux = Tmux::new("work");
    let list = |database: &str| {
        let config = tmux.config("");
        let mut cli = common::Cli::spawn(
            &[
                "--config",
                config.to_str().unwrap(),
                "fleet",
                "list",
                "--database",
                database,
            ],
            None,
        );
        let (status, _, err) = cli.finish();
        (status.code().unwrap_or(-1), err)
    };
    // The server takes only TLS on its TCP port: each success below is a TLS one.
    for ok in [
        url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        url("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
        url("127.0.0.1", "sslmode=require"),
        url("127.0.0.1", ""),
        format!(
            "postgresql://termshare@localhost:{}/tls?sslmode=verify-full&sslrootcert={}",
            tls.port,
            ca.replace('/', "%2F")
        ),
    ] {
        let (code, err) = list(&ok);
        assert_eq!(code, 0, "{ok}: {err}");
    }
    for (refused, why) in [
        // The certificate names localhost, not the address.
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            "certificate",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-full sslrootcert={other}"),
            ),
            "certificate",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-ca sslrootcert={other}"),
            ),
            "certificate",
        ),
        (url("localhost", "sslmode=disable"), "no encryption"),
    ] {
        let (code, err) = list(&refused);
        assert_eq!(code, 12, "{refused}: {err}");
        assert!(err.to_lowercase().contains(why), "{refused}: {err}");
    }
    // A daemon ships over verify-full.
    let extra = format!(
        "[fleet]\ndatabase = \"{}\"\nhost_id = \"tls-1\"\n",
        url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}")
        )
    );
    let policy = tmux.dir.path().join("policy.toml");
    std::fs::write(&policy, policy_text()).unwrap();
    let _daemon = Daemon::start_with_policy(&tmux, &policy, &extra);
    let shipped = wait_until(Duration::from_secs(10), || {
        pg.psql(
            "tls",
            "SELECT count(*) > 0 FROM termshare.audit_events WHERE host_id = 'tls-1'",
        ) == "t"
            && pg.psql(
                "tls",
                "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name LIKE 'termshare % tls-1'",
            ) == "t"
    });
    assert!(shipped.is_some(), "the daemon did not ship over TLS");
}
