#!/usr/bin/env bash
# Installs the Debian packages termshare runs and tests against (tmux, tty-share,
# tmate), if any is missing. Needs root or sudo. Rust itself comes from rustup.
set -euo pipefail
missing=()
for p in tmux tty-share tmate; do
  command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
# The multi-user tests (run as root) add users and end their processes.
command -v pkill >/dev/null 2>&1 || missing+=(procps)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
# Test stand-ins (a tty-share that stops serving) are python3 scripts; a real sshd
# plays a tmate relay whose host key is not the configured one.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
# Recordings are checked with asciinema itself (`asciinema cat`), run under `script`.
command -v asciinema >/dev/null 2>&1 || missing+=(asciinema)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
# A real browser participant (headless Chromium, driven over its DevTools protocol).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The fleet tests run a private PostgreSQL cluster (initdb, pg_ctl) and psql.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# ... and, for TLS to it, a test CA and certificate made with openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tmux tty-share tmate procps passwd python3 openssh-server openssh-client asciinema bsdutils chromium postgresql postgresql-client openssl >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (1.85 or newer) with rustup first" >&2
  exit 1
fi
