#!/usr/bin/env bash
# Runs every benchmark script. Boot and workspace benchmarks need root and
# boot real guests (minutes under TCG).
set -euo pipefail
cd "$(dirname "$0")"
for b in daemon.sh overlay.sh boot.sh; do
  echo "== $b"
  "./$b"
done
