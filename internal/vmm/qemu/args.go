package qemu

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

// Names of the files Start creates in MachineSpec.RunDir.
const (
	qmpSocketName = "qmp.sock"
	pidFileName   = "qemu.pid"
	stderrName    = "qemu.stderr"
)

// Accelerator names, as reported in Handle.Accel.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// processTag is the -name value that marks a QEMU process as banger's VM
// id; Adopt looks for it in /proc/<pid>/cmdline.
func processTag(vmID string) string { return "banger-" + vmID }

// safeID matches ids that can appear unquoted in QEMU option strings.
var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// validateSpec rejects specs QEMU would misparse or refuse late.
func validateSpec(spec vmm.MachineSpec) error {
	switch {
	case !safeID.MatchString(spec.ID):
		return api.Errorf(api.KindInvalidInput, "qemu: VM id %q must be letters, digits, '.', '_' or '-'", spec.ID)
	case spec.CPUs <= 0:
		return api.Errorf(api.KindInvalidInput, "qemu: VM %s needs at least 1 vCPU, got %d", spec.ID, spec.CPUs)
	case spec.MemoryMiB <= 0:
		return api.Errorf(api.KindInvalidInput, "qemu: VM %s needs memory, got %d MiB", spec.ID, spec.MemoryMiB)
	case spec.Kernel == "":
		return api.Errorf(api.KindInvalidInput, "qemu: VM %s has no kernel (bzImage) path", spec.ID)
	case spec.RunDir == "" || !filepath.IsAbs(spec.RunDir):
		return api.Errorf(api.KindInvalidInput, "qemu: VM %s needs an absolute run directory, got %q", spec.ID, spec.RunDir)
	}
	seen := map[string]bool{}
	for _, d := range spec.Drives {
		if !safeID.MatchString(d.ID) {
			return api.Errorf(api.KindInvalidInput, "qemu: drive id %q must be letters, digits, '.', '_' or '-'", d.ID)
		}
		if seen[d.ID] {
			return api.Errorf(api.KindInvalidInput, "qemu: drive id %q is used twice", d.ID)
		}
		seen[d.ID] = true
		if d.Path == "" {
			return api.Errorf(api.KindInvalidInput, "qemu: drive %q has no path", d.ID)
		}
		if f := driveFormat(d); f != "raw" && f != "qcow2" {
			return api.Errorf(api.KindInvalidInput, "qemu: drive %q has format %q; use raw or qcow2", d.ID, d.Format)
		}
	}
	for i, n := range spec.NICs {
		if n.TAP == "" || strings.ContainsAny(n.TAP, ", ") {
			return api.Errorf(api.KindInvalidInput, "qemu: NIC %d has a bad TAP name %q", i, n.TAP)
		}
		if !macPattern.MatchString(n.MAC) {
			return api.Errorf(api.KindInvalidInput, "qemu: NIC %d has a bad MAC address %q", i, n.MAC)
		}
	}
	return nil
}

var macPattern = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// maxSerialLen is the longest virtio-blk serial number.
const maxSerialLen = 20

func driveFormat(d vmm.Drive) string {
	if d.Format == "" {
		return "raw"
	}
	return d.Format
}

// escapeOpt escapes a value for QEMU's key=value,... option syntax, where
// a literal comma is written twice.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// buildArgs returns QEMU's argv (without the binary) for spec. tscKHz is
// passed to the guest under TCG when positive.
func buildArgs(spec vmm.MachineSpec, accel string, tscKHz int) []string {
	qmpPath := filepath.Join(spec.RunDir, qmpSocketName)
	tag := processTag(spec.ID)
	args := []string{
		// x-option-roms=off skips the option ROM scan; isa-serial gives
		// the guest ttyS0; rtc keeps guest wall time right from boot.
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		// seccomp: a compromised QEMU cannot exec, setuid or use
		// obsolete syscalls. TAPs are opened by the daemon's config
		// (script=no), so nothing needs to spawn.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-name", tag + ",process=" + tag,
		"-global", "virtio-mmio.force-legacy=false",
	}
	kernelArgs := spec.KernelArgs
	switch accel {
	case AccelKVM:
		args = append(args, "-accel", "kvm", "-cpu", "host")
	default:
		args = append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
		if tscKHz > 0 && !strings.Contains(kernelArgs, "tsc_early_khz=") {
			kernelArgs = strings.TrimSpace(kernelArgs + " tsc_early_khz=" + strconv.Itoa(tscKHz))
		}
	}
	args = append(args,
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.Itoa(spec.MemoryMiB)+"M",
		"-kernel", spec.Kernel,
	)
	if spec.Initrd != "" {
		args = append(args, "-initrd", spec.Initrd)
	}
	if kernelArgs != "" {
		args = append(args, "-append", kernelArgs)
	}
	for _, d := range spec.Drives {
		drive := fmt.Sprintf("id=%s,file=%s,format=%s,if=none", d.ID, escapeOpt(d.Path), driveFormat(d))
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		device := "virtio-blk-device,drive=" + d.ID
		if len(d.ID) <= maxSerialLen {
			// The guest then also finds the disk as /dev/disk/by-id/virtio-<id>.
			device += ",serial=" + d.ID
		}
		// QEMU's microvm hands transports out so that the guest probes
		// devices in command-line order: Drives[0] is vda (checked
		// with three disks on QEMU 7.2).
		args = append(args, "-drive", drive, "-device", device)
	}
	for i, n := range spec.NICs {
		id := "n" + strconv.Itoa(i)
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, n.TAP),
			"-device", fmt.Sprintf("virtio-net-device,netdev=%s,mac=%s", id, n.MAC),
		)
	}
	// A keyboard, so Shutdown can also press Ctrl-Alt-Del: systemd turns
	// that into a reboot (an exit, under -no-reboot) even in guests whose
	// power button has no listener (no logind without D-Bus). The guest's
	// virtio_input driver only binds to modern (virtio 1.0) devices, hence
	// force-legacy=false for all virtio-mmio transports.
	args = append(args, "-device", "virtio-keyboard-device")
	if spec.ConsoleLog != "" {
		// append=on keeps the console history of earlier boots of this VM.
		args = append(args,
			"-chardev", "file,id=c0,path="+escapeOpt(spec.ConsoleLog)+",append=on",
			"-serial", "chardev:c0",
		)
	} else {
		args = append(args, "-serial", "null")
	}
	args = append(args,
		"-qmp", "unix:"+escapeOpt(qmpPath)+",server=on,wait=off",
		"-pidfile", filepath.Join(spec.RunDir, pidFileName),
	)
	return args
}
