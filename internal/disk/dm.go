package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/banger-dev/banger/internal/api"
)

// A dm-snapshot overlay is the base image on a read-only loop device, a
// sparse per-VM COW file on a second loop device, and a device-mapper
// "snapshot" target over both. Loop devices and dm targets vanish with a
// reboot, so the target is built at every start (Activate) and torn down at
// stop (Deactivate); the persistent COW file keeps the VM's writes.

// deviceMapperProbe says why device-mapper is unusable, or "" when it
// works; tests replace it along with runCommand.
var deviceMapperProbe = deviceMapperMissing

// dmChunkSectors is the snapshot chunk size: 8 sectors = 4 KiB, the ext4
// block size, so one guest block write copies one chunk.
const dmChunkSectors = 8

const sectorSize = 512

// dmNamePrefix prefixes every device-mapper target banger makes, so the
// reaper can find them.
const dmNamePrefix = "banger-"

// DMName is the device-mapper target name of a VM's overlay.
func DMName(vmID string) string { return dmNamePrefix + vmID }

// dmDevicePath is where the kernel (or dmsetup) puts the target's node.
func dmDevicePath(name string) string { return filepath.Join("/dev/mapper", name) }

var vmIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

func checkVMID(vmID string) error {
	if !vmIDPattern.MatchString(vmID) {
		return fmt.Errorf("invalid VM id %q for a disk name: use letters, digits, '.', '_' and '-' (at most 100)", vmID)
	}
	return nil
}

// losetupAttachArgs attaches file to the first free loop device and prints
// its path.
func losetupAttachArgs(file string, readOnly bool) []string {
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	return append(args, file)
}

func losetupDetachArgs(loopDev string) []string { return []string{"--detach", loopDev} }

// losetupAssociatedArgs lists the loop devices backed by file, one path a line.
func losetupAssociatedArgs(file string) []string {
	return []string{"--list", "--noheadings", "--output", "NAME", "--associated", file}
}

// dmSnapshotTable is the one-line table of a persistent snapshot target.
func dmSnapshotTable(baseSizeBytes int64, baseLoop, cowLoop string) (string, error) {
	if baseSizeBytes <= 0 || baseSizeBytes%sectorSize != 0 {
		return "", fmt.Errorf("base image size %d is not a positive multiple of %d bytes", baseSizeBytes, sectorSize)
	}
	if baseLoop == "" || cowLoop == "" {
		return "", errors.New("dm-snapshot table needs both the base and the COW device")
	}
	return fmt.Sprintf("0 %d snapshot %s %s P %d", baseSizeBytes/sectorSize, baseLoop, cowLoop, dmChunkSectors), nil
}

func dmCreateArgs(name, table string) []string {
	return []string{"create", name, "--table", table}
}

// dmRemoveArgs removes a target; --retry rides out a udev scan holding it.
func dmRemoveArgs(name string) []string { return []string{"remove", "--retry", name} }

func dmInfoArgs(name string) []string {
	return []string{"info", "--columns", "--noheadings", "--options", "name", name}
}

// dmDepsArgs prints the devices a target sits on, by kernel name.
func dmDepsArgs(name string) []string { return []string{"deps", "-o", "devname", name} }

func dmMknodesArgs(name string) []string { return []string{"mknodes", name} }

var depNamePattern = regexp.MustCompile(`\(([^()\s]+)\)`)

// parseDMDeps turns `dmsetup deps -o devname` output, such as
// " 2 dependencies  : (loop1) (loop0)", into device paths.
func parseDMDeps(out string) []string {
	var devs []string
	for _, m := range depNamePattern.FindAllStringSubmatch(out, -1) {
		devs = append(devs, "/dev/"+m[1])
	}
	return devs
}

// parseLines splits tool output into its non-empty trimmed lines.
func parseLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// dmCOWSize is the default COW file size for a base: the base size plus the
// persistent store's metadata (one header chunk and one index chunk per 256
// data chunks), rounded up generously, so that even a guest rewriting every
// block never overflows and invalidates the snapshot. The file is sparse:
// only what the guest writes takes space.
func dmCOWSize(baseSize int64) int64 {
	const mib = 1 << 20
	size := baseSize + baseSize/128 + mib
	return (size + mib - 1) / mib * mib
}

func isDMMissing(err error) bool {
	var ce *commandError
	if !errors.As(err, &ce) {
		return false
	}
	s := strings.ToLower(ce.Stderr)
	return strings.Contains(s, "does not exist") || strings.Contains(s, "no such device")
}

func dmExists(ctx context.Context, name string) (bool, error) {
	_, err := runCommand(ctx, "dmsetup", dmInfoArgs(name)...)
	switch {
	case err == nil:
		return true, nil
	case isDMMissing(err):
		return false, nil
	default:
		return false, fmt.Errorf("query device-mapper target %s: %w", name, err)
	}
}

// activateDM builds the snapshot target for o and returns its device path.
// It is idempotent: an existing target is reused. On failure it detaches
// the loop devices it attached.
func activateDM(ctx context.Context, o Overlay) (path string, err error) {
	if why := deviceMapperProbe(); why != "" {
		return "", api.Errorf(api.KindUnavailable, "activate dm-snapshot overlay %s: %s", o.DMName, why)
	}
	exists, err := dmExists(ctx, o.DMName)
	if err != nil {
		return "", err
	}
	if exists {
		return dmDevicePath(o.DMName), nil
	}
	st, err := os.Stat(o.Base)
	if err != nil {
		return "", fmt.Errorf("activate overlay %s: base image: %w", o.DMName, err)
	}
	if _, err := os.Stat(o.File); err != nil {
		return "", fmt.Errorf("activate overlay %s: COW file: %w (reset the VM's system disk to recreate it)", o.DMName, err)
	}
	// A crash between losetup and dmsetup create may have left the COW
	// attached; a second attachment would let two writers share it.
	if err := detachLoopsOf(ctx, o.File); err != nil {
		return "", err
	}

	var attached []string
	defer func() {
		if err != nil {
			// Cleanup must run even when ctx was cancelled.
			cleanupCtx := context.WithoutCancel(ctx)
			for _, dev := range attached {
				_, _ = runCommand(cleanupCtx, "losetup", losetupDetachArgs(dev)...)
			}
		}
	}()
	attach := func(file string, readOnly bool) (string, error) {
		out, err := runCommand(ctx, "losetup", losetupAttachArgs(file, readOnly)...)
		if err != nil {
			return "", fmt.Errorf("attach %s to a loop device: %w", file, err)
		}
		dev := strings.TrimSpace(string(out))
		if !strings.HasPrefix(dev, "/dev/") {
			return "", fmt.Errorf("attach %s to a loop device: losetup printed %q, not a device path", file, dev)
		}
		attached = append(attached, dev)
		return dev, nil
	}
	baseLoop, err := attach(o.Base, true)
	if err != nil {
		return "", err
	}
	cowLoop, err := attach(o.File, false)
	if err != nil {
		return "", err
	}
	table, err := dmSnapshotTable(st.Size(), baseLoop, cowLoop)
	if err != nil {
		return "", fmt.Errorf("activate overlay %s: %w", o.DMName, err)
	}
	if _, err := runCommand(ctx, "dmsetup", dmCreateArgs(o.DMName, table)...); err != nil {
		return "", fmt.Errorf("create device-mapper snapshot %s: %w", o.DMName, err)
	}
	// Without udev nobody else makes the /dev/mapper node.
	if _, err := runCommand(ctx, "dmsetup", dmMknodesArgs(o.DMName)...); err != nil {
		_, _ = runCommand(context.WithoutCancel(ctx), "dmsetup", dmRemoveArgs(o.DMName)...)
		return "", fmt.Errorf("create device node for %s: %w", o.DMName, err)
	}
	return dmDevicePath(o.DMName), nil
}

// deactivateDM removes the target and detaches its loop devices. Missing
// pieces are not errors, so it can finish a teardown a crash interrupted.
func deactivateDM(ctx context.Context, o Overlay) error {
	if deviceMapperProbe() != "" {
		// No device-mapper, so no target can exist: nothing to tear down,
		// and Remove must still work so the VM can be deleted.
		return nil
	}
	exists, err := dmExists(ctx, o.DMName)
	if err != nil {
		return err
	}
	if exists {
		out, err := runCommand(ctx, "dmsetup", dmDepsArgs(o.DMName)...)
		if err != nil {
			return fmt.Errorf("list devices under %s: %w", o.DMName, err)
		}
		loops := parseDMDeps(string(out))
		if _, err := runCommand(ctx, "dmsetup", dmRemoveArgs(o.DMName)...); err != nil && !isDMMissing(err) {
			return fmt.Errorf("remove device-mapper target %s (is the VM still running?): %w", o.DMName, err)
		}
		for _, dev := range loops {
			if !strings.HasPrefix(filepath.Base(dev), "loop") {
				continue // never detach anything but the loops we made
			}
			if err := detachLoop(ctx, dev); err != nil {
				return err
			}
		}
	}
	// A COW attached by an activation that crashed before dmsetup create.
	return detachLoopsOf(ctx, o.File)
}

func detachLoop(ctx context.Context, dev string) error {
	_, err := runCommand(ctx, "losetup", losetupDetachArgs(dev)...)
	if err != nil && !isDMMissing(err) {
		return fmt.Errorf("detach loop device %s: %w", dev, err)
	}
	return nil
}

// detachLoopsOf detaches every loop device backed by file. Only used for
// per-VM files: the base image's loops are shared by all VMs of an image.
func detachLoopsOf(ctx context.Context, file string) error {
	if _, err := os.Stat(file); err != nil {
		return nil // losetup cannot match a missing file; nothing is attached by path
	}
	out, err := runCommand(ctx, "losetup", losetupAssociatedArgs(file)...)
	if err != nil {
		return fmt.Errorf("list loop devices of %s: %w", file, err)
	}
	for _, dev := range parseLines(string(out)) {
		if err := detachLoop(ctx, dev); err != nil {
			return err
		}
	}
	return nil
}
