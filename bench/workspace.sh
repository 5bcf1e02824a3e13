#!/usr/bin/env bash
# Workspace push versus a raw `tar | ssh` of the same files, and export of a
# small change, on a generated repository. Boots one VM in a private
# daemon (see lib.sh), measures RUNS times and prints every sample.
#
#   sudo bench/workspace.sh [RUNS] [FILES] [KIB_PER_FILE] [COMMITS]
#   (defaults: 3 runs, 20000 files of ~4 KiB, 20 commits of history)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
runs=${1:-3}
files=${2:-20000}
kib=${3:-4}
commits=${4:-20}
bench_setup

repo=$BENCH_ROOT/bigrepo
echo "generating $files files of ~${kib} KiB with $commits commits of history..."
git init -q -b main "$repo"
git -C "$repo" config user.name bench
git -C "$repo" config user.email bench@example.com
# Text-like content (base64 of random bytes): compressible the way source is not,
# but git and tar treat it the same.
gen_files() {
  local n=$1 i
  for ((i = 0; i < n; i++)); do
    mkdir -p "$repo/d$((i % 200))"
    head -c $((kib * 768)) /dev/urandom | base64 >"$repo/d$((i % 200))/f$i.txt"
  done
}
gen_files "$files"
git -C "$repo" add -A
git -C "$repo" commit -q -m initial
for ((c = 1; c < commits; c++)); do
  for ((j = 0; j < 50; j++)); do
    f=$((RANDOM * 32768 + RANDOM))
    f=$((f % files))
    head -c 2048 /dev/urandom | base64 >>"$repo/d$((f % 200))/f$f.txt"
  done
  git -C "$repo" commit -q -am "change $c"
done
# Some uncommitted work, as a user would have.
echo "uncommitted" >>"$repo/d0/f0.txt"
echo "untracked" >"$repo/new.txt"
tree_mib=$(du -sm --exclude=.git "$repo" | cut -f1)
git_mib=$(du -sm "$repo/.git" | cut -f1)
echo "repository: $tree_mib MiB of files, $git_mib MiB in .git"

banger vm create wsbench --cpus 2 --memory 1024 --disk-size 4G >/dev/null
cfg=$BENCH_ROOT/ssh_config
banger ssh-config >"$cfg"
gssh() { bench_ns ssh -F "$cfg" -o BatchMode=yes wsbench.banger "$@"; }

for i in $(seq 1 "$runs"); do
  t0=$(now_ms)
  banger workspace push wsbench "$repo" --guest-path "push$i" >/dev/null 2>&1
  t1=$(now_ms)
  push_ms=$((t1 - t0))

  # The raw baseline: the same non-ignored files, one tar stream over a
  # fresh OpenSSH connection, no history.
  t0=$(now_ms)
  git -C "$repo" ls-files -co --exclude-standard -z |
    tar -C "$repo" --null -cf - -T - |
    gssh 'mkdir -p raw'"$i"' && tar -xf - -C raw'"$i"
  t1=$(now_ms)
  raw_ms=$((t1 - t0))

  # The same raw stream including .git, for a like-for-like byte count.
  t0=$(now_ms)
  tar -C "$repo" -cf - . | gssh 'mkdir -p rawgit'"$i"' && tar -xf - -C rawgit'"$i"
  t1=$(now_ms)
  rawgit_ms=$((t1 - t0))

  # Export: a small change in the guest, back as a branch.
  # shellcheck disable=SC2016 # $1 is expanded by the guest's sh, on purpose
  banger exec wsbench -- sh -c 'cd "$1" && echo change >> d1/f1.txt && echo new > added.txt' sh "push$i" >/dev/null
  t0=$(now_ms)
  banger workspace export wsbench --branch "bench/export$i" >/dev/null
  t1=$(now_ms)
  export_ms=$((t1 - t0))
  git -C "$repo" branch -q -D "bench/export$i"

  gssh 'rm -rf push'"$i"' raw'"$i"' rawgit'"$i"
  # Only one workspace record per VM: the next push replaces it.
  echo "run $i: push ${push_ms} ms; raw tar|ssh of the files ${raw_ms} ms; raw tar|ssh incl. .git ${rawgit_ms} ms; export of a small change ${export_ms} ms"
done
