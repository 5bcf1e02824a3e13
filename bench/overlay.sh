#!/usr/bin/env bash
# Benchmarks system-overlay creation per strategy on a sparse 10 GiB base and
# on a 1 GiB base (data scales with size: 64 MiB per 10 GiB) and prints the
# time per strategy and the 10 GiB / 1 GiB ratio: about 1 for O(1)
# strategies, about 10 for O(data) ones (reflink may grow with the number of
# extents, which grows with the data here).
#
# Run as root with mkfs.xfs installed to include reflink (an xfs image is
# loop-mounted for the run and removed after). Set BENCHTIME (default 10x) to
# change go test's -benchtime; BANGER_BENCH_NO_MOUNT=1 to skip the xfs mount.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
benchtime=${BENCHTIME:-10x}
work=$(mktemp -d)
mnt=""

cleanup() {
	if [[ -n "$mnt" ]] && mountpoint -q "$mnt"; then
		umount "$mnt"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if [[ "${BANGER_BENCH_NO_MOUNT:-}" != 1 && $(id -u) == 0 ]] && command -v mkfs.xfs >/dev/null; then
	truncate -s 24G "$work/xfs.img"
	mkfs.xfs -q -m reflink=1 "$work/xfs.img"
	mkdir "$work/mnt"
	mount -o loop "$work/xfs.img" "$work/mnt"
	mnt="$work/mnt"
	export BANGER_BENCH_REFLINK_DIR="$mnt"
fi

go test -c -o "$work/disk.test" ./internal/disk/

for size in 1G 10G; do
	echo "running BenchmarkCreateOverlay with a $size base (-benchtime $benchtime)..." >&2
	BANGER_BENCH_BASE_SIZE=$size "$work/disk.test" -test.run '^$' \
		-test.bench '^BenchmarkCreateOverlay$' -test.benchtime "$benchtime" -test.v \
		>"$work/$size.out"
done

# Lines look like "BenchmarkCreateOverlay/copy-2  5  241276947 ns/op ...";
# a skipped strategy logs "    bench_test.go:43: <reason>" then
# "--- SKIP: BenchmarkCreateOverlay/reflink".
awk '
	function strategy(field) { sub(/^BenchmarkCreateOverlay\//, "", field); sub(/-[0-9]+$/, "", field); return field }
	FNR == 1 { size = (FILENAME ~ /10G\.out$/) ? "10G" : "1G" }
	/^BenchmarkCreateOverlay\/[^ \t]+[ \t]+[0-9]+[ \t]+[0-9.]+ ns\/op/ {
		s = strategy($1); ns[s, size] = $3; seen[s] = 1; next
	}
	/^[ \t]+[^ \t]+_test\.go:[0-9]+: / { reason = $0; sub(/^[ \t]+[^ \t]+_test\.go:[0-9]+: /, "", reason); next }
	/^--- SKIP: BenchmarkCreateOverlay\// { skip[strategy($3)] = reason; next }
	END {
		n = split("dm-snapshot qcow2 reflink copy", order, " ")
		printf "%-12s %12s %12s %8s  %s\n", "strategy", "1 GiB base", "10 GiB base", "ratio", "10G vs 1G"
		for (i = 1; i <= n; i++) {
			s = order[i]
			if (!(s in seen)) { printf "%-12s skipped: %s\n", s, (s in skip) ? skip[s] : "no result"; continue }
			small = ns[s, "1G"] / 1e6; big = ns[s, "10G"] / 1e6
			ratio = (small > 0) ? big / small : 0
			printf "%-12s %10.2fms %10.2fms %8.2f  %s\n", s, small, big, ratio, (ratio < 2.5) ? "flat: O(1)" : "grows with the base"
		}
	}
' "$work/1G.out" "$work/10G.out"
