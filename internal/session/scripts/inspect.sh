#!/bin/bash
# inspect.sh prints the state of banger guest sessions.
#
#   inspect.sh DIR...        one record per session directory
#   inspect.sh --all BASE    every session under BASE
#
# A record is KEY=VALUE lines ended by a line "end". argv and cwd values
# escape backslash as \\ and newline as \n. state is running, exited,
# killed, lost or missing (no such directory). Written to fork as little
# as possible: under emulation (TCG) every process costs tens of ms.
set -u

# get VAR FILE reads the first line of FILE into VAR ("" if absent).
get() {
	printf -v "$1" '%s' ""
	[ -f "$2" ] && IFS= read -r "$1" <"$2"
	return 0
}

# esc VAR VALUE sets VAR to VALUE with backslashes and newlines escaped.
esc() {
	local v=${2//\\/\\\\}
	printf -v "$1" '%s' "${v//$'\n'/\\n}"
}

pid='' runner='' status='' sboot='' boot='' pty='' started='' ended='' e=''

get boot /proc/sys/kernel/random/boot_id

record() {
	dir=${1%/}
	echo "name=${dir##*/}"
	if [ ! -f "$dir/argv" ]; then
		echo "state=missing"
		echo "end"
		return
	fi
	get pid "$dir/pid"
	get runner "$dir/runner_pid"
	get status "$dir/status"
	get sboot "$dir/boot_id"
	if [ -n "$status" ]; then
		if [ "$status" -gt 128 ] && [ "$status" -le 192 ]; then
			echo "state=killed"
			echo "signal=$(kill -l "$((status - 128))" 2>/dev/null || echo "$((status - 128))")"
		else
			echo "state=exited"
		fi
		echo "exit_code=$status"
	elif [ "$sboot" != "$boot" ]; then
		echo "state=lost"
		echo "reason=the guest rebooted while the session ran"
	elif [ -n "$runner" ] && [ ! -d "/proc/$runner" ]; then
		echo "state=lost"
		echo "reason=the session supervisor vanished without recording a status"
	else
		echo "state=running"
	fi
	get pty "$dir/pty"
	get started "$dir/started_at"
	get ended "$dir/ended_at"
	echo "pid=$pid"
	echo "pty=$pty"
	echo "started_at=$started"
	echo "ended_at=$ended"
	# cwd may hold any byte but NUL; read it whole.
	IFS= read -r -d '' cwd <"$dir/cwd"
	esc e "${cwd%$'\n'}"
	echo "cwd=$e"
	while IFS= read -r -d '' arg; do
		esc e "$arg"
		echo "argv=$e"
	done <"$dir/argv"
	size=0
	if [ -f "$dir/log" ]; then
		size=$(stat -c %s "$dir/log")
	fi
	echo "log_bytes=$size"
	echo "end"
}

if [ "${1:-}" = --all ]; then
	base=$2
	[ -d "$base" ] || exit 0
	for d in "$base"/*/; do
		[ -d "$d" ] && record "$d"
	done
	exit 0
fi
for d in "$@"; do
	record "$d"
done
