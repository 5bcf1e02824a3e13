package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/fake"
)

type running struct {
	cfg    config.Config
	cancel context.CancelFunc
	done   chan error
}

// startDaemon runs the daemon in-process without host networking and with
// the fake VMM.
func startDaemon(t testing.TB, stateDir string) *running {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = stateDir
	cfg.Socket = filepath.Join(stateDir, "s.sock")
	cfg.NoNetwork = true
	cfg.WebEnabled = false // tests run many daemons on one host
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	r := &running{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- Run(ctx, Options{Config: cfg, Version: "test", Ready: ready,
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			ExtraDrivers: map[string]vmm.Driver{"fake": fake.New()}})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("daemon exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready")
	}
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}

func dial(t testing.TB, r *running) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), r.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSocketModeAndSingleInstance(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, dir)
	defer r.stop(t)
	fi, err := os.Stat(r.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	// A second daemon on the same state dir or socket is refused.
	cfg := r.cfg
	err = Run(context.Background(), Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !api.IsKind(err, api.KindBusy) {
		t.Fatalf("second daemon: %v", err)
	}
	cfg.StateDir = t.TempDir()
	err = Run(context.Background(), Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !api.IsKind(err, api.KindBusy) || !strings.Contains(err.Error(), "already serving") {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Close without unlinking: a daemon that crashed leaves this behind.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	r := startDaemon(t, dir)
	defer r.stop(t)
	if _, err := dial(t, r).DaemonPing(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptedOperationsAreFailedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	op := store.Operation{ID: "deadbeef00000001", Kind: "image.build", Target: "default", State: "running", Stage: "debootstrap"}
	if err := st.PutOperation(context.Background(), &op); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := startDaemon(t, dir)
	defer r.stop(t)
	res, err := dial(t, r).OpList(context.Background(), api.OpListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ops) != 1 || res.Ops[0].State != api.OpFailed || !strings.Contains(res.Ops[0].Error, "interrupted") {
		t.Fatalf("ops after restart: %+v", res.Ops)
	}
	// Waiting on it returns at once: it will never run again.
	got, err := dial(t, r).OpWait(context.Background(), api.OpWaitParams{Op: "deadbeef"})
	if err != nil || got.State != api.OpFailed {
		t.Fatalf("wait: %+v %v", got, err)
	}
}

// Bad input over the wire gets its documented error and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	dir := t.TempDir()
	r := startDaemon(t, dir)
	defer r.stop(t)
	c := dial(t, r)
	ctx := context.Background()
	for _, f := range []string{"k", "r"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	if _, err := c.ImageRegister(ctx, api.ImageRegisterParams{Name: "img", Kernel: filepath.Join(dir, "k"), RootFS: filepath.Join(dir, "r")}); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		vms, _ := c.VMList(ctx, api.VMListParams{})
		ims, _ := c.ImageList(ctx)
		return fmt.Sprintf("%d vms %d images", len(vms.VMs), len(ims.Images))
	}
	before := snapshot()
	cases := []struct {
		name string
		call func() error
		kind api.ErrorKind
	}{
		{"bad vm name", func() error {
			_, err := c.VMCreate(ctx, api.VMCreateParams{Name: "Bad", Image: "img", VMM: "fake"})
			return err
		}, api.KindInvalidName},
		{"unknown image", func() error {
			_, err := c.VMCreate(ctx, api.VMCreateParams{Name: "ok", Image: "nope", VMM: "fake"})
			return err
		}, api.KindNotFound},
		{"unknown vmm", func() error {
			_, err := c.VMCreate(ctx, api.VMCreateParams{Name: "ok", Image: "img", VMM: "xen"})
			return err
		}, api.KindInvalidInput},
		{"bad memory", func() error {
			_, err := c.VMCreate(ctx, api.VMCreateParams{Name: "ok", Image: "img", VMM: "fake", MemoryMiB: 1})
			return err
		}, api.KindInvalidInput},
		{"unknown vm", func() error { _, err := c.VMStart(ctx, api.VMRef{VM: "ghost"}); return err }, api.KindNotFound},
		{"unknown op", func() error { _, err := c.OpCancel(ctx, api.OpRef{Op: "ffffffff"}); return err }, api.KindNotFound},
		{"duplicate image", func() error {
			_, err := c.ImageRegister(ctx, api.ImageRegisterParams{Name: "img", Kernel: filepath.Join(dir, "k"), RootFS: filepath.Join(dir, "r")})
			return err
		}, api.KindConflict},
		{"unknown recipe", func() error { _, err := c.ImageBuild(ctx, api.ImageBuildParams{Name: "x", Recipe: "arch"}); return err }, api.KindInvalidInput},
	}
	for _, tc := range cases {
		if err := tc.call(); !api.IsKind(err, tc.kind) {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.kind)
		}
	}
	// Wrong param types are rejected by the RPC layer before any service runs.
	conn, err := net.Dial("unix", r.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"name":5}}`)
	buf := make([]byte, 4096)
	n, _ := conn.Read(buf)
	if !strings.Contains(string(buf[:n]), "-32602") {
		t.Fatalf("wrong param type: %s", buf[:n])
	}
	if after := snapshot(); after != before {
		t.Fatalf("store changed: %s -> %s", before, after)
	}
}

func seedVMs(t testing.TB, dir string, n int) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(dir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	im := store.Image{Name: "img", Kernel: "/k", RootFS: "/r"}
	if err := st.CreateImage(context.Background(), &im); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		v := store.VM{Name: fmt.Sprintf("vm-%04d", i), State: "stopped", ImageID: im.ID, VMM: "fake", CPUs: 1, MemoryMiB: 256, DiskSizeMiB: 64}
		if err := st.CreateVM(context.Background(), &v); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkVMList1000 measures vm.list over the socket with 1,000 VMs in
// the store (target: well under 50 ms).
func BenchmarkVMList1000(b *testing.B) {
	dir := b.TempDir()
	seedVMs(b, dir, 1000)
	r := startDaemon(b, dir)
	defer r.stop(b)
	c := dial(b, r)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		res, err := c.VMList(ctx, api.VMListParams{})
		if err != nil || len(res.VMs) != 1000 {
			b.Fatalf("%d %v", len(res.VMs), err)
		}
	}
}

// BenchmarkPing measures the round trip of a trivial call over the socket.
func BenchmarkPing(b *testing.B) {
	r := startDaemon(b, b.TempDir())
	defer r.stop(b)
	c := dial(b, r)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if _, err := c.DaemonPing(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
