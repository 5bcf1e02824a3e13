package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
)

// Create stages, in order. They are part of the op's public progress.
const (
	StagePrepare = "prepare"
	StageNetwork = "network"
	StageDisks   = "disks"
	StageConfig  = "config"
	StageBoot    = "boot"
	StageSSH     = "wait-ssh"
)

// CreateStages lists the create stages in order.
var CreateStages = []string{StagePrepare, StageNetwork, StageDisks, StageConfig, StageBoot, StageSSH}

// Limits on requested resources.
const (
	MaxCPUs      = 64
	MinMemoryMiB = 128
	MaxMemoryMiB = 1 << 20
	MinDiskMiB   = 64
	MaxDiskMiB   = 16 << 20
)

func validateResources(cpus, mem, diskMiB int) error {
	if cpus < 1 || cpus > MaxCPUs {
		return api.Errorf(api.KindInvalidInput, "cpus %d out of range 1..%d", cpus, MaxCPUs)
	}
	if mem < MinMemoryMiB || mem > MaxMemoryMiB {
		return api.Errorf(api.KindInvalidInput, "memory %d MiB out of range %d..%d", mem, MinMemoryMiB, MaxMemoryMiB)
	}
	if diskMiB < MinDiskMiB || diskMiB > MaxDiskMiB {
		return api.Errorf(api.KindInvalidInput, "disk size %d MiB out of range %d..%d", diskMiB, MinDiskMiB, MaxDiskMiB)
	}
	return nil
}

// Create validates the request, records the VM in state creating and
// begins the asynchronous provisioning. Everything that can be refused
// (bad name, taken name, unknown image, unknown VMM, impossible overlay)
// is refused here, synchronously, with nothing changed.
func (s *Service) Create(ctx context.Context, p api.VMCreateParams) (opstate.Snapshot, error) {
	if err := ValidateName("VM", p.Name); err != nil {
		return opstate.Snapshot{}, err
	}
	d := s.Defaults
	if p.Image == "" {
		p.Image = d.Image
	}
	if p.VMM == "" {
		p.VMM = d.VMM
	}
	if p.CPUs == 0 {
		p.CPUs = d.CPUs
	}
	if p.MemoryMiB == 0 {
		p.MemoryMiB = d.MemoryMiB
	}
	if p.DiskSizeMiB == 0 {
		p.DiskSizeMiB = d.DiskSizeMiB
	}
	if p.Overlay == "" {
		p.Overlay = d.Overlay
	}
	if err := validateResources(p.CPUs, p.MemoryMiB, p.DiskSizeMiB); err != nil {
		return opstate.Snapshot{}, err
	}
	img, err := s.Store.FindImage(ctx, p.Image)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return opstate.Snapshot{}, api.NotFound("image", p.Image).
				WithHint("list images with: banger image ls; build the default one with: banger image build default")
		}
		return opstate.Snapshot{}, err
	}
	drv, err := s.driver(p.VMM)
	if err != nil {
		return opstate.Snapshot{}, err
	}
	if err := drv.Available(ctx); err != nil {
		return opstate.Snapshot{}, api.Errorf(api.KindUnavailable, "VMM %s unavailable: %v", p.VMM, err).
			WithHint("run banger doctor")
	}
	strategy, err := disk.Choose(s.DiskHost, p.VMM, p.Overlay)
	if err != nil {
		return opstate.Snapshot{}, api.Errorf(api.KindInvalidInput, "%v", err)
	}
	if _, err := s.Store.FindVM(ctx, p.Name); err == nil {
		return opstate.Snapshot{}, api.Errorf(api.KindConflict, "a VM named %q already exists", p.Name)
	}
	v := store.VM{
		ID: store.NewID(), Name: p.Name, State: string(Creating), ImageID: img.ID, VMM: p.VMM,
		CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskSizeMiB: p.DiskSizeMiB,
	}
	if v.Capabilities, err = s.initialCapabilities(p); err != nil { // capabilities.go
		return opstate.Snapshot{}, err
	}
	v.MAC = hostnet.MACForVM(v.ID)
	if err := s.Store.CreateVM(ctx, &v); err != nil {
		return opstate.Snapshot{}, err
	}
	// The VM lock is taken before the op starts so that a start/delete
	// racing the create sees "busy", not a half-made VM.
	unlock, err := s.locks.TryLock(v.ID, v.Name, "create")
	if err != nil {
		_ = s.Store.DeleteVM(ctx, v.ID)
		return opstate.Snapshot{}, err
	}
	snap := s.Ops.Begin("vm.create", v.Name, CreateStages, func(ctx context.Context, op *opstate.Op) (map[string]any, error) {
		defer unlock()
		return s.provision(ctx, op, v.ID, strategy, !p.NoStart)
	})
	return snap, nil
}

// provision runs the create stages. On any failure or cancellation it
// undoes everything, including the VM record, so nothing is left behind.
func (s *Service) provision(ctx context.Context, op *opstate.Op, id string, strategy disk.Strategy, start bool) (_ map[string]any, err error) {
	undo := &cleanup{log: s.Log.With("vm", id)}
	stage := func(name string) error {
		op.Stage(name)
		if s.AfterStage != nil {
			s.AfterStage(ctx, name)
		}
		return ctx.Err()
	}
	undo.add("delete record", func(ctx context.Context) error { return s.Store.DeleteVM(ctx, id) })
	defer func() {
		if err != nil {
			if isCancel(ctx, err) {
				op.Log("cancelled: removing everything this create made")
			} else {
				op.Logf("create failed: %v; removing everything it made", err)
			}
			undo.run()
		}
	}()

	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return nil, err
	}
	r, _ := load(v)
	img, err := s.Store.GetImage(ctx, r.ImageID)
	if err != nil {
		return nil, err
	}
	vmDir := s.Layout.VMDir(id)
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		return nil, fmt.Errorf("create VM dir: %w", err)
	}
	undo.add("remove VM dir", func(context.Context) error { return os.RemoveAll(vmDir) })
	undo.add("remove run dir", func(context.Context) error { return os.RemoveAll(s.Layout.VMRunDir(id)) })

	hk, err := guest.NewHostKey()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.Layout.VMHostKey(id), hk.PrivatePEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.Layout.VMHostKey(id)+".pub", hk.PublicAuthorized, 0o644); err != nil {
		return nil, err
	}

	if err := stage(StageNetwork); err != nil {
		return nil, err
	}
	reserved := []netip.Addr{}
	subnet := netip.Prefix{}
	if s.Network != nil {
		subnet = s.Network.Subnet()
		reserved = append(reserved, s.Network.Gateway())
	} else {
		subnet = s.Defaults.fallbackSubnet()
		reserved = append(reserved, subnet.Addr().Next())
	}
	ip, err := s.Store.AllocateIP(ctx, id, subnet, reserved)
	if err != nil {
		return nil, err
	}
	undo.add("release IP", func(ctx context.Context) error { return s.Store.ReleaseIP(ctx, id) })
	r.IP = ip.String()
	if s.Network != nil {
		tap, err := s.Network.AcquireTAP(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire TAP device: %w", err)
		}
		// Release whatever TAP the record holds by then: a start's
		// preflight may have replaced a vanished one.
		undo.add("release TAP", func(ctx context.Context) error {
			if v, err := s.Store.GetVM(ctx, id); err == nil && v.TAP != "" {
				tap = v.TAP
			}
			return s.Network.ReleaseTAP(ctx, tap)
		})
		r.TAP = tap
	}
	op.Logf("address %s, tap %s, mac %s", r.IP, orNone(r.TAP), r.MAC)
	if err := s.save(ctx, &r); err != nil {
		return nil, err
	}

	if err := stage(StageDisks); err != nil {
		return nil, err
	}
	t0 := time.Now()
	ov, err := disk.CreateOverlay(ctx, strategy, img.RootFS, vmDir, id)
	if err != nil {
		return nil, fmt.Errorf("create system overlay (%s): %w", strategy, err)
	}
	undo.add("remove overlay", ov.Remove)
	r.overlay = ov
	op.Logf("system overlay: %s strategy in %s", ov.Strategy, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := disk.CreateWorkDisk(ctx, img.WorkSeed, s.Layout.VMWorkDisk(id), int64(r.DiskSizeMiB)<<20); err != nil {
		return nil, fmt.Errorf("create work disk: %w", err)
	}
	op.Logf("work disk: %d MiB in %s", r.DiskSizeMiB, time.Since(t0).Round(time.Millisecond))
	if err := s.save(ctx, &r); err != nil {
		return nil, err
	}

	if err := stage(StageConfig); err != nil {
		return nil, err
	}
	if err := s.writeKnownHosts(r, hk.PublicAuthorized); err != nil {
		return nil, err
	}
	if !start {
		if _, err := s.Store.TransitionVM(ctx, id, []string{string(Creating)}, string(Stopped), "created"); err != nil {
			return nil, err
		}
		return map[string]any{"vm": r.Name, "id": id, "ip": r.IP}, nil
	}
	// boot writes the config drive, starts the VMM and waits for SSH.
	// From here a failure must also stop the process.
	undo.add("stop VMM", func(ctx context.Context) error { return s.killQuietly(ctx, id) })
	if err := s.boot(ctx, op, id, Creating, stage); err != nil {
		return nil, err
	}
	return map[string]any{"vm": r.Name, "id": id, "ip": r.IP}, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (d Defaults) fallbackSubnet() netip.Prefix {
	return netip.MustParsePrefix("172.30.0.0/24")
}

// writeKnownHosts pins the VM's host key for OpenSSH under every name a
// user may type.
func (s *Service) writeKnownHosts(r record, pubAuthorized []byte) error {
	pub, err := guest.ParsePublic(pubAuthorized)
	if err != nil {
		return err
	}
	patterns := []string{r.Name + ".banger", r.IP}
	if s.Defaults.DNSZone != "" {
		patterns = append(patterns, r.Name+"."+s.Defaults.DNSZone)
	}
	return guest.WriteKnownHosts(s.Layout.VMKnownHosts(r.ID), patterns, pub)
}

func (s *Service) hostPublicKey(id string) ([]byte, error) {
	return os.ReadFile(filepath.Clean(s.Layout.VMHostKey(id) + ".pub"))
}
