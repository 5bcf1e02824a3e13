#!/bin/sh
# Finalizes the workspace at DEST: commits remaining work on top of BASE
# with MESSAGE, then prints HEAD, the number of commits since BASE and the
# changed files (NUL-separated).
# Usage: export.sh DEST BASE MESSAGE
# Exit 20: no workspace at DEST. Exit 21: BASE is not in it.
# Exit 22: HEAD does not descend from BASE.
set -eu
dest=$1 base=$2 msg=$3

if [ ! -d "$dest/.git" ]; then
	echo "no git repository at $dest" >&2
	exit 20
fi
cd -- "$dest"
if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
	echo "base commit $base is not in $dest" >&2
	exit 21
fi
git add -A
if ! git diff --cached --quiet; then
	# Hooks and signing are the agent's business, not the finalize step's.
	git -c commit.gpgsign=false commit -q --no-verify -m "$msg"
fi
if ! git merge-base --is-ancestor "$base" HEAD; then
	echo "HEAD does not descend from the base commit $base" >&2
	exit 22
fi
git rev-parse --verify HEAD
git rev-list --count "$base..HEAD"
git diff --name-only -z --no-renames "$base" HEAD
