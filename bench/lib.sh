#!/usr/bin/env bash
# Shared set-up for benchmarks that need a real daemon: a network namespace,
# a daemon inside it with a private state dir, and the cached default image.
# Source it; call bench_setup, then use $BANGER (a function) and bench_ns.
set -euo pipefail

BENCH_ROOT=$(mktemp -d /tmp/bgbench.XXXXXX)
BENCH_NS=bgbench-$$
BENCH_SOCK=$BENCH_ROOT/banger.sock
BENCH_CACHE=${BANGER_IMAGE_CACHE:-/var/cache/banger-test/images}
BENCH_BIN=$BENCH_ROOT/banger
DAEMON_PID=

banger() { "$BENCH_BIN" --socket "$BENCH_SOCK" "$@"; }
bench_ns() { ip netns exec "$BENCH_NS" "$@"; }

bench_cleanup() {
  set +e
  if [ -n "$DAEMON_PID" ]; then
    for vm in $(banger vm ls --json 2>/dev/null | sed -n 's/^ *"name": "\(.*\)",$/\1/p'); do
      banger vm rm --force "$vm" >/dev/null 2>&1
    done
    kill -INT "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  for pid in $(ip netns pids "$BENCH_NS" 2>/dev/null); do kill -9 "$pid"; done
  ip netns delete "$BENCH_NS" 2>/dev/null
  rm -rf "$BENCH_ROOT"
}

bench_setup() {
  [ "$(id -u)" -eq 0 ] || { echo "benchmarks need root" >&2; exit 1; }
  trap bench_cleanup EXIT
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && go build -o "$BENCH_BIN" ./cmd/banger)
  # Build (or find cached) the image from the host namespace: the bench
  # namespace cannot reach the Debian mirror. --no-network: no bridge here.
  "$BENCH_BIN" daemon --state-dir "$BENCH_ROOT/build-state" --socket "$BENCH_ROOT/build.sock" \
    --image-cache "$BENCH_CACHE" --no-network --log-level warn >"$BENCH_ROOT/build.log" 2>&1 &
  local builder=$!
  for _ in $(seq 1 200); do "$BENCH_BIN" --socket "$BENCH_ROOT/build.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  "$BENCH_BIN" --socket "$BENCH_ROOT/build.sock" image build default >/dev/null
  kill -INT "$builder"; wait "$builder" || true
  ip netns add "$BENCH_NS"
  ip -n "$BENCH_NS" link set lo up
  ip netns exec "$BENCH_NS" "$BENCH_BIN" daemon --state-dir "$BENCH_ROOT/state" --socket "$BENCH_SOCK" \
    --image-cache "$BENCH_CACHE" --log-level warn >"$BENCH_ROOT/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1 200); do banger version >/dev/null 2>&1 && break; sleep 0.1; done
  banger image build default >/dev/null
}

# now_ms prints a monotonic-enough wall clock in milliseconds.
now_ms() { date +%s%3N; }
