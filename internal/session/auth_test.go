package session

import (
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/vm"
)

func TestSyncAuthOnLocalShell(t *testing.T) {
	t.Parallel()
	_, err := exec.LookPath("git")
	testenv.Require(t, err == nil, "git is not installed")
	e := newLocal(t)
	src := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(src, []byte(`{"token":"s3cret"}`), 0o644)
	e.svc.authFiles = []config.AuthFile{{Src: src, Dst: ".local/share/opencode/auth.json"}}
	// A line the user added by hand must survive syncs.
	os.MkdirAll(filepath.Join(e.home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(e.home, ".ssh", "authorized_keys"), []byte("ssh-ed25519 AAAA mine\n"), 0o600)

	for _, keys := range [][]string{{"ssh-ed25519 AAAA one"}, {"ssh-ed25519 AAAA two"}} {
		res, err := e.svc.SyncAuth(context.Background(), api.VMSyncAuthParams{VM: "dev", AuthorizedKeys: keys, GitName: "Ada L", GitEmail: "ada@example.org"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Files) != 3 {
			t.Fatalf("files = %v", res.Files)
		}
	}
	ak, _ := os.ReadFile(filepath.Join(e.home, ".ssh", "authorized_keys"))
	if strings.Count(string(ak), "banger: synced keys begin") != 1 || !strings.Contains(string(ak), "mine") ||
		!strings.Contains(string(ak), "two") || strings.Contains(string(ak), "one") {
		t.Fatalf("authorized_keys =\n%s", ak)
	}
	dst := filepath.Join(e.home, ".local/share/opencode/auth.json")
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("auth file: %v %v, want mode 0600", fi, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != `{"token":"s3cret"}` {
		t.Fatalf("auth file content = %q", b)
	}
	cmd := exec.Command("git", "config", "--global", "user.email")
	cmd.Env = append(os.Environ(), "HOME="+e.home)
	if out, _ := cmd.Output(); strings.TrimSpace(string(out)) != "ada@example.org" {
		t.Fatalf("git email = %q", out)
	}
	if len(e.vms.recs) != 2 || e.vms.recs[1].Status != vm.CapabilityOK {
		t.Fatalf("recorded outcomes = %+v", e.vms.recs)
	}

	// A missing host file fails the sync, says which, and is recorded.
	e.svc.authFiles = append(e.svc.authFiles, config.AuthFile{Src: "/nonexistent/creds", Dst: "c"})
	if _, err := e.svc.SyncAuth(context.Background(), api.VMSyncAuthParams{VM: "dev"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/creds") {
		t.Fatalf("sync with a missing auth file: %v", err)
	}
	if last := e.vms.recs[len(e.vms.recs)-1]; last.Status != vm.CapabilityFailed {
		t.Fatalf("last outcome = %+v, want failed", last)
	}
}
