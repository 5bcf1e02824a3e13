package firecracker

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

// requiredBootArgs are added to the image's kernel command line unless it
// sets them already: the serial console banger logs, a reboot through the
// keyboard controller (Firecracker exits when the guest resets, so a
// guest reboot or SendCtrlAltDel ends the process), no PCI probing, and
// no slow i8042 probes (docs/api_requests/actions.md).
var requiredBootArgs = []string{"console=ttyS0", "reboot=k", "pci=off", "i8042.noaux", "i8042.nomux", "i8042.nopnp"}

// bootArgs merges the image's arguments with requiredBootArgs; a key the
// image sets (e.g. its own console=) wins.
func bootArgs(imageArgs string) string {
	fields := strings.Fields(imageArgs)
	has := func(key string) bool {
		for _, f := range fields {
			k, _, _ := strings.Cut(f, "=")
			if k == key {
				return true
			}
		}
		return false
	}
	out := fields
	for _, a := range requiredBootArgs {
		k, _, _ := strings.Cut(a, "=")
		if !has(k) {
			out = append(out, a)
		}
	}
	return strings.Join(out, " ")
}

// safeID matches VM ids usable in Firecracker's --id (alphanumerics and
// hyphens, at most 64 characters including the "banger-" prefix).
var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,56}$`)

// instanceID is the --id of a VM's Firecracker; Adopt looks for it in
// /proc/<pid>/cmdline.
func instanceID(vmID string) string { return "banger-" + vmID }

var macPattern = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// validateSpec rejects specs Firecracker would refuse, with banger's
// wording and a fix.
func validateSpec(spec vmm.MachineSpec) error {
	switch {
	case !safeID.MatchString(spec.ID):
		return api.Errorf(api.KindInvalidInput, "firecracker: VM id %q must be letters, digits or '-' (at most 57)", spec.ID)
	case spec.CPUs < 1 || spec.CPUs > 32:
		return api.Errorf(api.KindInvalidInput, "firecracker: VM %s has %d vCPUs; Firecracker supports 1 to 32", spec.ID, spec.CPUs)
	case spec.MemoryMiB <= 0:
		return api.Errorf(api.KindInvalidInput, "firecracker: VM %s needs memory, got %d MiB", spec.ID, spec.MemoryMiB)
	case spec.KernelRaw == "":
		return api.Errorf(api.KindInvalidInput, "firecracker: VM %s's image has no uncompressed kernel (vmlinux)", spec.ID).
			WithHint("rebuild the image, register it with --vmlinux, or use --vmm qemu")
	case spec.RunDir == "" || !filepath.IsAbs(spec.RunDir):
		return api.Errorf(api.KindInvalidInput, "firecracker: VM %s needs an absolute run directory, got %q", spec.ID, spec.RunDir)
	}
	seen := map[string]bool{}
	for _, d := range spec.Drives {
		if !safeID.MatchString(d.ID) {
			return api.Errorf(api.KindInvalidInput, "firecracker: drive id %q must be letters, digits or '-'", d.ID)
		}
		if seen[d.ID] {
			return api.Errorf(api.KindInvalidInput, "firecracker: drive id %q is used twice", d.ID)
		}
		seen[d.ID] = true
		if d.Path == "" {
			return api.Errorf(api.KindInvalidInput, "firecracker: drive %q has no path", d.ID)
		}
		if d.Format != "" && d.Format != "raw" {
			return api.Errorf(api.KindInvalidInput, "firecracker: drive %q is %s; Firecracker only reads raw images", d.ID, d.Format).
				WithHint("use a raw overlay strategy (dm-snapshot, reflink or copy) or --vmm qemu")
		}
	}
	for i, n := range spec.NICs {
		if n.TAP == "" || len(n.TAP) > 15 {
			return api.Errorf(api.KindInvalidInput, "firecracker: NIC %d has a bad TAP name %q", i, n.TAP)
		}
		if !macPattern.MatchString(n.MAC) {
			return api.Errorf(api.KindInvalidInput, "firecracker: NIC %d has a bad MAC address %q", i, n.MAC)
		}
	}
	return nil
}

// bootPlan is the pre-boot configuration of one VM, in the order it is
// sent: logger and metrics first (a snapshot load would accept only
// those before it), then machine, boot source, drives and NICs.
type bootPlan struct {
	Logger  Logger
	Metrics Metrics
	Machine MachineConfig
	Boot    BootSource
	Drives  []Drive
	NICs    []NetworkInterface
}

// planPaths are the file paths as Firecracker sees them (inside the jail
// when jailed).
type planPaths struct {
	Log, Metrics, Kernel, Initrd string
	Drive                        func(id string) string
}

func hostPaths(spec vmm.MachineSpec, runDir string) planPaths {
	byID := map[string]string{}
	for _, d := range spec.Drives {
		byID[d.ID] = d.Path
	}
	return planPaths{
		Log:     filepath.Join(runDir, logName),
		Metrics: filepath.Join(runDir, metricsName),
		Kernel:  spec.KernelRaw,
		Initrd:  spec.Initrd,
		Drive:   func(id string) string { return byID[id] },
	}
}

func jailPaths(spec vmm.MachineSpec) planPaths {
	p := planPaths{Log: jailLog, Metrics: jailMetrics, Kernel: jailKernel,
		Drive: func(id string) string { return jailDriveDir + "/" + id }}
	if spec.Initrd != "" {
		p.Initrd = jailInitrd
	}
	return p
}

// planBoot turns a spec into Firecracker's configuration. Drives[0] is
// the root device (vda); Firecracker attaches the others in order, so the
// guest sees them as vdb, vdc, ... like under QEMU.
func planBoot(spec vmm.MachineSpec, p planPaths) bootPlan {
	smt := false
	plan := bootPlan{
		Logger:  Logger{LogPath: p.Log, Level: "Info", ShowLevel: true},
		Metrics: Metrics{MetricsPath: p.Metrics},
		Machine: MachineConfig{VCPUCount: spec.CPUs, MemSizeMiB: spec.MemoryMiB, SMT: &smt},
		Boot:    BootSource{KernelImagePath: p.Kernel, InitrdPath: p.Initrd, BootArgs: bootArgs(spec.KernelArgs)},
	}
	for i, d := range spec.Drives {
		plan.Drives = append(plan.Drives, Drive{
			DriveID: d.ID, PathOnHost: p.Drive(d.ID), IsRootDevice: i == 0, IsReadOnly: d.ReadOnly,
		})
	}
	for i, n := range spec.NICs {
		plan.NICs = append(plan.NICs, NetworkInterface{
			IfaceID: fmt.Sprintf("eth%d", i), HostDevName: n.TAP, GuestMAC: strings.ToLower(n.MAC),
		})
	}
	return plan
}
