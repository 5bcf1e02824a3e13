package vm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/fake"
)

// fakeNet is an in-memory TAP pool that records what is handed out.
type fakeNet struct {
	mu       sync.Mutex
	next     int
	acquired map[string]bool
}

func (n *fakeNet) AcquireTAP(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := fmt.Sprintf("tap%d", n.next)
	n.next++
	n.acquired[name] = true
	return name, nil
}
func (n *fakeNet) ReleaseTAP(ctx context.Context, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.acquired, name)
	return nil
}
func (n *fakeNet) TAPExists(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.acquired[name]
}
func (n *fakeNet) ForgetNeighbor(netip.Addr) error                  { return nil }
func (n *fakeNet) Reconcile(context.Context, map[string]bool) error { return nil }
func (n *fakeNet) Gateway() netip.Addr                              { return netip.MustParseAddr("172.30.0.1") }
func (n *fakeNet) Subnet() netip.Prefix                             { return netip.MustParsePrefix("172.30.0.0/24") }
func (n *fakeNet) held() int                                        { n.mu.Lock(); defer n.mu.Unlock(); return len(n.acquired) }

type harness struct {
	svc   *Service
	st    *store.Store
	ops   *opstate.Registry
	net   *fakeNet
	lay   paths.Layout
	image string
}

func newHarness(t *testing.T, withNet bool) *harness {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	lay, _ := paths.New(filepath.Join(dir, "state"), "", "")
	os.MkdirAll(lay.VMsDir(), 0o700)
	for _, f := range []string{"kernel", "rootfs"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	im := store.Image{Name: "img", Kernel: filepath.Join(dir, "kernel"), RootFS: filepath.Join(dir, "rootfs")}
	if err := st.CreateImage(ctx, &im); err != nil {
		t.Fatal(err)
	}
	key, err := guest.EnsureClientKey(filepath.Join(dir, "ssh"))
	if err != nil {
		t.Fatal(err)
	}
	ops := opstate.New(ctx, nil)
	h := &harness{st: st, ops: ops, lay: lay, image: im.ID, net: &fakeNet{acquired: map[string]bool{}}}
	d := Deps{Store: st, Layout: lay, Ops: ops, Drivers: map[string]vmm.Driver{"fake": fake.New()},
		Guests: guest.NewPool(key, nil), Client: key, DiskHost: disk.Host{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		WriteConfig:     func(path string, c GuestConfig) error { return os.WriteFile(path, []byte(c.IP), 0o600) },
		NoNetworkReason: "test",
		Defaults:        Defaults{Image: "img", VMM: "fake", CPUs: 1, MemoryMiB: 128, DiskSizeMiB: 64, StopTimeout: 2 * time.Second, BootTimeout: 5 * time.Second},
	}
	if withNet {
		d.Network = h.net
	}
	h.svc = NewService(d)
	t.Cleanup(h.svc.Close)
	return h
}

// assertNothingLeft checks that no trace of any VM remains.
func (h *harness) assertNothingLeft(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if vms, _ := h.st.ListVMs(ctx, ""); len(vms) != 0 {
		t.Errorf("VM records left: %v", vms)
	}
	if ips, _ := h.st.ListIPAllocations(ctx); len(ips) != 0 {
		t.Errorf("IP allocations left: %v", ips)
	}
	if n := h.net.held(); n != 0 {
		t.Errorf("%d TAPs not returned", n)
	}
	for _, dir := range []string{h.lay.VMsDir(), filepath.Join(h.lay.RunDir, "vms")} {
		if e, _ := os.ReadDir(dir); len(e) != 0 {
			t.Errorf("files left in %s: %v", dir, e)
		}
	}
	if procs := fakeProcs(h.lay.StateDir); len(procs) != 0 {
		t.Errorf("VMM processes left: %v", procs)
	}
}

// fakeProcs lists fake VMM processes started under stateDir.
func fakeProcs(stateDir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), "banger-fake-") && strings.Contains(string(b), stateDir) {
			st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if !strings.Contains(string(st), ") Z ") {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

func TestCreateCancelledAtEveryStageLeavesNothing(t *testing.T) {
	// Every stage, including boot, where the fake VMM process already runs.
	for _, stage := range CreateStages[1:] {
		t.Run(stage, func(t *testing.T) {
			h := newHarness(t, true)
			reached := make(chan struct{})
			h.svc.AfterStage = func(ctx context.Context, s string) {
				if s == stage {
					close(reached)
					<-ctx.Done()
				}
			}
			snap, err := h.svc.Create(context.Background(), api.VMCreateParams{Name: "dev"})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-time.After(10 * time.Second):
				t.Fatalf("stage %s never reached", stage)
			}
			h.ops.Cancel(snap.ID)
			final, _ := h.ops.Wait(context.Background(), snap.ID, time.Time{})
			if final.State != opstate.Cancelled {
				t.Fatalf("op state %s (%s)", final.State, final.Error)
			}
			h.assertNothingLeft(t)
		})
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	h := newHarness(t, true)
	h.svc.Drivers["fake"].(*fake.Driver).FailStart = fmt.Errorf("no kvm today")
	snap, err := h.svc.Create(context.Background(), api.VMCreateParams{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	final, _ := h.ops.Wait(context.Background(), snap.ID, time.Time{})
	if final.State != opstate.Failed || !strings.Contains(final.Error, "no kvm today") {
		t.Fatalf("op %s: %q", final.State, final.Error)
	}
	h.assertNothingLeft(t)
}

func TestConflictingOperationsAreBusy(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	reached := make(chan struct{})
	release := make(chan struct{})
	h.svc.AfterStage = func(ctx context.Context, s string) {
		if s == StageDisks {
			close(reached)
			<-release
		}
	}
	snap, err := h.svc.Create(ctx, api.VMCreateParams{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	<-reached
	for name, call := range map[string]func() error{
		"start":  func() error { _, err := h.svc.Start(ctx, api.VMRef{VM: "dev"}); return err },
		"delete": func() error { _, err := h.svc.Delete(ctx, api.VMDeleteParams{VM: "dev", Force: true}); return err },
		"set":    func() error { c := 2; _, err := h.svc.Set(ctx, api.VMSetParams{VM: "dev", CPUs: &c}); return err },
	} {
		if err := call(); !api.IsKind(err, api.KindBusy) {
			t.Errorf("%s during create: %v, want busy", name, err)
		}
	}
	close(release)
	final, _ := h.ops.Wait(ctx, snap.ID, time.Time{})
	if final.State != opstate.Succeeded {
		t.Fatalf("create: %s %s", final.State, final.Error)
	}
	v, _ := h.svc.Show(ctx, api.VMRef{VM: "dev"})
	if v.State != api.VMRunning || v.CPUs != 1 {
		t.Fatalf("after create: %+v", v)
	}
	if _, err := h.svc.Delete(ctx, api.VMDeleteParams{VM: "dev", Force: true}); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft(t)
}

func TestStopFallsBackToKill(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	h.svc.Drivers["fake"].(*fake.Driver).IgnoreShutdown = true
	snap, _ := h.svc.Create(ctx, api.VMCreateParams{Name: "dev"})
	if f, _ := h.ops.Wait(ctx, snap.ID, time.Time{}); f.State != opstate.Succeeded {
		t.Fatalf("create: %s", f.Error)
	}
	v, err := h.svc.Stop(ctx, api.VMStopParams{VM: "dev", TimeoutSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v.State != api.VMStopped || !strings.Contains(v.StateReason, "killed after graceful shutdown") {
		t.Fatalf("after stop: %s %q", v.State, v.StateReason)
	}
	if procs := fakeProcs(h.lay.StateDir); len(procs) != 0 {
		t.Fatalf("process survived: %v", procs)
	}
}

func TestSetValidation(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	snap, _ := h.svc.Create(ctx, api.VMCreateParams{Name: "dev", NoStart: true})
	h.ops.Wait(ctx, snap.ID, time.Time{})
	zero, huge, small := 0, 1<<30, 10
	for _, p := range []api.VMSetParams{{VM: "dev"}, {VM: "dev", CPUs: &zero}, {VM: "dev", MemoryMiB: &huge}, {VM: "dev", DiskSizeMiB: &small}} {
		if _, err := h.svc.Set(ctx, p); !api.IsKind(err, api.KindInvalidInput) {
			t.Errorf("set %+v: %v", p, err)
		}
	}
	before, _ := h.svc.Show(ctx, api.VMRef{VM: "dev"})
	if before.CPUs != 1 || before.DiskSizeMiB != 64 {
		t.Fatalf("invalid set changed the VM: %+v", before)
	}
	four, grow := 4, 128
	v, err := h.svc.Set(ctx, api.VMSetParams{VM: "dev", CPUs: &four, DiskSizeMiB: &grow})
	if err != nil || v.CPUs != 4 || v.DiskSizeMiB != 128 || v.Pending != nil {
		t.Fatalf("set on stopped VM: %+v %v", v, err)
	}
	if sz, err := disk.WorkDiskSize(h.lay.VMWorkDisk(v.ID)); err != nil || sz != 128<<20 {
		t.Fatalf("work disk size %d %v", sz, err)
	}
}
