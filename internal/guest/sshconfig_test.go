package guest

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata golden files")

func TestRenderSSHConfigGolden(t *testing.T) {
	entries := []SSHConfigEntry{
		{Name: "web", HostName: "172.30.0.3", User: "root",
			IdentityFile: "/var/lib/banger/ssh/id_ed25519", KnownHostsFile: "/var/lib/banger/vms/web/known_hosts"},
		{Name: "agent-1", HostName: "172.30.0.2", Port: 2222, User: "dev",
			IdentityFile: "/home/a b/%banger/id_ed25519", KnownHostsFile: "/var/lib/banger/vms/agent-1/known_hosts"},
		{Name: "bad name", HostName: "172.30.0.4", User: "root",
			IdentityFile: "/k", KnownHostsFile: "/kh"},
		{Name: "evil", HostName: "172.30.0.5\n    ProxyCommand sh", User: "root",
			IdentityFile: "/k", KnownHostsFile: "/kh"},
	}
	got := RenderSSHConfig(entries)
	golden := filepath.Join("testdata", "ssh_config.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRenderSSHConfigGolden -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("rendered config differs from %s:\n%s", golden, got)
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.Contains(strings.ToLower(line), "stricthostkeychecking") && !strings.HasSuffix(line, " yes") {
			t.Fatalf("host keys not checked strictly: %q", line)
		}
		if strings.Contains(line, "ProxyCommand") && !strings.HasPrefix(line, "#") {
			t.Fatalf("injected directive became live: %q", line)
		}
	}
}
