// Package vmmtest is the behavioural contract every vmm.Driver must meet.
// The same scenarios run against the fake driver in unit tests and against
// the real QEMU driver (with a real guest) in integration tests, so the
// fake cannot drift from what the daemon relies on.
package vmmtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Setup gives the contract a fresh driver and a bootable spec. NewDriver
// must return a new instance each call (it stands for a restarted daemon).
type Setup struct {
	NewDriver func() vmm.Driver
	// Spec returns a spec for a machine that boots and, when Graceful is
	// true, powers off when asked to shut down.
	Spec func(t *testing.T) vmm.MachineSpec
	// BootWait is how long to let a machine boot before Shutdown (a real
	// guest must be far enough into boot to handle ACPI).
	BootWait func(t *testing.T, spec vmm.MachineSpec, h vmm.Handle)
	// Timeout bounds each step.
	Timeout time.Duration
}

// Run runs every scenario as a subtest.
func Run(t *testing.T, s Setup) {
	if s.Timeout == 0 {
		s.Timeout = 30 * time.Second
	}
	t.Run("LifecycleAndAdopt", func(t *testing.T) { lifecycle(t, s) })
	t.Run("GracefulShutdown", func(t *testing.T) { graceful(t, s) })
	t.Run("StartFailureLeavesNothing", func(t *testing.T) { startFailure(t, s) })
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func lifecycle(t *testing.T, s Setup) {
	d := s.NewDriver()
	spec := s.Spec(t)
	ctx := ctxT(t, s.Timeout*4)
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	if h.PID <= 0 || h.StartTime == 0 || h.StartedAt.IsZero() {
		t.Fatalf("incomplete handle %+v", h)
	}
	st, err := d.Status(ctx, h)
	if err != nil || !st.Running || st.Paused {
		t.Fatalf("Status after start = %+v, %v", st, err)
	}
	if err := d.Pause(ctx, h); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, err := d.Status(ctx, h); err != nil || !st.Paused {
		t.Fatalf("Status after pause = %+v, %v", st, err)
	}
	if err := d.Resume(ctx, h); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st, err := d.Status(ctx, h); err != nil || st.Paused || !st.Running {
		t.Fatalf("Status after resume = %+v, %v", st, err)
	}
	// A new driver instance stands for a restarted daemon.
	d2 := s.NewDriver()
	if err := d2.Adopt(ctx, spec, h); err != nil {
		t.Fatalf("Adopt by a new driver: %v", err)
	}
	other := spec
	other.ID = spec.ID + "x"
	if err := d2.Adopt(ctx, other, h); err == nil {
		t.Fatal("Adopt accepted a process that belongs to another VM")
	}
	forged := h
	forged.StartTime++
	if err := d2.Adopt(ctx, spec, forged); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt with a wrong start time (pid reuse) = %v, want ErrNotRunning", err)
	}
	if err := d2.Kill(ctx, h); err != nil {
		t.Fatalf("Kill by the adopting driver: %v", err)
	}
	wctx := ctxT(t, s.Timeout)
	if err := d.Wait(wctx, h); err != nil {
		t.Fatalf("Wait after kill: %v", err)
	}
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("process alive after Kill")
	}
	if err := d2.Adopt(ctx, spec, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt of a dead process = %v, want ErrNotRunning", err)
	}
}

func graceful(t *testing.T, s Setup) {
	d := s.NewDriver()
	spec := s.Spec(t)
	ctx := ctxT(t, s.Timeout*4)
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	if s.BootWait != nil {
		s.BootWait(t, spec, h)
	}
	sctx := ctxT(t, s.Timeout)
	if err := d.Shutdown(sctx, h); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("process alive after a successful Shutdown")
	}
}

func startFailure(t *testing.T, s Setup) {
	d := s.NewDriver()
	spec := s.Spec(t)
	spec.Drives = append(spec.Drives, vmm.Drive{ID: "missing", Path: "/nonexistent/banger-contract.img", Format: "raw"})
	ctx := ctxT(t, s.Timeout)
	h, err := d.Start(ctx, spec)
	if err == nil {
		_ = d.Kill(context.Background(), h)
		t.Fatal("Start with a missing drive succeeded")
	}
	if h.PID != 0 && vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("failed Start left a process running")
	}
}
