#!/usr/bin/env bash
# make down: stop every running VM, then the daemon. Images and VM disks stay.
set -euo pipefail
banger=${1:-/usr/local/bin/banger}
export BANGER_SOCKET=${2:-/run/banger/banger.sock}
if [ -x "$banger" ] && "$banger" version >/dev/null 2>&1; then
  "$banger" vm ls --state running --json | sed -n 's/^ *"name": "\(.*\)",$/\1/p' | while read -r vm; do
    "$banger" vm stop "$vm" || true
  done
fi
if [ -d /run/systemd/system ] && systemctl is-active -q banger 2>/dev/null; then
  systemctl stop banger
else
  pid=$("$banger" version --json 2>/dev/null | sed -n 's/^ *"pid": \([0-9]*\),$/\1/p' | head -1)
  if [ -n "$pid" ]; then kill -INT "$pid"; fi
fi
