#!/usr/bin/env bash
# Daemon figures: vm.list with 1,000 VMs and a trivial RPC round trip (Go
# benchmarks against an in-process daemon), and the idle RSS of a real
# daemon process after start-up.
#   bench/daemon.sh
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench 'VMList1000|Ping' -benchtime 50x ./internal/daemon/ | grep Benchmark
go test -run '^$' -bench 'RoundTrip' ./internal/rpc/ | grep Benchmark

tmp=$(mktemp -d)
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/banger" ./cmd/banger
"$tmp/banger" daemon --state-dir "$tmp/state" --socket "$tmp/s.sock" --no-network --log-level error &
pid=$!
for _ in $(seq 1 100); do "$tmp/banger" --socket "$tmp/s.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 1 20); do "$tmp/banger" --socket "$tmp/s.sock" vm ls >/dev/null; done
sleep 2
echo "idle daemon RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")"
