#!/bin/sh
# Unpacks a workspace archive (read from stdin) at DEST in the guest.
# Usage: push.sh DEST NEED_KIB BASE GIT_NAME GIT_EMAIL
# Exit 17: DEST exists and is not empty. Exit 28: not enough space.
# The archive is unpacked next to DEST and renamed into place, so a
# failure leaves nothing behind.
set -eu
dest=$1 need_kib=$2 base=$3 name=$4 email=$5

if [ -e "$dest" ] || [ -L "$dest" ]; then
	if [ ! -d "$dest" ] || [ -n "$(ls -A -- "$dest")" ]; then
		echo "$dest already exists in the guest" >&2
		exit 17
	fi
fi
parent=$(dirname -- "$dest")
mkdir -p -- "$parent"
avail=$(df -k --output=avail -- "$parent" | tail -n 1 | tr -d ' ')
if [ "$avail" -lt "$need_kib" ]; then
	echo "need ${need_kib} KiB, ${avail} KiB available in $parent" >&2
	exit 28
fi
tmp=$(mktemp -d -- "$parent/.banger-workspace.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
tar -x -p -f - -C "$tmp"
cd -- "$tmp"
if [ -n "$name" ]; then git config user.name "$name"; fi
if [ -n "$email" ]; then git config user.email "$email"; fi
# Unpacking gave every file a new inode and ctime; refresh the index's
# stat data now so the export's `git add -A` does not re-read every file.
git update-index -q --refresh >/dev/null || true
head=$(git rev-parse --verify HEAD)
if [ "$head" != "$base" ]; then
	echo "the unpacked workspace is at $head, expected $base" >&2
	exit 1
fi
cd /
if [ -d "$dest" ]; then rmdir -- "$dest"; fi
mv -T -- "$tmp" "$dest"
trap - EXIT
