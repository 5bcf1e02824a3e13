package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Network is what the lifecycle needs of host networking. It is nil when
// the daemon runs without networking (tests, hosts without TAP support).
type Network interface {
	AcquireTAP(ctx context.Context) (string, error)
	ReleaseTAP(ctx context.Context, name string) error
	// TAPExists reports whether the device is present on the host.
	TAPExists(name string) bool
	// ForgetNeighbor drops the host's ARP entry for an address, which may
	// still name the MAC of a deleted VM that had the address before.
	ForgetNeighbor(addr netip.Addr) error
	Reconcile(ctx context.Context, inUse map[string]bool) error
	Gateway() netip.Addr
	Subnet() netip.Prefix
}

// Defaults are applied to a create that leaves a field zero.
type Defaults struct {
	Image       string
	VMM         string
	CPUs        int
	MemoryMiB   int
	DiskSizeMiB int
	Overlay     string
	StopTimeout time.Duration
	BootTimeout time.Duration
	DNSZone     string
	GuestUser   string
}

// Deps are the collaborators of the lifecycle service, built once by the
// daemon.
type Deps struct {
	Store    *store.Store
	Layout   paths.Layout
	Ops      *opstate.Registry
	Drivers  map[string]vmm.Driver
	Network  Network // may be nil
	Guests   *guest.Pool
	Client   guest.ClientKey
	DiskHost disk.Host
	// WriteConfig writes the per-VM config drive the guest reads at boot.
	WriteConfig ConfigDriveWriter
	Log         *slog.Logger
	Defaults    Defaults
	// NoNetworkReason says why Network is nil, for errors and warnings.
	NoNetworkReason string
	// AfterStage, when set, runs after each create stage begins. It is a
	// test seam (cancelling a create at every stage); production leaves it nil.
	AfterStage func(ctx context.Context, stage string)
}

// Service runs VM lifecycles. Its exported methods map one to one onto
// the vm.* RPC methods.
type Service struct {
	Deps
	locks *Locks
	caps  capabilityRegistry // start hooks (capabilities.go)

	// ctx bounds the watchers the service starts; cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewService builds the service. Call Close to stop its goroutines.
func NewService(d Deps) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	if d.Defaults.GuestUser == "" {
		d.Defaults.GuestUser = "banger"
	}
	return &Service{Deps: d, locks: NewLocks(), ctx: ctx, cancel: cancel}
}

// Close stops background watchers. Running VMs keep running.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// record is a VM row with its decoded handle and overlay.
type record struct {
	store.VM
	handle  vmm.Handle
	overlay disk.Overlay
}

func load(v store.VM) (record, error) {
	r := record{VM: v}
	if len(v.Handle) > 0 {
		var st persisted
		if err := json.Unmarshal(v.Handle, &st); err != nil {
			return r, fmt.Errorf("VM %s: corrupt runtime state: %w", v.Name, err)
		}
		r.handle, r.overlay = st.Handle, st.Overlay
	}
	return r, nil
}

// persisted is the runtime state stored in the VM row's handle column.
type persisted struct {
	Handle  vmm.Handle   `json:"handle"`
	Overlay disk.Overlay `json:"overlay"`
}

func (r *record) encode() {
	b, _ := json.Marshal(persisted{Handle: r.handle, Overlay: r.overlay})
	r.Handle = b
}

func (s *Service) find(ctx context.Context, ref string) (record, error) {
	if ref == "" {
		return record{}, api.Errorf(api.KindInvalidInput, "no VM given")
	}
	v, err := s.Store.FindVM(ctx, ref)
	if err != nil {
		return record{}, err
	}
	return load(v)
}

func (s *Service) save(ctx context.Context, r *record) error {
	r.encode()
	return s.Store.UpdateVM(ctx, &r.VM)
}

func (s *Service) driver(name string) (vmm.Driver, error) {
	d, ok := s.Drivers[name]
	if !ok {
		var names []string
		for n := range s.Drivers {
			names = append(names, n)
		}
		slices.Sort(names)
		if len(names) == 0 {
			return nil, api.Errorf(api.KindUnavailable, "no VMM backend is available on this host").
				WithHint("install qemu-system-x86 (apt-get install qemu-system-x86) and run banger doctor")
		}
		return nil, api.Errorf(api.KindInvalidInput, "unknown VMM %q (available: %s)", name, strings.Join(names, ", "))
	}
	return d, nil
}

// List returns every VM, optionally filtered by state.
func (s *Service) List(ctx context.Context, p api.VMListParams) (api.VMListResult, error) {
	if p.State != "" {
		if _, err := Parse(string(p.State)); err != nil {
			return api.VMListResult{}, api.Errorf(api.KindInvalidInput, "%v", err)
		}
	}
	vms, err := s.Store.ListVMs(ctx, string(p.State))
	if err != nil {
		return api.VMListResult{}, err
	}
	images := map[string]string{}
	if imgs, err := s.Store.ListImages(ctx); err == nil {
		for _, im := range imgs {
			images[im.ID] = im.Name
		}
	}
	out := api.VMListResult{VMs: make([]api.VM, 0, len(vms))}
	for _, v := range vms {
		r, _ := load(v)
		out.VMs = append(out.VMs, s.wire(r, images[v.ImageID]))
	}
	return out, nil
}

// Show returns one VM.
func (s *Service) Show(ctx context.Context, p api.VMRef) (api.VM, error) {
	r, err := s.find(ctx, p.VM)
	if err != nil {
		return api.VM{}, err
	}
	name := ""
	if im, err := s.Store.GetImage(ctx, r.ImageID); err == nil {
		name = im.Name
	}
	return s.wire(r, name), nil
}

func (s *Service) wire(r record, imageName string) api.VM {
	v := api.VM{
		ID: r.ID, Name: r.Name, State: api.VMState(r.State), StateReason: r.StateReason,
		Image: imageName, ImageID: r.ImageID, VMM: r.VMM, CPUs: r.CPUs, MemoryMiB: r.MemoryMiB,
		DiskSizeMiB: r.DiskSizeMiB, IP: r.IP, MAC: r.MAC, TAP: r.TAP, Overlay: string(r.overlay.Strategy),
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt,
	}
	if State(r.State).Live() {
		v.PID = r.handle.PID
		v.Accel = r.handle.Accel
	}
	if v.Accel == "tcg" {
		v.Warnings = append(v.Warnings, "running under TCG emulation: no usable KVM on this host (see banger doctor); expect slow boots")
	}
	if s.Network == nil && s.NoNetworkReason != "" {
		v.Warnings = append(v.Warnings, "host networking disabled: "+s.NoNetworkReason)
	}
	if r.PendingCPUs != 0 || r.PendingMemoryMiB != 0 || r.PendingDiskSizeMiB != 0 {
		v.Pending = &api.VMSpec{CPUs: r.PendingCPUs, MemoryMiB: r.PendingMemoryMiB, DiskSizeMiB: r.PendingDiskSizeMiB}
	}
	v.Capabilities = capabilityStatuses(r.Capabilities)
	if r.IP != "" && s.Defaults.DNSZone != "" {
		v.DNSName = r.Name + "." + s.Defaults.DNSZone
	}
	return v
}

// errorsJoinCleanup runs cleanup steps in reverse order, logging failures.
type cleanup struct {
	log   *slog.Logger
	steps []func(context.Context) error
	names []string
}

func (c *cleanup) add(name string, f func(context.Context) error) {
	c.names = append(c.names, name)
	c.steps = append(c.steps, f)
}

// run undoes everything in reverse. It uses a fresh context: the
// operation's own context is usually the one that was cancelled.
func (c *cleanup) run() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := len(c.steps) - 1; i >= 0; i-- {
		if err := c.steps[i](ctx); err != nil {
			c.log.Warn("cleanup step failed", "step", c.names[i], "err", err)
		}
	}
}

// tail returns the last n lines of a file, for error context.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isCancel(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}
