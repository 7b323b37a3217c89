#!/usr/bin/env bash
# A real share on loopback, start to finish:
#  1. a private tmux server with a session `demo` (your own tmux is never touched);
#  2. `termshare share demo --backend tty-share` with the example policy;
#  3. a participant runs `tty-share LINK` in a tmux of its own and sees what is typed
#     on the host;
#  4. SIGTERM to termshare revokes the share: the participant is disconnected, the
#     worker is reaped, the host session lives on; the audit log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet
bin=$PWD/target/release/termshare

work=$(mktemp -d)
ts_pid=""
cleanup() {
  [ -n "$ts_pid" ] && kill "$ts_pid" 2>/dev/null || true
  tmux -S "$work/p.sock" kill-server 2>/dev/null || true
  tmux -S "$work/host.sock" kill-server 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  local limit=$(( $1 * 100 )); shift
  for _ in $(seq "$limit"); do "$@" && return 0; sleep 0.01; done
  return 1
}

tmux -S "$work/host.sock" -f /dev/null new-session -d -s demo -x 100 -y 30 \
  "env PS1='host\$ ' bash --norc --noprofile -i"
cat > "$work/config.toml" <<CONF
[terminal]
tmux_socket = "$work/host.sock"
[audit]
path = "$work/audit.jsonl"
[service]
# A socket no daemon listens on: the share runs here, in the foreground.
socket = "$work/run/termshare.sock"
runtime_dir = "$work/run"
CONF

echo "== termshare share demo --backend tty-share --ttl 2m --json"
"$bin" --config "$work/config.toml" share demo --backend tty-share --ttl 2m \
  --policy examples/policy.toml --json > "$work/out" &
ts_pid=$!
wait_for 10 grep -q '"link"' "$work/out"
head -1 "$work/out"
link=$(head -1 "$work/out" | sed -n 's/.*"link":"\([^"]*\)".*/\1/p')

echo "== a participant joins: tty-share $link"
tmux -S "$work/p.sock" -f /dev/null new-session -d -s p -x 200 -y 60 "tty-share $link"
participant=$(tmux -S "$work/p.sock" display-message -p -t =p: '#{pane_pid}')
wait_for 10 sh -c "tmux -S '$work/p.sock' capture-pane -p -t =p: | grep -q 'host\\$'"
tmux -S "$work/host.sock" send-keys -t =demo: C-u "echo hello from the host" Enter
wait_for 10 sh -c "tmux -S '$work/p.sock' capture-pane -p -t =p: | grep -q '^hello from the host'"
echo "== what the participant sees:"
tmux -S "$work/p.sock" capture-pane -p -t =p: | sed '/^$/d'

echo "== SIGTERM to termshare: revoke"
kill -TERM "$ts_pid"
wait "$ts_pid"; ts_pid=""
tail -n +2 "$work/out"
if wait_for 5 sh -c "! kill -0 $participant 2>/dev/null"; then
  echo "participant disconnected"
else
  echo "participant still connected!" >&2; exit 1
fi
tmux -S "$work/host.sock" has-session -t =demo && echo "host session 'demo' is alive"
echo "== audit log ($work/audit.jsonl):"
cat "$work/audit.jsonl"
