// Package vmm defines the contract between banger and a virtual machine
// monitor (Firecracker, QEMU). A Driver turns a fully resolved MachineSpec
// into a running process and manages it afterwards, including after the
// daemon restarted (Adopt). Drivers know nothing about the store, images
// or networking policy: everything they need is in the spec.
package vmm

import (
	"context"
	"errors"
	"time"
)

// Drive is one block device given to the guest, in order: the guest sees
// them as vda, vdb, ... in the order of MachineSpec.Drives.
type Drive struct {
	ID       string // stable identifier ("rootfs", "work", "config")
	Path     string // host path of the image file or block device
	ReadOnly bool
	// Format is "raw" or "qcow2". Only QEMU accepts qcow2.
	Format string
}

// NIC is one network interface backed by a host TAP device.
type NIC struct {
	TAP string
	MAC string
}

// MachineSpec is everything needed to boot one VM.
type MachineSpec struct {
	ID        string // the VM id; drivers use it to tag processes
	Name      string
	CPUs      int
	MemoryMiB int
	// Kernel is a bzImage (QEMU); KernelRaw an uncompressed vmlinux
	// (Firecracker). Each driver uses the one it needs.
	Kernel     string
	KernelRaw  string
	Initrd     string
	KernelArgs string
	Drives     []Drive
	NICs       []NIC
	// RunDir is a private directory for sockets and pid files of this VM.
	RunDir string
	// ConsoleLog receives the guest serial console.
	ConsoleLog string
}

// Handle identifies a running VMM process. It is persisted by the daemon
// and handed back to Adopt after a restart.
type Handle struct {
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22; guards against PID reuse
	RunDir    string    `json:"run_dir"`
	Accel     string    `json:"accel,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// Status is what a driver can tell about a running machine.
type Status struct {
	Running bool
	Paused  bool
}

// ProcessStats are read from /proc for the VMM process.
type ProcessStats struct {
	CPUSeconds float64
	RSSBytes   int64
}

// Driver is one VMM backend.
type Driver interface {
	// Name is "qemu", "firecracker", or "fake".
	Name() string
	// Available reports whether the backend can run here, and why not.
	Available(ctx context.Context) error
	// Start boots the machine and returns once the VMM process runs and
	// accepted the configuration; it does not wait for the guest OS.
	// On error nothing is left running.
	Start(ctx context.Context, spec MachineSpec) (Handle, error)
	// Shutdown asks the guest to power off (ACPI / Ctrl-Alt-Del) and
	// waits until the process exits or ctx ends. It does not kill.
	Shutdown(ctx context.Context, h Handle) error
	// Kill ends the process at once and waits for it to be gone.
	Kill(ctx context.Context, h Handle) error
	Pause(ctx context.Context, h Handle) error
	Resume(ctx context.Context, h Handle) error
	Status(ctx context.Context, h Handle) (Status, error)
	// Adopt verifies that h still names this backend's process for the VM
	// (pid alive, start time and command line match) after a daemon
	// restart. It returns ErrNotRunning when the process is gone.
	Adopt(ctx context.Context, spec MachineSpec, h Handle) error
	// Wait blocks until the process exits or ctx ends.
	Wait(ctx context.Context, h Handle) error
}

// ErrNotRunning is returned when the process a Handle names is gone.
var ErrNotRunning = errors.New("vmm process is not running")

// ErrUnavailable wraps the reason a backend cannot run on this host.
var ErrUnavailable = errors.New("vmm backend unavailable")

// StatsReporter is implemented by drivers whose machine is more than the
// one process in Handle (a Firecracker jailer, a test fake that boots the
// guest in a child): it reports CPU and memory of the whole machine.
type StatsReporter interface {
	Stats(h Handle) (ProcessStats, error)
}

// ReadStats asks the driver when it can tell, else reads /proc for h.PID.
func ReadStats(d Driver, h Handle) (ProcessStats, error) {
	if r, ok := d.(StatsReporter); ok {
		return r.Stats(h)
	}
	return ReadProcessStats(h.PID)
}
