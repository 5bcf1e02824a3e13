#!/usr/bin/env bash
# make up: install the binary, start the daemon (systemd unit where systemd
# runs, a background process otherwise), build the default image and
# create a first VM named dev.
set -euo pipefail
bin=${1:?binary}; prefix=${2:?prefix}; state=${3:?state dir}; socket=${4:?socket}

if [ "$(id -u)" -ne 0 ]; then
  echo "make up needs root (the daemon owns TAP devices, NAT and disks): sudo make up" >&2
  exit 1
fi
install -m 0755 "$bin" "$prefix/bin/banger"
banger=$prefix/bin/banger
export BANGER_SOCKET=$socket

if "$banger" version >/dev/null 2>&1 && "$banger" version | grep -q '^daemon  [^u]'; then
  echo "daemon already running"
elif [ -d /run/systemd/system ]; then
  install -m 0644 packaging/banger.service /etc/systemd/system/banger.service
  systemctl daemon-reload
  systemctl enable --now banger.service
else
  echo "systemd is not running; starting the daemon in the background (log: /var/log/banger.log)"
  extra=()
  if [ -n "${BANGER_IMAGE_CACHE:-}" ]; then extra+=(--image-cache "$BANGER_IMAGE_CACHE"); fi
  nohup setsid "$banger" daemon --state-dir "$state" --socket "$socket" "${extra[@]}" >>/var/log/banger.log 2>&1 </dev/null &
fi

for _ in $(seq 1 100); do
  "$banger" version 2>/dev/null | grep -q '^daemon  [^u]' && break
  sleep 0.1
done
"$banger" version

"$banger" doctor || echo "(doctor found problems; see the fix hints above)"
"$banger" image build default
if ! "$banger" vm show dev >/dev/null 2>&1; then
  "$banger" vm create dev
else
  "$banger" vm start dev 2>/dev/null || true
fi
cat <<TXT

banger is up. Your VM:
  banger ssh dev                  a shell in it
  banger exec dev -- uname -a     one command
  banger ssh-config >> ~/.ssh/banger.conf   plain ssh/scp/git as dev.banger
TXT
