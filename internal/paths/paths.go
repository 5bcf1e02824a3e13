// Package paths derives every file system location banger uses from two
// roots: the state directory (persistent) and the run directory (volatile
// sockets and pid files). No other package joins paths of its own under
// these roots, so the layout is documented and changed in one place.
package paths

import (
	"fmt"
	"path/filepath"
	"regexp"
)

// Defaults for a system-wide daemon.
const (
	DefaultStateDir = "/var/lib/banger"
	DefaultRunDir   = "/run/banger"
	DefaultSocket   = "/run/banger/banger.sock"
	DefaultConfig   = "/etc/banger/config.toml"
)

// Layout is the resolved set of roots.
type Layout struct {
	StateDir string
	RunDir   string
	Socket   string
}

// New returns a layout. An empty runDir means DefaultRunDir for the
// default state dir and <state>/run otherwise, so a daemon started with a
// private --state-dir (tests, a second daemon) never shares /run/banger.
// An empty socket means <runDir>/banger.sock.
func New(stateDir, runDir, socket string) (Layout, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return Layout{}, fmt.Errorf("state dir %q: %w", stateDir, err)
	}
	stateDir = abs
	if runDir == "" {
		if stateDir == DefaultStateDir {
			runDir = DefaultRunDir
		} else {
			runDir = filepath.Join(stateDir, "run")
		}
	}
	if runDir, err = filepath.Abs(runDir); err != nil {
		return Layout{}, err
	}
	if socket == "" {
		socket = filepath.Join(runDir, "banger.sock")
	}
	if socket, err = filepath.Abs(socket); err != nil {
		return Layout{}, err
	}
	return Layout{StateDir: stateDir, RunDir: runDir, Socket: socket}, nil
}

// Database is the SQLite store.
func (l Layout) Database() string { return filepath.Join(l.StateDir, "banger.db") }

// SSHDir holds the daemon-managed SSH client key.
func (l Layout) SSHDir() string { return filepath.Join(l.StateDir, "ssh") }

// ImagesDir holds images whose files banger owns.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// ImageDir is one owned image's directory.
func (l Layout) ImageDir(imageID string) string { return filepath.Join(l.ImagesDir(), mustID(imageID)) }

// ImageCache holds built images keyed by their recipe.
func (l Layout) ImageCache() string { return filepath.Join(l.StateDir, "cache", "images") }

// WebToken holds the web UI's per-daemon access token (mode 0600).
func (l Layout) WebToken() string { return filepath.Join(l.StateDir, "web-token") }

// WebAddr records the address the web UI actually listens on, so
// `banger web` can build the URL; absent while the UI is not serving.
func (l Layout) WebAddr() string { return filepath.Join(l.StateDir, "web-addr") }

// VMsDir holds per-VM persistent state.
func (l Layout) VMsDir() string { return filepath.Join(l.StateDir, "vms") }

// VMDir is one VM's persistent directory: disks, config drive, known_hosts.
func (l Layout) VMDir(vmID string) string { return filepath.Join(l.VMsDir(), mustID(vmID)) }

// VMWorkDisk is the VM's persistent work disk.
func (l Layout) VMWorkDisk(vmID string) string { return filepath.Join(l.VMDir(vmID), "work.ext4") }

// VMConfigDrive is the VM's config drive, rewritten before every start.
func (l Layout) VMConfigDrive(vmID string) string { return filepath.Join(l.VMDir(vmID), "config.img") }

// VMKnownHosts pins the VM's SSH host key for OpenSSH clients.
func (l Layout) VMKnownHosts(vmID string) string { return filepath.Join(l.VMDir(vmID), "known_hosts") }

// VMHostKey is the VM's SSH host private key.
func (l Layout) VMHostKey(vmID string) string {
	return filepath.Join(l.VMDir(vmID), "ssh_host_ed25519_key")
}

// VMConsoleLog is the guest serial console log.
func (l Layout) VMConsoleLog(vmID string) string { return filepath.Join(l.VMDir(vmID), "console.log") }

// VMRunDir holds the VMM's sockets and pid file. Kept short: Unix socket
// paths are limited to 108 bytes.
func (l Layout) VMRunDir(vmID string) string { return filepath.Join(l.RunDir, "vms", mustID(vmID)) }

// idPattern is the shape of banger ids; anything else would let a caller
// escape the layout, so it is a programming error.
var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

func mustID(id string) string {
	if !idPattern.MatchString(id) {
		panic(fmt.Sprintf("paths: invalid id %q", id))
	}
	return id
}
