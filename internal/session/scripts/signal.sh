#!/bin/bash
# signal.sh delivers signals to a banger guest session.
#
#   signal.sh send DIR SIGNAL       SIGNAL (a name: TERM, USR1...) to the command
#   signal.sh kill DIR              KILL to every process of the session
#   signal.sh stop DIR SECONDS      TERM to every process of the session, then
#                                   KILL if it has not ended after SECONDS
#
# Exit status 3 means the session is not running. On success the session's
# state is printed (inspect.sh format).
set -u

here=$(cd "$(dirname "$0")" && pwd)
action=$1 dir=$2

pid=''
running() { [ ! -e "$dir/status" ] && [ -s "$dir/pid" ] && IFS= read -r pid <"$dir/pid" && [ -d "/proc/$pid" ]; }

# group SIGNAL signals the command's whole session (it is a session
# leader: setsid or script(1) made it one), so children started in other
# process groups by a job-control shell are reached too.
group() {
	pkill "-$1" -s "$pid" 2>/dev/null || kill -s "$1" -- "-$pid" 2>/dev/null || kill -s "$1" "$pid"
}

# ended SECONDS waits up to SECONDS for the supervisor to record a status.
ended() {
	for _ in $(seq 1 $(($1 * 10))); do
		[ -e "$dir/status" ] && return 0
		sleep 0.1
	done
	[ -e "$dir/status" ]
}

if ! running; then
	echo "session is not running" >&2
	exit 3
fi
case $action in
send)
	kill -s "$3" "$pid" || exit 1
	ended 0
	;;
kill)
	group KILL
	ended 5
	;;
stop)
	group TERM
	if ! ended "$3"; then
		group KILL
		ended 5
	fi
	;;
*)
	echo "usage: signal.sh send|kill|stop DIR ..." >&2
	exit 2
	;;
esac
exec "$BASH" "$here/inspect.sh" "$dir"
