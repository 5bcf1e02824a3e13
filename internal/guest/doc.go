// Package guest is banger's access to its guests over SSH.
//
// The daemon owns one ed25519 client key (EnsureClientKey) and generates an
// SSH host key for every VM (NewHostKey) before the VM first boots. The host
// key is pinned: the Go client accepts exactly that key, and the known_hosts
// file and ssh_config written for plain OpenSSH carry StrictHostKeyChecking
// yes. There is no trust-on-first-use anywhere.
//
// A Pool keeps one SSH connection per VM for the daemon and runs commands on
// it (Exec, ExecOutput, WaitReady, Ping). Commands are always given as argv
// and turned into one shell command line by quoting every element
// (ShellQuote), so data never becomes shell syntax.
//
// Interactive is for the CLI (`banger ssh`): it dials its own connection and
// gives the user a PTY when stdin is a terminal.
package guest
