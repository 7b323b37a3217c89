#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints, runs
# the library example and the benchmark harness (small), then the tests in three runs:
#   1. termshare (unit and integration tests against real tmux, tty-share, tmate):
#      the production build, no fail points compiled in;
#   2. termshare-actors (the tree under tokio's paused clock; its fail-point tests are
#      binaries of their own);
#   3. termshare-chaos (seeded fault injection, and the spawn path cancelled at each
#      fail point), which builds termshare with fail points.
# Cargo unifies features within one invocation, so the runs are separate: a
# `cargo test --workspace` would test termshare with the chaos crate's fail points in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The library alone (default-features = false) builds, without the crates of the CLI,
# the metrics endpoint and the tty-share link front.
cargo build --quiet -p termshare --no-default-features --lib
if cargo tree -p termshare --no-default-features -e normal --prefix none |
  grep -E '^(clap|hyper|h2|axum|tracing-subscriber|metrics-exporter-prometheus|tokio-postgres|rustls) '; then
  echo "the library without default features pulls in the crates above" >&2
  exit 1
fi
# The library examples must keep running end to end (private tmux, real tty-share):
# embedded in a plain program, and linked under a runtime's ractor supervisor.
cargo run --quiet --example embed
cargo run --quiet --example linked
# The benchmark harness, small sizes, so it cannot rot (full run: BENCHMARKS.md).
cargo run --quiet -p termshare-chaos -- bench --quick
# The fleet tests (tests/fleet.rs) each start a private PostgreSQL cluster from
# these binaries (initdb, pg_ctl; run as `nobody` when this runs as root) on a socket
# in a temp directory, and stop it when they end, passed or failed.
pg_bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bindir" ] || [ ! -x "$pg_bindir/initdb" ]; then
  echo "PostgreSQL's server binaries are missing: apt-get install postgresql" >&2
  exit 1
fi
export TERMSHARE_PG_BINDIR="$pg_bindir"
# Tests that add local users or switch uids (trust, handoff chains across users) are
# #[ignore = "needs root…"] for a normal run; CI runs as root, so it runs them all.
ignored=()
if [ "$(id -u)" -eq 0 ]; then
  ignored=(--include-ignored)
else
  echo "note: not root, so the tests that add local users are not run (see README)" >&2
fi
cargo test -p termshare --all-targets -- "${ignored[@]}"
cargo test -p termshare-actors --all-targets -- "${ignored[@]}"
cargo test -p termshare-chaos --all-targets -- "${ignored[@]}"
# --all-targets leaves out doctests: the embedding guide's example runs here.
cargo test -p termshare -p termshare-actors --doc
