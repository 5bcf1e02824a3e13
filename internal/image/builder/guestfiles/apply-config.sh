#!/bin/bash
# apply-config: applies banger's per-VM config drive at boot.
#
# The host attaches a raw disk that starts with a ustar archive whose
# entries all live under banger/. Each file holds one value and is read as
# data, never evaluated. This script finds the drive, extracts it to
# /run/banger/config, then sets the hostname, configures the NIC whose MAC
# matches, writes resolv.conf and installs the SSH host key and the user's
# authorized keys (under /etc/ssh/authorized_keys so sshd does not depend on
# the work disk being mounted).
set -euo pipefail

readonly config_dir=/run/banger/config
readonly wait_seconds=60

log() { printf 'banger-config: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# is_config_drive DEV: true when DEV starts with a ustar header named banger/.
is_config_drive() {
	local dev=$1 name magic
	[ -b "$dev" ] || return 1
	name=$(dd if="$dev" bs=1 count=7 status=none 2>/dev/null | tr -d '\0') || return 1
	magic=$(dd if="$dev" bs=1 skip=257 count=5 status=none 2>/dev/null | tr -d '\0') || return 1
	[ "$name" = "banger/" ] && [ "$magic" = "ustar" ]
}

# find_config_drive prints the config drive's path. A banger.config= kernel
# argument wins; otherwise every virtio disk is probed until one matches.
find_config_drive() {
	local arg dev args
	read -r -a args </proc/cmdline
	for arg in "${args[@]}"; do
		case $arg in
		banger.config=*)
			dev=${arg#banger.config=}
			if is_config_drive "$dev"; then
				printf '%s\n' "$dev"
				return 0
			fi
			log "banger.config=$dev is not a config drive; scanning"
			;;
		esac
	done
	for dev in /dev/vd[a-z] /dev/vd[a-z][a-z]; do
		if is_config_drive "$dev"; then
			printf '%s\n' "$dev"
			return 0
		fi
	done
	return 1
}

# value NAME prints the first line of config file NAME (empty if absent).
value() {
	local file=$config_dir/banger/$1 line=""
	if [ -f "$file" ]; then
		IFS= read -r line <"$file" || true
	fi
	printf '%s' "$line"
}

# nic_for_mac MAC prints the interface name whose address is MAC.
nic_for_mac() {
	local want=${1,,} path addr
	for path in /sys/class/net/*; do
		[ -r "$path/address" ] || continue
		IFS= read -r addr <"$path/address" || continue
		if [ "${addr,,}" = "$want" ]; then
			printf '%s\n' "${path##*/}"
			return 0
		fi
	done
	return 1
}

wait_for() {
	local what=$1 i
	shift
	for ((i = 0; i < wait_seconds * 10; i++)); do
		if "$@"; then
			return 0
		fi
		sleep 0.1
	done
	die "no $what after ${wait_seconds}s"
}

drive=""
probe_drive() { drive=$(find_config_drive); }
wait_for "config drive (ustar archive named banger/ on /dev/vd*)" probe_drive
log "config drive is $drive"

rm -rf "$config_dir"
mkdir -p "$config_dir"
chmod 0700 "$config_dir"
tar -x -f "$drive" -C "$config_dir" --no-same-owner --no-same-permissions banger/

hostname=$(value hostname)
if [ -n "$hostname" ]; then
	printf '%s\n' "$hostname" >/proc/sys/kernel/hostname
	printf '%s\n' "$hostname" >/etc/hostname
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$hostname" >/etc/hosts
fi

ip link set dev lo up
mac=$(value mac)
address=$(value ip)
gateway=$(value gateway)
if [ -n "$mac" ] && [ -n "$address" ]; then
	nic=""
	probe_nic() { nic=$(nic_for_mac "$mac"); }
	wait_for "network interface with MAC $mac" probe_nic
	ip link set dev "$nic" up
	ip addr replace "$address" dev "$nic"
	if [ -n "$gateway" ]; then
		ip route replace default via "$gateway" dev "$nic"
	fi
	log "$nic is $address via ${gateway:-no gateway}"
fi

if [ -f "$config_dir/banger/dns" ]; then
	resolv=$(mktemp /etc/resolv.conf.XXXXXX)
	search=$(value search)
	if [ -n "$search" ]; then
		printf 'search %s\n' "$search" >>"$resolv"
	fi
	while IFS= read -r server || [ -n "$server" ]; do
		[ -n "$server" ] && printf 'nameserver %s\n' "$server" >>"$resolv"
	done <"$config_dir/banger/dns"
	chmod 0644 "$resolv"
	mv -f "$resolv" /etc/resolv.conf
fi

if [ -f "$config_dir/banger/ssh_host_ed25519_key" ]; then
	install -m 0600 -o root -g root "$config_dir/banger/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
	install -m 0644 -o root -g root "$config_dir/banger/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
fi

user=$(value user)
if [ -n "$user" ] && [ -f "$config_dir/banger/authorized_keys" ]; then
	id -u "$user" >/dev/null 2>&1 || die "user $user does not exist in this image"
	install -d -m 0755 -o root -g root /etc/ssh/authorized_keys
	install -m 0600 -o "$user" -g root "$config_dir/banger/authorized_keys" "/etc/ssh/authorized_keys/$user"
fi
log "applied"
