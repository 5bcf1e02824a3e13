#!/usr/bin/env bash
# Create-to-SSH-ready with banger versus a raw QEMU boot of the same image,
# with the same accelerator, disks, TAP and kernel command line, measured in
# the same run. Prints each sample and the ratio of the medians.
#
#   sudo bench/boot.sh [RUNS]      (default 3)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
runs=${1:-3}
bench_setup

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

banger_ms=()
raw_ms=()
for i in $(seq 1 "$runs"); do
  t0=$(now_ms)
  banger vm create "b$i" --cpus 2 --memory 1024 >/dev/null
  t1=$(now_ms)
  banger_ms+=($((t1 - t0)))

  # Raw baseline: the exact QEMU command line banger used, run by hand
  # against the same disks once the VM is stopped.
  pid=$(banger vm show "b$i" --json | sed -n 's/^ *"pid": \([0-9]*\),$/\1/p')
  ip=$(banger vm show "b$i" --json | sed -n 's/^ *"ip": "\(.*\)",$/\1/p')
  mapfile -d '' argv < "/proc/$pid/cmdline"
  banger vm kill "b$i" >/dev/null
  cfg=$BENCH_ROOT/ssh_config
  # ssh-config lists only VMs with an address; b$i keeps its address when stopped.
  banger ssh-config >"$cfg"
  # banger removed the run dir at stop; QEMU needs it for its sockets.
  for a in "${argv[@]}"; do
    case $a in unix:*qmp.sock*) d=${a#unix:}; mkdir -p "$(dirname "${d%%,*}")" ;; esac
  done
  t0=$(now_ms)
  # Not through the bench_ns function: $! must be QEMU itself (ip execs it).
  ip netns exec "$BENCH_NS" "${argv[@]}" >"$BENCH_ROOT/raw.log" 2>&1 &
  raw=$!
  until ! kill -0 "$raw" 2>/dev/null || bench_ns ssh -F "$cfg" -o BatchMode=yes -o ConnectTimeout=1 "b$i.banger" true 2>/dev/null; do sleep 0.1; done
  t1=$(now_ms)
  if ! kill -0 "$raw" 2>/dev/null; then echo "raw QEMU exited:" >&2; cat "$BENCH_ROOT/raw.log" >&2; exit 1; fi
  raw_ms+=($((t1 - t0)))
  kill -9 "$raw" 2>/dev/null || true
  wait "$raw" 2>/dev/null || true
  banger vm rm --force "b$i" >/dev/null
  echo "run $i: banger create-to-ssh ${banger_ms[-1]} ms, raw qemu boot-to-ssh ${raw_ms[-1]} ms ($ip)"
done
b=$(printf '%s\n' "${banger_ms[@]}" | median)
r=$(printf '%s\n' "${raw_ms[@]}" | median)
accel=$(banger version | sed -n 's/^vmm *qemu *available (\(.*\))/\1/p')
echo "median: banger ${b} ms, raw ${r} ms, ratio $(awk -v b="$b" -v r="$r" 'BEGIN{printf "%.2f", b/r}') (accel ${accel:-unknown})"
