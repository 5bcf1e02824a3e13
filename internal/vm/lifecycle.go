package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/vmm"
)

// GuestConfig is what the guest's boot unit reads from the config drive.
type GuestConfig struct {
	Hostname       string
	IP             string // CIDR
	Gateway        string
	MAC            string
	User           string
	SearchDomain   string
	DNS            []string
	AuthorizedKeys []string
	HostKeyPrivate []byte
	HostKeyPublic  []byte
}

// ConfigDriveWriter writes a config drive image; the format belongs to
// the guest image (internal/image/builder).
type ConfigDriveWriter func(path string, c GuestConfig) error

// bootAttempts bounds retries of a guest that never reached SSH: under
// TCG a guest kernel occasionally hangs early (HOST-NOTES), and one
// retry turns that into a slower boot instead of a failure.
const bootAttempts = 2

// boot starts the VMM for a VM that is in state from and waits for SSH.
// The caller holds the VM lock. On failure the process is gone and the
// VM is left in from's failure state (error for start, untouched record
// for create, whose caller removes it).
func (s *Service) boot(ctx context.Context, op *opstate.Op, id string, from State, stageFn func(string) error) error {
	stage := func(name string) {
		if stageFn != nil {
			_ = stageFn(name) // cancellation is noticed by the steps that follow
		} else if op != nil {
			op.Stage(name)
		}
	}
	logf := func(format string, args ...any) {
		if op != nil {
			op.Logf(format, args...)
		}
		s.Log.Info(fmt.Sprintf(format, args...), "vm", id)
	}
	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	r, err := load(v)
	if err != nil {
		return err
	}
	drv, err := s.driver(r.VMM)
	if err != nil {
		return err
	}
	if err := s.preflight(ctx, r, drv); err != nil {
		return err
	}
	if err := s.applyPending(ctx, &r); err != nil {
		return err
	}
	img, err := s.Store.GetImage(ctx, r.ImageID)
	if err != nil {
		return err
	}
	if from != Creating { // a create announced this stage already
		stage(StageConfig)
	}
	if err := s.writeConfigDrive(r); err != nil {
		return err
	}
	rootDev, err := r.overlay.Activate(ctx)
	if err != nil {
		return fmt.Errorf("activate system overlay: %w", err)
	}
	// A create stays "creating" until the guest is up, so a daemon that
	// dies meanwhile knows to undo the whole create on restart.
	booting := Starting
	if from == Creating {
		booting = Creating
	} else if _, err := s.Store.TransitionVM(ctx, id, []string{string(from)}, string(Starting), ""); err != nil {
		_ = r.overlay.Deactivate(context.Background())
		return err
	}
	r.State = string(booting)
	spec := vmm.MachineSpec{
		ID: id, Name: r.Name, CPUs: r.CPUs, MemoryMiB: r.MemoryMiB,
		Kernel: img.Kernel, KernelRaw: img.KernelRaw, Initrd: img.Initrd, KernelArgs: img.KernelArgs,
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: rootDev, Format: r.overlay.Format},
			{ID: "config", Path: s.Layout.VMConfigDrive(id), Format: "raw", ReadOnly: true},
			{ID: "work", Path: s.Layout.VMWorkDisk(id), Format: "raw"},
		},
		RunDir: s.Layout.VMRunDir(id), ConsoleLog: s.Layout.VMConsoleLog(id),
	}
	if r.TAP != "" {
		spec.NICs = []vmm.NIC{{TAP: r.TAP, MAC: r.MAC}}
	}
	if s.Network != nil {
		if ip, err := netip.ParseAddr(r.IP); err == nil {
			if err := s.Network.ForgetNeighbor(ip); err != nil {
				s.Log.Warn("forget stale ARP entry", "vm", r.Name, "ip", r.IP, "err", err)
			}
		}
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return err
	}

	var lastErr error
	for attempt := 1; attempt <= bootAttempts; attempt++ {
		stage(StageBoot)
		if err := ctx.Err(); err != nil {
			lastErr = err
			break
		}
		t0 := time.Now()
		h, err := drv.Start(ctx, spec)
		if err != nil {
			lastErr = fmt.Errorf("start %s: %w", r.VMM, err)
			break
		}
		r.handle = h
		r.StartedAt = h.StartedAt
		if err := s.save(ctx, &r); err != nil {
			_ = drv.Kill(context.Background(), h)
			lastErr = err
			break
		}
		logf("%s started (pid %d, accel %s) in %s", r.VMM, h.PID, orNone(h.Accel), time.Since(t0).Round(time.Millisecond))
		stage(StageSSH)
		if err := ctx.Err(); err != nil {
			_ = drv.Kill(context.Background(), h)
			lastErr = err
			break
		}
		if s.Network == nil {
			logf("host networking disabled (%s): not waiting for SSH", s.NoNetworkReason)
			lastErr = nil
			break
		}
		err = s.waitSSH(ctx, r)
		if err == nil {
			logf("guest reachable over SSH %s after start", time.Since(t0).Round(100*time.Millisecond))
			lastErr = nil
			break
		}
		lastErr = err
		_ = drv.Kill(context.Background(), h)
		s.Guests.Forget(id)
		if ctx.Err() != nil {
			break
		}
		logf("guest not reachable (attempt %d/%d): %v; console tail:\n%s", attempt, bootAttempts, err, tail(spec.ConsoleLog, 15))
	}
	if lastErr != nil {
		_ = r.overlay.Deactivate(context.Background())
		if from != Creating {
			reason := lastErr.Error()
			if ctx.Err() != nil {
				reason = "start cancelled"
			}
			_, _ = s.Store.TransitionVM(context.Background(), id, []string{string(Starting)}, string(Error), reason)
		}
		return lastErr
	}
	// Capability hooks (capabilities.go): the guest answers SSH, so run
	// the VM's enabled hooks now. A failing hook is recorded, never fatal.
	if s.Network != nil {
		s.runCapabilities(ctx, id, logf)
	}
	if _, err := s.Store.TransitionVM(ctx, id, []string{string(booting)}, string(Running), ""); err != nil {
		_ = drv.Kill(context.Background(), r.handle)
		return err
	}
	s.watch(id, drv, r.handle)
	return nil
}

func (s *Service) waitSSH(ctx context.Context, r record) error {
	t, err := s.target(r)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.Defaults.BootTimeout)
	defer cancel()
	err = guest.WaitReady(wctx, s.Guests, t, 250*time.Millisecond)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("guest did not answer SSH within %s: %w", s.Defaults.BootTimeout, err)
	}
	return err
}

func (s *Service) target(r record) (guest.Target, error) {
	pubBytes, err := s.hostPublicKey(r.ID)
	if err != nil {
		return guest.Target{}, fmt.Errorf("VM %s has no pinned host key: %w", r.Name, err)
	}
	pub, err := guest.ParsePublic(pubBytes)
	if err != nil {
		return guest.Target{}, err
	}
	return guest.Target{VMID: r.ID, Addr: net.JoinHostPort(r.IP, "22"), User: s.Defaults.GuestUser, HostKey: pub}, nil
}

func (s *Service) writeConfigDrive(r record) error {
	priv, err := os.ReadFile(s.Layout.VMHostKey(r.ID))
	if err != nil {
		return fmt.Errorf("read VM host key: %w", err)
	}
	pub, err := s.hostPublicKey(r.ID)
	if err != nil {
		return err
	}
	c := GuestConfig{
		Hostname: r.Name, MAC: r.MAC, User: s.Defaults.GuestUser, SearchDomain: s.Defaults.DNSZone,
		AuthorizedKeys: []string{strings.TrimSpace(s.Client.AuthorizedKey())},
		HostKeyPrivate: priv, HostKeyPublic: pub,
	}
	subnet := s.Defaults.fallbackSubnet()
	gw := subnet.Addr().Next()
	if s.Network != nil {
		subnet, gw = s.Network.Subnet(), s.Network.Gateway()
		c.DNS = []string{gw.String()}
	}
	c.IP = fmt.Sprintf("%s/%d", r.IP, subnet.Bits())
	c.Gateway = gw.String()
	if s.WriteConfig == nil {
		return errors.New("no config drive writer configured")
	}
	return s.WriteConfig(s.Layout.VMConfigDrive(r.ID), c)
}

// preflight checks what a start needs, with a clear error for each gap.
func (s *Service) preflight(ctx context.Context, r record, drv vmm.Driver) error {
	if err := drv.Available(ctx); err != nil {
		return api.Errorf(api.KindUnavailable, "VMM %s unavailable: %v", r.VMM, err).WithHint("run banger doctor")
	}
	img, err := s.Store.GetImage(ctx, r.ImageID)
	if err != nil {
		return fmt.Errorf("image of VM %s: %w", r.Name, err)
	}
	need := map[string]string{"kernel": img.Kernel, "root filesystem": img.RootFS, "work disk": s.Layout.VMWorkDisk(r.ID)}
	if img.Initrd != "" {
		need["initrd"] = img.Initrd
	}
	if r.overlay.File != "" {
		need["system overlay"] = r.overlay.File
	}
	for what, p := range need {
		if _, err := os.Stat(p); err != nil {
			return api.Errorf(api.KindUnavailable, "preflight: %s %s is missing: %v", what, p, err).
				WithHint("the image or VM files were removed; re-register the image or recreate the VM")
		}
	}
	if r.TAP != "" {
		if s.Network == nil {
			return api.Errorf(api.KindUnavailable, "preflight: VM %s needs TAP %s but host networking is disabled (%s)", r.Name, r.TAP, s.NoNetworkReason)
		}
		if !s.Network.TAPExists(r.TAP) {
			// The device vanished (host reboot, manual cleanup): take a new one.
			_ = s.Network.ReleaseTAP(ctx, r.TAP)
			tap, aerr := s.Network.AcquireTAP(ctx)
			if aerr != nil {
				return fmt.Errorf("preflight: TAP %s missing and no replacement: %w", r.TAP, aerr)
			}
			r.TAP = tap
			if err := s.save(ctx, &r); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyPending folds `vm set` changes that wait for a start into the spec.
func (s *Service) applyPending(ctx context.Context, r *record) error {
	changed := false
	if r.PendingCPUs != 0 {
		r.CPUs, r.PendingCPUs, changed = r.PendingCPUs, 0, true
	}
	if r.PendingMemoryMiB != 0 {
		r.MemoryMiB, r.PendingMemoryMiB, changed = r.PendingMemoryMiB, 0, true
	}
	if r.PendingDiskSizeMiB != 0 {
		if err := disk.GrowWorkDisk(ctx, s.Layout.VMWorkDisk(r.ID), int64(r.PendingDiskSizeMiB)<<20); err != nil {
			return fmt.Errorf("grow work disk: %w", err)
		}
		r.DiskSizeMiB, r.PendingDiskSizeMiB, changed = r.PendingDiskSizeMiB, 0, true
	}
	if changed {
		return s.save(ctx, r)
	}
	return nil
}

// watch notices a VMM process that exits on its own (guest poweroff,
// crash) and records it, so state does not wait for the reaper.
func (s *Service) watch(id string, drv vmm.Driver, h vmm.Handle) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := drv.Wait(s.ctx, h); err != nil && s.ctx.Err() != nil {
			return
		}
		// Let a stop/kill in progress record its own outcome.
		unlock, err := s.locks.TryLock(id, id, "reap")
		if err != nil {
			return
		}
		defer unlock()
		s.markExited(context.Background(), id, h, "VMM process exited (guest powered off or crashed; see banger vm logs)")
	}()
}

// markExited records that a live VM's process is gone, if the stored
// handle is still the one that exited.
func (s *Service) markExited(ctx context.Context, id string, h vmm.Handle, reason string) {
	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return
	}
	r, err := load(v)
	if err != nil || !State(r.State).Live() || r.handle.PID != h.PID || r.handle.StartTime != h.StartTime {
		return
	}
	_ = r.overlay.Deactivate(ctx)
	s.Guests.Forget(id)
	_ = os.RemoveAll(s.Layout.VMRunDir(id))
	if _, err := s.Store.TransitionVM(ctx, id, []string{string(Starting), string(Running), string(Paused), string(Stopping)}, string(Stopped), reason); err == nil {
		s.Log.Warn("VM stopped unexpectedly", "vm", r.Name, "reason", reason)
	}
}

func (s *Service) lock(ctx context.Context, ref, op string) (record, func(), error) {
	r, err := s.find(ctx, ref)
	if err != nil {
		return record{}, nil, err
	}
	unlock, err := s.locks.TryLock(r.ID, r.Name, op)
	if err != nil {
		return record{}, nil, err
	}
	// Re-read under the lock: the state may have changed meanwhile.
	v, err := s.Store.GetVM(ctx, r.ID)
	if err != nil {
		unlock()
		return record{}, nil, err
	}
	r, err = load(v)
	if err != nil {
		unlock()
		return record{}, nil, err
	}
	return r, unlock, nil
}

// Start boots a stopped VM and waits until SSH answers.
func (s *Service) Start(ctx context.Context, p api.VMRef) (api.VM, error) {
	r, unlock, err := s.lock(ctx, p.VM, "start")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	from := State(r.State)
	if err := Transition(r.Name, from, Starting); err != nil {
		return api.VM{}, err
	}
	if err := s.boot(ctx, nil, r.ID, from, nil); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}

// Stop shuts the guest down gracefully and kills it after the timeout.
func (s *Service) Stop(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	r, unlock, err := s.lock(ctx, p.VM, "stop")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if err := s.stopLocked(ctx, r, p.TimeoutSeconds); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}

func (s *Service) stopLocked(ctx context.Context, r record, timeoutSeconds int) error {
	from := State(r.State)
	if err := Transition(r.Name, from, Stopping); err != nil {
		return err
	}
	drv, err := s.driver(r.VMM)
	if err != nil {
		return err
	}
	if _, err := s.Store.TransitionVM(ctx, r.ID, []string{string(from)}, string(Stopping), ""); err != nil {
		return err
	}
	timeout := s.Defaults.StopTimeout
	if timeoutSeconds > 0 {
		timeout = time.Duration(timeoutSeconds) * time.Second
	}
	if from == Paused {
		_ = drv.Resume(ctx, r.handle) // a paused guest cannot react to ACPI
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	err = drv.Shutdown(sctx, r.handle)
	cancel()
	reason := "stopped"
	if err != nil {
		reason = fmt.Sprintf("killed after graceful shutdown did not finish in %s", timeout)
		s.Log.Info("graceful stop timed out, killing", "vm", r.Name, "err", err)
		if kerr := drv.Kill(context.Background(), r.handle); kerr != nil && !errors.Is(kerr, vmm.ErrNotRunning) {
			_, _ = s.Store.TransitionVM(context.Background(), r.ID, []string{string(Stopping)}, string(Error), "kill failed: "+kerr.Error())
			return fmt.Errorf("kill VMM: %w", kerr)
		}
	}
	return s.finishStop(r, reason)
}

func (s *Service) finishStop(r record, reason string) error {
	ctx := context.Background()
	s.Guests.Forget(r.ID)
	if err := r.overlay.Deactivate(ctx); err != nil {
		s.Log.Warn("deactivate overlay", "vm", r.Name, "err", err)
	}
	_ = os.RemoveAll(s.Layout.VMRunDir(r.ID))
	_, err := s.Store.TransitionVM(ctx, r.ID, []string{string(Stopping), string(Running), string(Paused), string(Starting)}, string(Stopped), reason)
	return err
}

// Restart is stop then start under one lock.
func (s *Service) Restart(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	r, unlock, err := s.lock(ctx, p.VM, "restart")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if State(r.State).Live() {
		if err := s.stopLocked(ctx, r, p.TimeoutSeconds); err != nil {
			return api.VM{}, err
		}
	}
	v, err := s.Store.GetVM(ctx, r.ID)
	if err != nil {
		return api.VM{}, err
	}
	if err := s.boot(ctx, nil, r.ID, State(v.State), nil); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}

// Kill ends the VMM process at once.
func (s *Service) Kill(ctx context.Context, p api.VMRef) (api.VM, error) {
	r, unlock, err := s.lock(ctx, p.VM, "kill")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if !State(r.State).Live() {
		return api.VM{}, api.Errorf(api.KindConflict, "VM %q is %s; nothing to kill", r.Name, r.State)
	}
	if err := s.killQuietly(ctx, r.ID); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}

// killQuietly kills whatever process the VM has and records it stopped.
// It is used by kill, delete and failed creates; a missing process is fine.
func (s *Service) killQuietly(ctx context.Context, id string) error {
	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	r, err := load(v)
	if err != nil {
		return err
	}
	if r.handle.PID != 0 {
		if drv, derr := s.driver(r.VMM); derr == nil {
			if err := drv.Kill(ctx, r.handle); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
				return fmt.Errorf("kill VMM: %w", err)
			}
		}
	}
	if State(r.State).Live() {
		return s.finishStop(r, "killed")
	}
	s.Guests.Forget(id)
	_ = r.overlay.Deactivate(ctx)
	return nil
}

// Delete removes a VM and everything it owns. A live VM needs Force.
func (s *Service) Delete(ctx context.Context, p api.VMDeleteParams) (api.Empty, error) {
	r, unlock, err := s.lock(ctx, p.VM, "delete")
	if err != nil {
		return api.Empty{}, err
	}
	defer unlock()
	if State(r.State).Live() && !p.Force {
		return api.Empty{}, api.Errorf(api.KindConflict, "VM %q is %s", r.Name, r.State).
			WithHint("stop it first (banger vm stop " + r.Name + ") or delete with --force")
	}
	return api.Empty{}, s.deleteLocked(ctx, r)
}

// deleteLocked kills the VM if needed and removes everything it owns. The
// caller holds the VM lock.
func (s *Service) deleteLocked(ctx context.Context, r record) error {
	if err := s.killQuietly(ctx, r.ID); err != nil {
		return err
	}
	if err := r.overlay.Remove(ctx); err != nil {
		return fmt.Errorf("remove system overlay: %w", err)
	}
	if r.TAP != "" && s.Network != nil {
		if err := s.Network.ReleaseTAP(ctx, r.TAP); err != nil {
			s.Log.Warn("release TAP", "vm", r.Name, "tap", r.TAP, "err", err)
		}
	}
	if err := os.RemoveAll(s.Layout.VMDir(r.ID)); err != nil {
		return fmt.Errorf("remove VM files: %w", err)
	}
	_ = os.RemoveAll(s.Layout.VMRunDir(r.ID))
	// The IP allocation goes with the row (ON DELETE CASCADE).
	return s.Store.DeleteVM(ctx, r.ID)
}

// Set changes resources: at once for a stopped VM, at next start for a
// running one (reported as pending).
func (s *Service) Set(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	if p.CPUs == nil && p.MemoryMiB == nil && p.DiskSizeMiB == nil {
		return api.VM{}, api.Errorf(api.KindInvalidInput, "nothing to set: give --cpus, --memory or --disk-size")
	}
	r, unlock, err := s.lock(ctx, p.VM, "set")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	cpus, mem, dsk := r.CPUs, r.MemoryMiB, r.DiskSizeMiB
	if p.CPUs != nil {
		cpus = *p.CPUs
	}
	if p.MemoryMiB != nil {
		mem = *p.MemoryMiB
	}
	if p.DiskSizeMiB != nil {
		dsk = *p.DiskSizeMiB
		if dsk < r.DiskSizeMiB {
			return api.VM{}, api.Errorf(api.KindInvalidInput, "disk size %d MiB is smaller than the current %d MiB: work disks only grow", dsk, r.DiskSizeMiB)
		}
	}
	if err := validateResources(cpus, mem, dsk); err != nil {
		return api.VM{}, err
	}
	if State(r.State).Live() || State(r.State) == Creating {
		r.PendingCPUs, r.PendingMemoryMiB, r.PendingDiskSizeMiB = pendingIfChanged(cpus, r.CPUs), pendingIfChanged(mem, r.MemoryMiB), pendingIfChanged(dsk, r.DiskSizeMiB)
		if err := s.save(ctx, &r); err != nil {
			return api.VM{}, err
		}
		return s.Show(ctx, api.VMRef{VM: r.ID})
	}
	if dsk != r.DiskSizeMiB {
		if err := disk.GrowWorkDisk(ctx, s.Layout.VMWorkDisk(r.ID), int64(dsk)<<20); err != nil {
			return api.VM{}, fmt.Errorf("grow work disk: %w", err)
		}
	}
	r.CPUs, r.MemoryMiB, r.DiskSizeMiB = cpus, mem, dsk
	r.PendingCPUs, r.PendingMemoryMiB, r.PendingDiskSizeMiB = 0, 0, 0
	if err := s.save(ctx, &r); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}

func pendingIfChanged(want, have int) int {
	if want == have {
		return 0
	}
	return want
}

// Pause freezes a running VM's vCPUs; Resume continues it.
func (s *Service) Pause(ctx context.Context, p api.VMRef) (api.VM, error) {
	return s.pauseResume(ctx, p.VM, Running, Paused, "pause")
}

// Resume continues a paused VM.
func (s *Service) Resume(ctx context.Context, p api.VMRef) (api.VM, error) {
	return s.pauseResume(ctx, p.VM, Paused, Running, "resume")
}

func (s *Service) pauseResume(ctx context.Context, ref string, from, to State, verb string) (api.VM, error) {
	r, unlock, err := s.lock(ctx, ref, verb)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if State(r.State) != from {
		return api.VM{}, api.Errorf(api.KindConflict, "VM %q is %s; %s needs it %s", r.Name, r.State, verb, from)
	}
	drv, err := s.driver(r.VMM)
	if err != nil {
		return api.VM{}, err
	}
	if verb == "pause" {
		err = drv.Pause(ctx, r.handle)
	} else {
		err = drv.Resume(ctx, r.handle)
	}
	if err != nil {
		return api.VM{}, fmt.Errorf("%s %s: %w", verb, r.Name, err)
	}
	if to == Paused {
		// A paused guest cannot answer; drop the pooled connection.
		s.Guests.Forget(r.ID)
	}
	if _, err := s.Store.TransitionVM(ctx, r.ID, []string{string(from)}, string(to), ""); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRef{VM: r.ID})
}
