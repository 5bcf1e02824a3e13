// Package fake is a VMM driver for tests. It runs a real, tiny process per
// "VM" (a shell loop tagged with the VM id) so that start, signals, exit,
// wait and adoption after a daemon restart behave as they do for a real
// VMM process; there is no guest. It is kept honest by the shared contract
// in package vmmtest, which the QEMU driver passes too.
//
// Production builds never register it: only test binaries do.
package fake

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Driver is the fake VMM.
type Driver struct {
	mu       sync.Mutex
	paused   map[int]bool
	children vmm.Children
	// FailStart makes Start fail with this error (tests of failure paths).
	FailStart error
	// IgnoreShutdown makes the process ignore the graceful stop signal,
	// so callers must fall back to Kill.
	IgnoreShutdown bool
	// StartDelay makes Start take this long (after the process started),
	// standing in for a slow boot so tests can interrupt it.
	StartDelay time.Duration
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a fake driver.
func New() *Driver { return &Driver{paused: map[int]bool{}} }

func (d *Driver) Name() string                        { return "fake" }
func (d *Driver) Available(ctx context.Context) error { return nil }

func tag(id string) string { return "banger-fake-" + id }

// Start runs `sh -c <loop> banger-fake-<id>` in its own session.
func (d *Driver) Start(ctx context.Context, spec vmm.MachineSpec) (vmm.Handle, error) {
	if d.FailStart != nil {
		return vmm.Handle{}, d.FailStart
	}
	if spec.ID == "" || spec.RunDir == "" {
		return vmm.Handle{}, errors.New("fake: spec needs ID and RunDir")
	}
	for _, dr := range spec.Drives {
		if _, err := os.Stat(dr.Path); err != nil {
			return vmm.Handle{}, fmt.Errorf("drive %s: %w", dr.ID, err)
		}
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return vmm.Handle{}, err
	}
	// The script reports readiness only after its TERM trap is in place,
	// as a real VMM answers its API only once it handles requests.
	loop := `trap 'exit 0' TERM; : > "$1/fake.ready"; while :; do sleep 0.2; done`
	if d.IgnoreShutdown {
		loop = `trap '' TERM; : > "$1/fake.ready"; while :; do sleep 0.2; done`
	}
	_ = os.Remove(filepath.Join(spec.RunDir, "fake.ready"))
	// The run dir is an argument too, so tests can find "their" processes.
	cmd := exec.Command("/bin/sh", "-c", loop, tag(spec.ID), spec.RunDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if spec.ConsoleLog != "" {
		f, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return vmm.Handle{}, err
		}
		fmt.Fprintf(f, "fake VMM booting %s with %d vCPUs and %d MiB\n", spec.Name, spec.CPUs, spec.MemoryMiB)
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close()
	}
	c, err := d.children.Start(cmd)
	if err != nil {
		return vmm.Handle{}, err
	}
	pid, done := c.PID, c.Done()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(spec.RunDir, "fake.ready")); err == nil {
			break
		}
		select {
		case <-done:
			return vmm.Handle{}, errors.New("fake VMM exited during start")
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return vmm.Handle{}, errors.New("fake VMM did not become ready")
		}
	}
	st, err := vmm.ProcessStartTime(pid)
	if err != nil {
		_ = cmd.Process.Kill()
		<-done
		return vmm.Handle{}, err
	}
	d.children.Register(c, st)
	if err := os.WriteFile(filepath.Join(spec.RunDir, "fake.pid"), []byte(fmt.Sprint(pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return vmm.Handle{}, err
	}
	if d.StartDelay > 0 {
		select {
		case <-time.After(d.StartDelay):
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return vmm.Handle{}, ctx.Err()
		}
	}
	return vmm.Handle{PID: pid, StartTime: st, RunDir: spec.RunDir, Accel: "none", StartedAt: time.Now().UTC()}, nil
}

func (d *Driver) signal(h vmm.Handle, sig syscall.Signal) error {
	return vmm.SignalProcess(h.PID, h.StartTime, sig)
}

// Shutdown sends TERM and waits for the exit.
func (d *Driver) Shutdown(ctx context.Context, h vmm.Handle) error {
	if err := d.signal(h, syscall.SIGTERM); err != nil {
		if errors.Is(err, vmm.ErrNotRunning) {
			return nil
		}
		return err
	}
	_ = d.signal(h, syscall.SIGCONT)
	return d.Wait(ctx, h)
}

// Kill sends KILL and waits for the exit.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	if err := d.signal(h, syscall.SIGKILL); err != nil {
		return err
	}
	return d.Wait(ctx, h)
}

func (d *Driver) Pause(ctx context.Context, h vmm.Handle) error {
	if err := d.signal(h, syscall.SIGSTOP); err != nil {
		return err
	}
	d.mu.Lock()
	d.paused[h.PID] = true
	d.mu.Unlock()
	return nil
}

func (d *Driver) Resume(ctx context.Context, h vmm.Handle) error {
	if err := d.signal(h, syscall.SIGCONT); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.paused, h.PID)
	d.mu.Unlock()
	return nil
}

func (d *Driver) Status(ctx context.Context, h vmm.Handle) (vmm.Status, error) {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return vmm.Status{}, vmm.ErrNotRunning
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return vmm.Status{Running: true, Paused: d.paused[h.PID]}, nil
}

// Adopt checks pid, start time and the id tag in the command line.
func (d *Driver) Adopt(ctx context.Context, spec vmm.MachineSpec, h vmm.Handle) error {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return vmm.ErrNotRunning
	}
	argv, err := vmm.ProcessCmdline(h.PID)
	if err != nil {
		return err
	}
	if !slices.Contains(argv, tag(spec.ID)) {
		return fmt.Errorf("pid %d is not the fake VMM of %s: %w", h.PID, spec.ID, vmm.ErrNotRunning)
	}
	return nil
}

// Wait blocks until the process is gone (reaped when it is our child).
func (d *Driver) Wait(ctx context.Context, h vmm.Handle) error {
	return d.children.Wait(ctx, h, "fake VMM")
}
