package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/api"
)

// Overlay is a VM's system disk: a copy-on-write layer over an image's
// read-only base. The daemon persists it as JSON and hands it back to
// Activate at every start.
type Overlay struct {
	Strategy Strategy `json:"strategy"`
	// Base is the image's root filesystem (raw ext4), never written.
	Base string `json:"base"`
	// File is the per-VM file: the COW store (dm-snapshot), the qcow2
	// overlay, or the full raw clone (reflink, copy).
	File string `json:"file"`
	// Format is what the VMM opens: "raw" or "qcow2".
	Format string `json:"format"`
	// DMName is the device-mapper target name (dm-snapshot only).
	DMName string `json:"dm_name,omitempty"`
}

// Drive formats, as vmm.Drive.Format expects them.
const (
	FormatRaw   = "raw"
	FormatQcow2 = "qcow2"
)

// overlayFileName is the per-VM file name of each strategy, inside the VM dir.
func overlayFileName(s Strategy) string {
	switch s {
	case StrategyDMSnapshot:
		return "overlay.cow"
	case StrategyQcow2:
		return "overlay.qcow2"
	default:
		return "overlay.ext4"
	}
}

// OverlayOptions tune CreateOverlayWith. The zero value is the default.
type OverlayOptions struct {
	// COWSizeBytes caps the dm-snapshot COW store. Zero means large enough
	// for the guest to rewrite the whole base (the file is sparse).
	COWSizeBytes int64
}

// CreateOverlay makes the system overlay of VM vmID in dir (the VM's own
// directory) over the read-only image base with strategy s. It does not
// activate it. On error it removes whatever it made.
func CreateOverlay(ctx context.Context, s Strategy, base, dir, vmID string) (Overlay, error) {
	return CreateOverlayWith(ctx, s, base, dir, vmID, OverlayOptions{})
}

// CreateOverlayWith is CreateOverlay with options.
func CreateOverlayWith(ctx context.Context, s Strategy, base, dir, vmID string, opts OverlayOptions) (Overlay, error) {
	if err := checkVMID(vmID); err != nil {
		return Overlay{}, api.Errorf(api.KindInvalidInput, "create system overlay: %v", err)
	}
	if _, err := ParseStrategy(string(s)); err != nil {
		return Overlay{}, err
	}
	if opts.COWSizeBytes < 0 {
		return Overlay{}, api.Errorf(api.KindInvalidInput, "create system overlay: negative COW size %d", opts.COWSizeBytes)
	}
	absBase, err := absPath(base)
	if err != nil {
		return Overlay{}, err
	}
	if err := checkRegularFile(absBase, "base image"); err != nil {
		return Overlay{}, err
	}
	absDir, err := absPath(dir)
	if err != nil {
		return Overlay{}, err
	}
	o := Overlay{
		Strategy: s,
		Base:     absBase,
		File:     filepath.Join(absDir, overlayFileName(s)),
		Format:   FormatRaw,
	}
	switch s {
	case StrategyQcow2:
		o.Format = FormatQcow2
	case StrategyDMSnapshot:
		o.DMName = DMName(vmID)
	}
	if _, err := os.Lstat(o.File); err == nil {
		return Overlay{}, api.Errorf(api.KindConflict,
			"create system overlay: %s already exists; remove the old overlay or reset it", o.File)
	}
	if err := o.makeFile(ctx, opts.COWSizeBytes); err != nil {
		return Overlay{}, err
	}
	return o, nil
}

func checkRegularFile(path, what string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.NotFound(what, path)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return api.Errorf(api.KindInvalidInput, "%s %s is not a regular file", what, path)
	}
	return nil
}

// makeFile creates o.File from o.Base; it leaves nothing behind on error.
func (o Overlay) makeFile(ctx context.Context, cowSize int64) error {
	var err error
	switch o.Strategy {
	case StrategyDMSnapshot:
		err = createFileAtomic(o.File, func(f *os.File) error {
			size := cowSize
			if size == 0 {
				st, err := os.Stat(o.Base)
				if err != nil {
					return err
				}
				size = dmCOWSize(st.Size())
			}
			// A sparse, zeroed file: the snapshot target initialises a
			// persistent store whose header is all zeros.
			return f.Truncate(size)
		})
	case StrategyQcow2:
		err = createQcow2(ctx, o.Base, o.File)
	case StrategyReflink:
		err = createFileAtomic(o.File, func(f *os.File) error { return reflinkInto(f, o.Base) })
	case StrategyCopy:
		err = createFileAtomic(o.File, func(f *os.File) error { return sparseCopyInto(ctx, f, o.Base) })
	default:
		err = fmt.Errorf("unknown overlay strategy %q", o.Strategy)
	}
	if err != nil {
		return fmt.Errorf("create %s system overlay %s: %w", o.Strategy, o.File, err)
	}
	syncDir(filepath.Dir(o.File))
	return nil
}

// qemuImgCreateArgs makes a qcow2 overlay whose backing file is the raw
// base; qemu-img records the path, so base must be absolute.
func qemuImgCreateArgs(base, overlay string) []string {
	return []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay}
}

func createQcow2(ctx context.Context, base, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s already exists", dst)
	}
	// qemu-img writes in place; build under a temporary name and rename so
	// a failure or cancel leaves nothing at dst.
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	_ = os.Remove(tmp)
	if _, err := runCommand(ctx, "qemu-img", qemuImgCreateArgs(base, tmp)...); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, diskFileMode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Activate prepares the overlay for a VM start and returns the path to give
// the VMM. Only dm-snapshot has work to do: it builds the snapshot target
// (loop devices do not survive a reboot). It is idempotent.
func (o Overlay) Activate(ctx context.Context) (string, error) {
	if o.Strategy == StrategyDMSnapshot {
		return activateDM(ctx, o)
	}
	if err := checkRegularFile(o.File, "system overlay"); err != nil {
		return "", err
	}
	return o.File, nil
}

// Deactivate undoes Activate after the VM stopped. It is idempotent and a
// no-op except for dm-snapshot.
func (o Overlay) Deactivate(ctx context.Context) error {
	if o.Strategy == StrategyDMSnapshot {
		return deactivateDM(ctx, o)
	}
	return nil
}

// Remove deactivates the overlay and deletes its file. It is idempotent.
// The base image and the work disk are untouched.
func (o Overlay) Remove(ctx context.Context) error {
	if err := o.Deactivate(ctx); err != nil {
		return err
	}
	if o.File == "" {
		return nil
	}
	if err := os.Remove(o.File); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove system overlay %s: %w", o.File, err)
	}
	return nil
}

// Reset discards every change the VM made to its system disk by recreating
// the overlay from the base. The VM must be stopped. The work disk is
// untouched.
func (o Overlay) Reset(ctx context.Context) error {
	if err := o.Deactivate(ctx); err != nil {
		return err
	}
	var cowSize int64
	if o.Strategy == StrategyDMSnapshot {
		// Keep a size the user chose at create time.
		if st, err := os.Stat(o.File); err == nil {
			cowSize = st.Size()
		}
	}
	if err := checkRegularFile(o.Base, "base image"); err != nil {
		return err
	}
	// Build the fresh file beside the old one, then swap, so a failed reset
	// leaves the previous overlay usable.
	fresh := o
	fresh.File = filepath.Join(filepath.Dir(o.File), ".reset-"+filepath.Base(o.File))
	_ = os.Remove(fresh.File)
	if err := fresh.makeFile(ctx, cowSize); err != nil {
		return fmt.Errorf("reset system overlay: %w", err)
	}
	if err := os.Rename(fresh.File, o.File); err != nil {
		os.Remove(fresh.File)
		return fmt.Errorf("reset system overlay: %w", err)
	}
	syncDir(filepath.Dir(o.File))
	return nil
}
