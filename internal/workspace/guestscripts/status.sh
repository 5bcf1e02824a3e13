#!/bin/sh
# Reports on the workspace at DEST without changing it: HEAD, commits since
# BASE, and the files that differ from BASE in the working tree, untracked
# ones included (NUL-separated).
# Usage: status.sh DEST BASE
# Exit 20: no workspace at DEST. Exit 21: BASE is not in it.
set -eu
dest=$1 base=$2

if [ ! -d "$dest/.git" ]; then
	echo "no git repository at $dest" >&2
	exit 20
fi
cd -- "$dest"
if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
	echo "base commit $base is not in $dest" >&2
	exit 21
fi
git rev-parse --verify HEAD
git rev-list --count "$base..HEAD"
{
	git diff --name-only -z --no-renames "$base"
	git ls-files --others --exclude-standard -z
} | sort -z -u
