#!/bin/bash
# runner.sh starts and supervises one banger guest session.
#
#   runner.sh start DIR PTY COLS ROWS CWD NENV [KEY=VALUE]... ARGV...
#       creates the session directory DIR, starts a detached supervisor
#       and prints the session's state (inspect.sh format).
#   runner.sh supervise DIR   (internal) runs the command, records its status
#   runner.sh exec DIR        (internal) becomes the session's command
#
# Everything arrives as arguments; nothing is evaluated as shell text. The
# session directory holds: argv and env (NUL-separated), cwd, pty (0|1),
# winsize, stdin (a FIFO the supervisor holds open), log, boot_id,
# started_at, runner_pid, pid, tty (PTY sessions), and once the command
# ended: status and ended_at.
set -u

here=$(cd "$(dirname "$0")" && pwd)

now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# put NAME VALUE writes a file atomically, so readers never see half of it.
put() { printf '%s\n' "$2" >"$dir/.$1.tmp" && mv -f "$dir/.$1.tmp" "$dir/$1"; }

start() {
	dir=$1 pty=$2 cols=$3 rows=$4 cwd=$5 nenv=$6
	shift 6
	mkdir -p "$(dirname "$dir")" || exit 1
	if ! mkdir -m 0700 "$dir" 2>/dev/null; then
		echo "session directory $dir already exists" >&2
		exit 17
	fi
	: >"$dir/env"
	while [ "$nenv" -gt 0 ]; do
		printf '%s\0' "$1" >>"$dir/env"
		shift
		nenv=$((nenv - 1))
	done
	if [ "$#" -eq 0 ]; then
		echo "no command given" >&2
		rm -rf "$dir"
		exit 2
	fi
	printf '%s\0' "$@" >"$dir/argv"
	[ -n "$cwd" ] || cwd=$HOME
	put cwd "$cwd"
	put pty "$pty"
	put winsize "$rows $cols"
	mkfifo -m 0600 "$dir/stdin"
	: >"$dir/log"
	put boot_id "$(cat /proc/sys/kernel/random/boot_id)"
	put started_at "$(now)"
	setsid "$BASH" "$here/runner.sh" supervise "$dir" </dev/null >/dev/null 2>&1 &
	# Report the command's pid: wait until the command has recorded it (or
	# already ended).
	for _ in $(seq 1 500); do
		[ -e "$dir/pid" ] || [ -e "$dir/status" ] && break
		sleep 0.01
	done
	exec "$BASH" "$here/inspect.sh" "$dir"
}

supervise() {
	dir=$1
	cd / || exit 1
	# Holding the FIFO open read-write means writers never block and the
	# command never sees end-of-file between two sends.
	exec 3<>"$dir/stdin"
	put runner_pid "$$"
	if [ "$(cat "$dir/pty")" = 1 ]; then
		# script(1) gives the command a pseudo-terminal and copies its
		# output to our stdout (the log). The -c text is constant: the
		# command itself is read from the session directory by "exec".
		# shellcheck disable=SC2016 # expanded by script's shell, on purpose
		BASH_BIN=$BASH BANGER_RUNNER="$here/runner.sh" BANGER_SESSION_DIR="$dir" SHELL=/bin/sh \
			script -qfe -c 'exec "$BASH_BIN" "$BANGER_RUNNER" exec "$BANGER_SESSION_DIR"' /dev/null \
			<&3 3<&- >>"$dir/log" 2>&1 &
	else
		setsid "$BASH" "$here/runner.sh" exec "$dir" <&3 3<&- >>"$dir/log" 2>&1 &
	fi
	wait "$!"
	code=$?
	put ended_at "$(now)"
	put status "$code"
}

run_command() {
	dir=$1
	unset BANGER_RUNNER BANGER_SESSION_DIR BASH_BIN
	if [ "$(cat "$dir/pty")" = 1 ]; then
		read -r rows cols <"$dir/winsize"
		stty rows "$rows" cols "$cols" 2>/dev/null
		put tty "$(tty)"
	fi
	put pid "$$"
	cwd=$(cat "$dir/cwd")
	cd "$cwd" || exit 126
	mapfile -d '' envs <"$dir/env"
	mapfile -d '' argv <"$dir/argv"
	for kv in "${envs[@]}"; do
		export "${kv?}"
	done
	exec "${argv[@]}"
}

cmd=${1:-}
[ "$#" -gt 0 ] && shift
case $cmd in
start) start "$@" ;;
supervise) supervise "$@" ;;
exec) run_command "$@" ;;
*)
	echo "usage: runner.sh start|supervise|exec DIR ..." >&2
	exit 2
	;;
esac
