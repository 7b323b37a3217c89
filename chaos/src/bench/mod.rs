//! `termshare-chaos bench`: every claim measured side by side with its baseline in the
//! same run. Prints a table and writes JSON rows
//! `{"name","value","unit","baseline","ratio","goal","met"}`.

mod audit;
mod fixtures;
mod idle;
mod latency;
mod scale;
mod tmate;

use fixtures::*;
use latency::{failure_detection, keystroke_round_trip, revoke_to_gone, start_to_link};
use scale::ttl_accuracy;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::Actor;
use serde_json::json;
use termshare::actors::audit::{AuditLog, MemorySink};
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

pub(super) fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(super) fn pct(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn rss_kib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4.0
}

pub(super) fn ratio_row(name: &'static str, ratio: f64, goal: f64) -> Row {
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

pub(super) fn value_row(
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

/// The benchmark groups, in the order they run.
pub const GROUPS: [&str; 9] = [
    "start",
    "revoke",
    "keystroke",
    "scale",
    "ttl",
    "audit",
    "failure",
    "tmate",
    "idle",
];

/// Run every benchmark (smaller with `quick`), or only the groups in `only` (names
/// from [`GROUPS`]; they still run in the usual order).
pub async fn bench(quick: bool, only: Option<&[String]>) -> Vec<Row> {
    let want = |group: &str| only.is_none_or(|o| o.iter().any(|g| g == group));
    let mut rows = Vec::new();
    let (n_real, n_scale, n_audit) = if quick {
        (5, 1_000, 20_000)
    } else {
        (30, 10_000, 200_000)
    };
    if want("start") {
        eprintln!("bench: start to link ({n_real} rounds)…");
        start_to_link(n_real, &mut rows).await;
    }
    if want("revoke") {
        eprintln!("bench: revoke to participants gone ({n_real} rounds)…");
        revoke_to_gone(n_real, &mut rows).await;
    }
    if want("keystroke") {
        let n_keys = if quick { 40 } else { 400 };
        eprintln!("bench: keystroke round trips ({n_keys} keys each way)…");
        keystroke_round_trip(n_keys, &mut rows).await;
    }
    if want("scale") {
        eprintln!("bench: scale ({n_scale} shares)…");
        scale::scale(n_scale, &mut rows).await;
    }
    if want("ttl") {
        eprintln!("bench: ttl accuracy ({n_scale} shares)…");
        ttl_accuracy(n_scale, &mut rows).await;
    }
    if want("audit") {
        eprintln!("bench: audit ({n_audit} events)…");
        audit::audit_throughput(n_audit, &mut rows).await;
    }
    if want("failure") {
        eprintln!("bench: failure detection ({n_real} rounds)…");
        failure_detection(n_real, &mut rows).await;
    }
    if want("tmate") {
        eprintln!("bench: tmate to its first relay attempt ({n_real} rounds)…");
        tmate::tmate_first_attempt(n_real.min(10), &mut rows).await;
    }
    if want("idle") {
        let window = Duration::from_secs(if quick { 2 } else { 10 });
        eprintln!("bench: idle CPU (200 live tty-share shares, {window:?} windows)…");
        idle::idle_cpu(200, window, &mut rows).await;
    }
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
