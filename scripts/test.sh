#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints, runs
# the library example, then runs every test of the workspace (unit, paused-clock actor tests, and integration
# tests against real tmux, tty-share and tmate processes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The library example must keep running end to end (private tmux, real tty-share).
cargo run --quiet --example embed
# The benchmark harness, small sizes, so it cannot rot (full run: BENCHMARKS.md).
cargo run --quiet -p termshare-chaos -- bench --quick
cargo test --workspace --all-targets
