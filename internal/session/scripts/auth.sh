#!/bin/bash
# auth.sh places the user's credentials in the guest, as the guest user.
#
#   auth.sh keys            stdin: authorized_keys lines, kept in a marked
#                           block of ~/.ssh/authorized_keys (other lines stay)
#   auth.sh git NAME EMAIL  sets git's global user.name / user.email (an
#                           empty value leaves that setting alone)
#   auth.sh file DST        stdin: the file's content, written to DST with
#                           mode 0600 (relative DST is under $HOME)
#
# Contents arrive on stdin only and are never printed.
set -eu
umask 077

begin='# banger: synced keys begin'
end='# banger: synced keys end'

case $1 in
keys)
	mkdir -p "$HOME/.ssh"
	chmod 0700 "$HOME/.ssh"
	f=$HOME/.ssh/authorized_keys
	tmp=$(mktemp "$f.XXXXXX")
	if [ -f "$f" ]; then
		awk -v b="$begin" -v e="$end" '$0==b{skip=1;next} $0==e{skip=0;next} !skip' "$f" >"$tmp"
	fi
	{
		echo "$begin"
		cat
		echo "$end"
	} >>"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$f"
	;;
git)
	[ -z "$2" ] || git config --global user.name "$2"
	[ -z "$3" ] || git config --global user.email "$3"
	;;
file)
	dst=$2
	case $dst in /*) ;; *) dst=$HOME/$dst ;; esac
	mkdir -p "$(dirname "$dst")"
	tmp=$(mktemp "$dst.XXXXXX")
	cat >"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$dst"
	;;
*)
	echo "usage: auth.sh keys|git|file ..." >&2
	exit 2
	;;
esac
