// Package session runs guest sessions: long-lived processes inside a VM
// that outlive the SSH connection that started them and the daemon, that
// users list, read (logs, follow), drive (send, signal, stop, kill) and
// attach to with a real terminal. It also syncs the user's credentials
// into guests (vm sync-auth and the auth-sync capability).
//
// The guest side is plain shell (scripts/*.sh, embedded). Scripts are
// installed on first use under <root>/lib/<hash>/ in the guest and take
// all data as arguments, environment or stdin; nothing is ever spliced
// into shell text. Each session lives in <root>/sessions/<name>/ (root
// defaults to /var/lib/banger, on the guest's persistent root disk):
// argv, env, cwd, a FIFO for input held open by a detached supervisor
// (setsid), the output log, the command's pid, the boot id, and the exit
// status once it ended. PTY sessions run under script(1) from
// util-linux (always in the image: bsdutils is essential), whose output
// goes to the same log; a resize sets the terminal size with stty, which
// makes the kernel deliver SIGWINCH. The log is the single source for
// logs, follow and attach scrollback, so any number of viewers can follow
// or attach at once, and re-attach later.
//
// State is derived by inspect.sh: a status file means exited (or killed,
// when the status is 128+N); a boot id that differs from the guest's
// means the guest rebooted under the session (lost); a supervisor that
// vanished without a status is lost too. The daemon keeps no session
// state of its own, so sessions survive a daemon restart unchanged.
package session
