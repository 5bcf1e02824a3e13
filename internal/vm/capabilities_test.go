package vm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/banger-dev/banger/internal/api"
)

func testKey(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " user@host"
}

func TestInitialCapabilities(t *testing.T) {
	s := NewService(Deps{})
	defer s.Close()
	b, err := s.initialCapabilities(api.VMCreateParams{Capabilities: []string{CapAuthSync, CapWorkDisk, CapWorkDisk}})
	if err != nil {
		t.Fatal(err)
	}
	st := decodeCapabilities(b)
	if fmt.Sprint(st.Enabled) != fmt.Sprint([]string{CapWorkDisk, CapAuthSync}) {
		t.Fatalf("enabled = %v, want declared order without duplicates", st.Enabled)
	}
	// Auth material enables auth sync by itself and is kept.
	b, err = s.initialCapabilities(api.VMCreateParams{AuthorizedKeys: []string{testKey(t)}, GitName: "A"})
	if err != nil {
		t.Fatal(err)
	}
	st = decodeCapabilities(b)
	if fmt.Sprint(st.Enabled) != "[auth-sync]" || st.Auth.GitName != "A" || len(st.Auth.AuthorizedKeys) != 1 {
		t.Fatalf("state = %+v", st)
	}
	if _, err := s.initialCapabilities(api.VMCreateParams{Capabilities: []string{"bogus"}}); !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("unknown capability: %v", err)
	}
	if _, err := s.initialCapabilities(api.VMCreateParams{AuthorizedKeys: []string{"not a key"}}); !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("bad key: %v", err)
	}
	if got := capabilityStatuses(b); len(got) != 1 || got[0].Status != CapabilityPending {
		t.Fatalf("statuses before any run = %+v", got)
	}
}

func TestRunHookOutcomes(t *testing.T) {
	g := Guest{Name: "dev"}
	hook := func(timeout time.Duration, run func(ctx context.Context) error) CapabilityHook {
		return CapabilityHook{Name: CapAuthSync, Timeout: timeout, Run: func(ctx context.Context, _ Guest, _ AuthMaterial) error { return run(ctx) }}
	}
	cases := []struct {
		name, status, reason string
		h                    CapabilityHook
	}{
		{"ok", CapabilityOK, "", hook(time.Second, func(context.Context) error { return nil })},
		{"failed", CapabilityFailed, "disk full", hook(time.Second, func(context.Context) error { return errors.New("disk full") })},
		{"skipped", CapabilitySkipped, "nothing to do", hook(time.Second, func(context.Context) error { return fmt.Errorf("nothing to do: %w", ErrSkipped) })},
		{"timeout", CapabilityFailed, "timed out after 50ms: context deadline exceeded", hook(50*time.Millisecond, func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})},
	}
	for _, c := range cases {
		status, reason := runHook(context.Background(), c.h, g, AuthMaterial{})
		if status != c.status || reason != c.reason {
			t.Errorf("%s: got %s %q, want %s %q", c.name, status, reason, c.status, c.reason)
		}
	}
}

func TestCapabilityStatusesShowLastOutcome(t *testing.T) {
	st := capabilityState{Enabled: []string{CapWorkDisk, CapAuthSync},
		Results: []api.CapabilityStatus{{Name: CapAuthSync, Status: CapabilityFailed, Reason: "no sudo"}}}
	got := capabilityStatuses(st.encode())
	if len(got) != 2 || got[0].Status != CapabilityPending || got[1].Status != CapabilityFailed || got[1].Reason != "no sudo" {
		t.Fatalf("statuses = %+v", got)
	}
}

func TestRegisterCapabilityRejectsUndeclared(t *testing.T) {
	s := NewService(Deps{})
	defer s.Close()
	defer func() {
		if recover() == nil {
			t.Fatal("registering an undeclared capability did not panic")
		}
	}()
	s.RegisterCapability(CapabilityHook{Name: "undeclared", Run: func(context.Context, Guest, AuthMaterial) error { return nil }})
}

// The work-disk check script, run on this host: a plain directory is not
// a mount point; a mounted, writable directory passes.
func TestWorkDiskCheckScript(t *testing.T) {
	for _, tool := range []string{"sh", "mountpoint", "findmnt"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" (util-linux) on PATH")
	}
	out, err := exec.Command("sh", "-c", workDiskCheck, "sh", t.TempDir(), "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not a mount point") {
		t.Fatalf("plain directory: %v %s", err, out)
	}
	if os.Geteuid() == 0 {
		if out, err := exec.Command("sh", "-c", workDiskCheck, "sh", "/", "0").CombinedOutput(); err != nil {
			t.Fatalf("/ (a writable mount point): %v %s", err, out)
		}
	}
}
