package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
	"golang.org/x/crypto/ssh"
)

// defaultCleanupTimeout bounds removing a build VM after a failure or cancel.
const defaultCleanupTimeout = 2 * time.Minute

// HeldVM is a VM whose lock the caller holds for a long operation (an
// image build or promote). Nothing else can start, stop or delete it
// until Release (or, for a build VM, Remove).
type HeldVM struct {
	s       *Service
	ID      string
	Name    string
	ImageID string
	unlock  func()
}

// HoldStopped locks a stopped VM for op (e.g. "promote"). A VM in any
// other state is refused: its disk is being written.
func (s *Service) HoldStopped(ctx context.Context, ref, op string) (*HeldVM, error) {
	r, unlock, err := s.lock(ctx, ref, op)
	if err != nil {
		return nil, err
	}
	if State(r.State) != Stopped {
		unlock()
		return nil, api.Errorf(api.KindConflict, "VM %q is %s; %s needs it stopped", r.Name, r.State, op).
			WithHint("stop it first: banger vm stop " + r.Name)
	}
	return &HeldVM{s: s, ID: r.ID, Name: r.Name, ImageID: r.ImageID, unlock: unlock}, nil
}

// Release gives the VM lock back.
func (h *HeldVM) Release() { h.unlock() }

// WorkDisk is the path of the VM's work disk (raw ext4).
func (h *HeldVM) WorkDisk() string { return h.s.Layout.VMWorkDisk(h.ID) }

// SystemDisk activates the VM's system overlay for reading and returns
// what to read (a file or block device) and its format ("raw", "qcow2").
// Call release when done. The VM must not be running.
func (h *HeldVM) SystemDisk(ctx context.Context) (path, format string, release func(), err error) {
	v, err := h.s.Store.GetVM(ctx, h.ID)
	if err != nil {
		return "", "", nil, err
	}
	r, err := load(v)
	if err != nil {
		return "", "", nil, err
	}
	if State(r.State).Live() {
		return "", "", nil, api.Errorf(api.KindConflict, "VM %q is %s: its system disk is in use", r.Name, r.State)
	}
	dev, err := r.overlay.Activate(ctx)
	if err != nil {
		return "", "", nil, fmt.Errorf("activate system overlay of %s: %w", r.Name, err)
	}
	ov := r.overlay
	return dev, ov.Format, func() { _ = ov.Deactivate(context.Background()) }, nil
}

// BuildVMParams describe the transient VM an image build runs in.
type BuildVMParams struct {
	// Image is the base image (name or id).
	Image string
	// TargetID and TargetName are the image being built; recorded so a
	// restarted daemon can tell the VM is a build leftover.
	TargetID, TargetName         string
	CPUs, MemoryMiB, DiskSizeMiB int
}

// BuildVM is a transient VM that builds an image. It is an ordinary VM
// (listed by vm ls as build-<image>-<id>) marked in the store, locked for
// the whole build, and removed by Remove or by Reconcile after a crash.
type BuildVM struct {
	*HeldVM
}

// BuildVMName is the name of the build VM of image name with VM id.
func BuildVMName(image, id string) string {
	prefix := "build-" + image
	if len(prefix) > 63-7 {
		prefix = strings.TrimRight(prefix[:63-7], "-")
	}
	return prefix + "-" + id[:6]
}

// BuildVMsAvailable says why build VMs cannot run here, or nil: the daemon
// reaches a build VM over SSH, so it needs host networking.
func (s *Service) BuildVMsAvailable() error {
	if s.Network == nil {
		return api.Errorf(api.KindUnavailable, "image builds need host networking to reach the build VM: %s", s.NoNetworkReason).
			WithHint("run banger doctor")
	}
	return nil
}

// CreateBuildVM creates and boots a build VM from p.Image, reporting the
// create stages on op, and returns once the guest answers SSH. On failure
// or cancellation nothing is left behind.
func (s *Service) CreateBuildVM(ctx context.Context, op *opstate.Op, p BuildVMParams) (*BuildVM, error) {
	if err := s.BuildVMsAvailable(); err != nil {
		return nil, err
	}
	d := s.Defaults
	if p.CPUs == 0 {
		p.CPUs = d.CPUs
	}
	if p.MemoryMiB == 0 {
		p.MemoryMiB = d.MemoryMiB
	}
	if p.DiskSizeMiB == 0 {
		p.DiskSizeMiB = d.DiskSizeMiB
	}
	if err := validateResources(p.CPUs, p.MemoryMiB, p.DiskSizeMiB); err != nil {
		return nil, err
	}
	img, err := s.Store.FindImage(ctx, p.Image)
	if err != nil {
		return nil, err
	}
	drv, err := s.driver(d.VMM)
	if err != nil {
		return nil, err
	}
	if err := drv.Available(ctx); err != nil {
		return nil, api.Errorf(api.KindUnavailable, "VMM %s unavailable: %v", d.VMM, err).WithHint("run banger doctor")
	}
	strategy, err := disk.Choose(s.DiskHost, d.VMM, d.Overlay)
	if err != nil {
		return nil, api.Errorf(api.KindInvalidInput, "%v", err)
	}
	id := store.NewID()
	v := store.VM{
		ID: id, Name: BuildVMName(p.TargetName, id), State: string(Creating), ImageID: img.ID, VMM: d.VMM,
		CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskSizeMiB: p.DiskSizeMiB, MAC: hostnet.MACForVM(id),
	}
	if err := s.Store.CreateVM(ctx, &v); err != nil {
		return nil, err
	}
	if err := s.Store.AddBuildVM(ctx, store.BuildVM{VMID: id, ImageID: p.TargetID, ImageName: p.TargetName}); err != nil {
		_ = s.Store.DeleteVM(context.Background(), id)
		return nil, err
	}
	unlock, err := s.locks.TryLock(id, v.Name, "image build")
	if err != nil {
		_ = s.Store.DeleteVM(context.Background(), id)
		return nil, err
	}
	op.Logf("build VM %s (%d vCPU, %d MiB) from image %s", v.Name, p.CPUs, p.MemoryMiB, img.Name)
	// provision removes everything it made, record included, on failure.
	if _, err := s.provision(ctx, op, id, strategy, true); err != nil {
		unlock()
		return nil, err
	}
	return &BuildVM{&HeldVM{s: s, ID: id, Name: v.Name, ImageID: img.ID, unlock: unlock}}, nil
}

// Exec runs argv in the build VM (as the guest user; use sudo for root).
func (b *BuildVM) Exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	r, err := b.s.find(ctx, b.ID)
	if err != nil {
		return -1, err
	}
	t, err := b.s.target(r)
	if err != nil {
		return -1, err
	}
	return b.s.Guests.Exec(ctx, t, argv, stdin, stdout, stderr)
}

// HostKeyFingerprint is the SHA256 fingerprint of the host key the daemon
// generated for the build VM and pinned.
func (b *BuildVM) HostKeyFingerprint() (string, error) {
	pub, err := b.s.hostPublicKey(b.ID)
	if err != nil {
		return "", err
	}
	key, err := guest.ParsePublic(pub)
	if err != nil {
		return "", err
	}
	return ssh.FingerprintSHA256(key), nil
}

// Shutdown stops the guest: ACPI shutdown, killed after the stop timeout.
// It reports whether the guest shut down cleanly.
func (b *BuildVM) Shutdown(ctx context.Context) (clean bool, err error) {
	r, err := b.s.find(ctx, b.ID)
	if err != nil {
		return false, err
	}
	if err := b.s.stopLocked(ctx, r, 0); err != nil {
		return false, err
	}
	v, err := b.s.Store.GetVM(ctx, b.ID)
	if err != nil {
		return false, err
	}
	return v.StateReason == "stopped", nil
}

// Remove deletes the build VM and everything in its directory, and gives
// its lock back. It uses its own context: the build's may be cancelled.
func (b *BuildVM) Remove() error {
	defer b.unlock()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCleanupTimeout)
	defer cancel()
	r, err := b.s.find(ctx, b.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return b.s.deleteLocked(ctx, r)
}

// Dir is the build VM's own directory: partial image files kept there are
// removed with the VM, by Remove or by Reconcile after a crash.
func (b *BuildVM) Dir() string { return b.s.Layout.VMDir(b.ID) }
