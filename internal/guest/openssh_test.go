package guest

import (
	"bytes"
	"context"
	"errors"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOpenSSHUsesRenderedConfig runs the real OpenSSH client with the
// rendered ssh_config, the daemon-made client key and the pinned
// known_hosts against the in-process server, to prove plain `ssh` works with
// what banger writes and refuses a host whose key is not the pinned one.
func TestOpenSSHUsesRenderedConfig(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	testenv.Require(t, err == nil, "the OpenSSH client `ssh` (Debian package openssh-client)")

	f := newFixture(t)
	dir := t.TempDir()
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := WriteKnownHosts(knownHosts, []string{"127.0.0.1", HostAlias("vm"), HostAlias("vm") + ".internal"}, f.host.Public); err != nil {
		t.Fatal(err)
	}
	_, portStr, _ := strings.Cut(f.server.addr(), ":")
	port, _ := strconv.Atoi(portStr)
	entry := SSHConfigEntry{Name: "vm", HostName: "127.0.0.1", Port: port, User: "root",
		IdentityFile: f.key.PrivatePath, KnownHostsFile: knownHosts}
	cfg := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(cfg, []byte(RenderSSHConfig([]SSHConfigEntry{entry})), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(host string, remote ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		args := append([]string{"-F", cfg, "-o", "BatchMode=yes", host}, remote...)
		cmd := exec.CommandContext(ctx, sshBin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("run ssh: %v", err)
		}
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}

	if out, stderr, code := run("vm.banger", "printf", "%s", "hello"); code != 0 || out != "hello" {
		t.Fatalf("ssh vm.banger: code %d stdout %q stderr %q", code, out, stderr)
	}
	if _, stderr, code := run("vm.banger.internal", "true"); code != 0 {
		t.Fatalf("ssh vm.banger.internal: code %d stderr %q", code, stderr)
	}
	if _, stderr, code := run("vm.banger", "exit 9"); code != 9 {
		t.Fatalf("exit status not passed through: code %d stderr %q", code, stderr)
	}

	// Pin a different key: OpenSSH must refuse, not ask or accept.
	other, _ := NewHostKey()
	if err := WriteKnownHosts(knownHosts, []string{"127.0.0.1", HostAlias("vm")}, other.Public); err != nil {
		t.Fatal(err)
	}
	_, _, cmdsBefore := recordedCommands(f.server)
	_, stderr, code := run("vm.banger", "true")
	if code != 255 || !strings.Contains(stderr, "Host key verification failed") {
		t.Fatalf("want a refused host key, got code %d stderr %q", code, stderr)
	}
	if _, _, cmds := recordedCommands(f.server); len(cmds) != len(cmdsBefore) {
		t.Fatal("a command ran despite the wrong host key")
	}
}
