#!/usr/bin/env bash
# Installs the Debian packages banger needs at run time and in its tests.
# Idempotent; skips apt when everything is already present.
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils   # QEMU backend, qcow2 overlays
  debootstrap                  # default image build
  e2fsprogs lz4 zstd xz-utils  # ext4 images, kernel decompression
  iproute2 nftables            # namespaces in tests, nft for inspection
  openssh-client               # plain-OpenSSH compatibility tests, ssh-config
  shellcheck                   # guest and CI scripts
  xfsprogs                     # reflink integration test (loop-mounted xfs)
  ca-certificates git make
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
