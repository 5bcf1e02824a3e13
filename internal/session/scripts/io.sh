#!/bin/bash
# io.sh moves bytes in and out of a banger guest session.
#
#   io.sh send DIR                  stdin to the session's input (bounded wait)
#   io.sh input DIR                 stdin to the session's input until EOF (attach)
#   io.sh read DIR OFFSET MAX TAIL  prints "SIZE START" on one line, then up to
#                                   MAX bytes of the log from START, which is
#                                   OFFSET, or SIZE-TAIL when TAIL > 0
#   io.sh follow DIR OFFSET         the log from OFFSET, live, until the session ends
#   io.sh resize DIR ROWS COLS      sets the terminal size of a PTY session
#   io.sh rm DIR                    removes an ended session
#
# Exit status 3 means the session is not running (send, input, resize) or
# still running (rm); 4 means it does not exist.
set -u

action=$1 dir=$2
[ -f "$dir/argv" ] || {
	echo "no such session" >&2
	exit 4
}

# running: no status yet and the supervisor alive (no forks: see inspect.sh).
runner=''
running() {
	[ ! -e "$dir/status" ] && [ -s "$dir/runner_pid" ] && IFS= read -r runner <"$dir/runner_pid" && [ -d "/proc/$runner" ]
}

case $action in
send)
	running || exit 3
	# Opening a FIFO read-write never blocks, even if the session ended
	# just now; the daemon bounds the whole call with a timeout.
	exec 3<>"$dir/stdin"
	exec cat >&3
	;;
input)
	running || exit 3
	exec cat >"$dir/stdin"
	;;
read)
	offset=$3 max=$4 tailbytes=$5
	size=$(stat -c %s "$dir/log")
	if [ "$tailbytes" -gt 0 ]; then
		offset=$((size - tailbytes))
		[ "$offset" -ge 0 ] || offset=0
	fi
	echo "$size $offset"
	tail -c "+$((offset + 1))" "$dir/log" | head -c "$max"
	;;
follow)
	offset=$3
	if running; then
		# --pid ends the follow once the supervisor (and so the command)
		# has exited and the rest of the log has been printed.
		exec tail -c "+$((offset + 1))" -f --pid="$runner" "$dir/log"
	fi
	exec tail -c "+$((offset + 1))" "$dir/log"
	;;
resize)
	running || exit 3
	rows=$3 cols=$4
	printf '%s %s\n' "$rows" "$cols" >"$dir/winsize"
	[ -s "$dir/tty" ] || exit 0
	# Setting the size on the terminal makes the kernel send SIGWINCH to
	# its foreground process group.
	stty -F "$(cat "$dir/tty")" rows "$rows" cols "$cols"
	;;
rm)
	if running; then
		echo "session is still running" >&2
		exit 3
	fi
	rm -rf -- "$dir"
	;;
*)
	echo "usage: io.sh send|input|read|follow|resize|rm DIR ..." >&2
	exit 2
	;;
esac
