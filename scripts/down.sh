#!/usr/bin/env bash
# make down: stop every VM and the daemon. Images and VM disks stay.
set -euo pipefail
export BANGER_SOCKET=${1:-/run/banger/banger.sock}
if command -v banger >/dev/null; then
  for vm in $(banger vm ls --state running --json | sed -n 's/^ *"name": "\(.*\)",$/\1/p'); do
    banger vm stop "$vm" || true
  done
fi
if [ -d /run/systemd/system ] && systemctl is-active -q banger 2>/dev/null; then
  systemctl stop banger
else
  pkill -INT -f '^/usr/local/bin/banger daemon' || true
fi
