// Package disk provisions the block devices of a VM: the system overlay (a
// copy-on-write layer over an image's read-only root filesystem) and the
// persistent work disk, plus the size parsing and disk-usage helpers the
// CLI and stats need.
//
// Overlay strategies, best first: a device-mapper snapshot over loop
// devices, a qcow2 file backed by the base (QEMU only), a reflink clone
// (btrfs, xfs) and, as the last resort, a sparse copy. Choose picks one for
// a host and VMM; the daemon reports the choice so it is never silent.
package disk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"golang.org/x/sys/unix"
)

// Strategy names how a system overlay is made.
type Strategy string

const (
	StrategyDMSnapshot Strategy = "dm-snapshot"
	StrategyQcow2      Strategy = "qcow2"
	StrategyReflink    Strategy = "reflink"
	StrategyCopy       Strategy = "copy"
)

// Strategies lists every strategy, best first.
var Strategies = []Strategy{StrategyDMSnapshot, StrategyQcow2, StrategyReflink, StrategyCopy}

// StrategyAuto (or an empty string) asks Choose to pick the best strategy.
const StrategyAuto = "auto"

// ParseStrategy turns a user-supplied name into a Strategy.
func ParseStrategy(s string) (Strategy, error) {
	for _, known := range Strategies {
		if s == string(known) {
			return known, nil
		}
	}
	return "", api.Errorf(api.KindInvalidInput,
		"unknown overlay strategy %q: use one of %s, or %q", s, strategyNames(), StrategyAuto)
}

func strategyNames() string {
	names := make([]string, len(Strategies))
	for i, s := range Strategies {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// Host holds the facts about this machine that decide which overlay
// strategies can work. ProbeHost fills it; tests build it by hand.
// Each No* field says why the matching facility is missing.
type Host struct {
	HasDeviceMapper bool
	NoDeviceMapper  string
	HasQemuImg      bool
	NoQemuImg       string
	// HasReflink is about the state directory, where overlays live.
	HasReflink bool
	NoReflink  string
}

// deviceMapperControl is the device node the kernel's device-mapper exposes.
const deviceMapperControl = "/dev/mapper/control"

// ProbeHost inspects this machine. stateDir is where overlays will be
// created; the reflink probe makes and removes two small files there.
func ProbeHost(stateDir string) Host {
	var h Host
	h.NoDeviceMapper = deviceMapperMissing()
	h.HasDeviceMapper = h.NoDeviceMapper == ""
	if _, err := exec.LookPath("qemu-img"); err != nil {
		h.NoQemuImg = "qemu-img is not installed (Debian package qemu-utils)"
	} else {
		h.HasQemuImg = true
	}
	if err := ReflinkSupported(stateDir); err != nil {
		h.NoReflink = err.Error()
	} else {
		h.HasReflink = true
	}
	return h
}

func deviceMapperMissing() string {
	// The node can exist while the kernel has no driver behind it (ENODEV
	// on open), so open it rather than stat it.
	f, err := os.OpenFile(deviceMapperControl, os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open %s (%v): the kernel has no usable device-mapper (load dm_mod and dm_snapshot)", deviceMapperControl, err)
	}
	f.Close()
	for _, tool := range []string{"dmsetup", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (Debian packages dmsetup, mount)"
		}
	}
	return ""
}

// ReflinkSupported reports whether files in dir can be cloned with FICLONE,
// by cloning one small temporary file into another. It returns nil when
// they can, and an error saying why not otherwise.
func ReflinkSupported(dir string) error {
	src, err := os.CreateTemp(dir, ".banger-reflink-probe-*")
	if err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	dst, err := os.CreateTemp(dir, ".banger-reflink-probe-*")
	if err != nil {
		return fmt.Errorf("reflink probe in %s: %w", dir, err)
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		if isNoReflink(err) {
			return fmt.Errorf("the filesystem of %s cannot reflink (FICLONE: %v); btrfs and xfs can", dir, err)
		}
		return fmt.Errorf("reflink probe in %s: FICLONE: %w", dir, err)
	}
	return nil
}

func isNoReflink(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)
}

// VMMQemu is the VMM name for which qcow2 overlays are possible.
const VMMQemu = "qemu"

// Choose picks the overlay strategy for a VM run by vmm on host h.
// override is "" or "auto" for automatic selection, or a strategy name;
// a named strategy that cannot work here is an error saying why.
func Choose(h Host, vmm string, override string) (Strategy, error) {
	if override == "" || override == StrategyAuto {
		switch {
		case h.HasDeviceMapper:
			return StrategyDMSnapshot, nil
		case vmm == VMMQemu && h.HasQemuImg:
			return StrategyQcow2, nil
		case h.HasReflink:
			return StrategyReflink, nil
		default:
			return StrategyCopy, nil
		}
	}
	s, err := ParseStrategy(override)
	if err != nil {
		return "", err
	}
	switch s {
	case StrategyDMSnapshot:
		if !h.HasDeviceMapper {
			return "", api.Errorf(api.KindUnavailable,
				"overlay strategy %s is unavailable on this host: %s", s, orUnknown(h.NoDeviceMapper))
		}
	case StrategyQcow2:
		if vmm != VMMQemu {
			return "", api.Errorf(api.KindInvalidInput,
				"overlay strategy %s needs the qemu VMM, not %q: pick another strategy or --vmm qemu", s, vmm)
		}
		if !h.HasQemuImg {
			return "", api.Errorf(api.KindUnavailable,
				"overlay strategy %s is unavailable on this host: %s", s, orUnknown(h.NoQemuImg))
		}
	case StrategyReflink:
		if !h.HasReflink {
			return "", api.Errorf(api.KindUnavailable,
				"overlay strategy %s is unavailable on this host: %s", s, orUnknown(h.NoReflink))
		}
	case StrategyCopy:
		// Always possible.
	}
	return s, nil
}

func orUnknown(why string) string {
	if why == "" {
		return "reason unknown"
	}
	return why
}

// absPath cleans p into an absolute path; overlays record absolute paths
// because qcow2 resolves a relative backing file against the overlay.
func absPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve path %q: %w", p, err)
	}
	return a, nil
}
