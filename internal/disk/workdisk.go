package disk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/banger-dev/banger/internal/api"
	"golang.org/x/sys/unix"
)

// WorkLabel is the ext4 label of every work disk; guests mount it by label.
const WorkLabel = "banger-work"

// CreateWorkDisk makes the VM's persistent work disk at path: a clone of the
// image's work seed (an ext4 image) grown to sizeBytes, or, with no seed,
// an empty ext4 filesystem of sizeBytes. sizeBytes 0 keeps the seed's size.
// The result always carries the label banger-work. On error nothing is
// left at path.
func CreateWorkDisk(ctx context.Context, seed, path string, sizeBytes int64) error {
	if sizeBytes < 0 {
		return api.Errorf(api.KindInvalidInput, "work disk size %d is negative", sizeBytes)
	}
	if _, err := os.Lstat(path); err == nil {
		return api.Errorf(api.KindConflict, "work disk %s already exists", path)
	}
	if seed == "" {
		if sizeBytes == 0 {
			return api.Errorf(api.KindInvalidInput, "work disk size is required when the image has no work seed")
		}
		if sizeBytes < minWorkDiskBytes {
			return api.Errorf(api.KindInvalidInput, "work disk size %s is too small: at least %s",
				formatBytes(sizeBytes), formatBytes(minWorkDiskBytes))
		}
		return createFileAtomic(path, func(f *os.File) error {
			if err := f.Truncate(sizeBytes); err != nil {
				return fmt.Errorf("size work disk %s: %w", path, err)
			}
			if _, err := runCommand(ctx, "mkfs.ext4", mkfsWorkArgs(f.Name())...); err != nil {
				return fmt.Errorf("make work disk filesystem: %w", err)
			}
			return nil
		})
	}

	if err := checkRegularFile(seed, "work seed"); err != nil {
		return err
	}
	st, err := os.Stat(seed)
	if err != nil {
		return fmt.Errorf("work seed: %w", err)
	}
	if sizeBytes == 0 {
		sizeBytes = st.Size()
	}
	if sizeBytes < st.Size() {
		return api.Errorf(api.KindInvalidInput,
			"work disk size %s is smaller than the image's work seed (%s): ask for at least %s",
			formatBytes(sizeBytes), formatBytes(st.Size()), formatBytes(st.Size()))
	}
	return createFileAtomic(path, func(f *os.File) error {
		if err := reflinkInto(f, seed); err != nil {
			// Most filesystems cannot reflink; a sparse copy costs O(data).
			if err := sparseCopyInto(ctx, f, seed); err != nil {
				return fmt.Errorf("copy work seed: %w", err)
			}
		}
		if sizeBytes > st.Size() {
			if err := growFilesystem(ctx, f.Name(), st.Size(), sizeBytes); err != nil {
				return err
			}
		}
		if _, err := runCommand(ctx, "e2label", f.Name(), WorkLabel); err != nil {
			return fmt.Errorf("label work disk: %w", err)
		}
		return nil
	})
}

// minWorkDiskBytes is the smallest disk mkfs.ext4 formats without trouble.
const minWorkDiskBytes = 4 << 20

// mkfsWorkArgs formats an empty work disk. No blocks are reserved for
// root: the whole disk is the user's.
func mkfsWorkArgs(path string) []string {
	return []string{"-q", "-F", "-t", "ext4", "-L", WorkLabel, "-m", "0", path}
}

// e2fsckArgs checks the filesystem even when marked clean (resize2fs
// insists on it) and fixes what it finds without asking.
func e2fsckArgs(path string) []string { return []string{"-f", "-y", path} }

func resize2fsArgs(path string) []string { return []string{path} }

// GrowWorkDisk grows the work disk at path, and its filesystem, to
// sizeBytes. The VM must be stopped (the disk is grown offline). Shrinking
// is refused; the same size is a no-op.
func GrowWorkDisk(ctx context.Context, path string, sizeBytes int64) error {
	cur, err := WorkDiskSize(path)
	if err != nil {
		return err
	}
	if sizeBytes < cur {
		return api.Errorf(api.KindInvalidInput,
			"cannot shrink work disk %s from %s to %s: only growing is supported",
			path, formatBytes(cur), formatBytes(sizeBytes))
	}
	if sizeBytes == cur {
		return nil
	}
	if err := checkNotLocked(path); err != nil {
		return err
	}
	return growFilesystem(ctx, path, cur, sizeBytes)
}

// growFilesystem extends the file, checks the filesystem, and grows it to
// fill the file. Until resize2fs starts, a failure restores the old size.
func growFilesystem(ctx context.Context, path string, oldSize, newSize int64) error {
	if err := os.Truncate(path, newSize); err != nil {
		return fmt.Errorf("grow work disk %s: %w", path, err)
	}
	// e2fsck: 0 = clean, 1 = errors fixed; anything else needs a human.
	if _, err := runCommand(ctx, "e2fsck", e2fsckArgs(path)...); err != nil && exitCode(err) != 1 {
		_ = os.Truncate(path, oldSize)
		return fmt.Errorf("check work disk %s before growing it (run e2fsck -f on it by hand): %w", path, err)
	}
	if _, err := runCommand(ctx, "resize2fs", resize2fsArgs(path)...); err != nil {
		return fmt.Errorf("grow the filesystem of work disk %s (run e2fsck -f and resize2fs on it by hand): %w", path, err)
	}
	return nil
}

// checkNotLocked refuses to touch a disk some process holds a lock on:
// QEMU locks the images it has open, so this catches a running VM.
func checkNotLocked(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open work disk %s: %w", path, err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return nil // no OFD locks here: nothing to learn
	}
	if lk.Type != unix.F_UNLCK {
		return api.Errorf(api.KindBusy, "work disk %s is in use by another process (is the VM running?); stop the VM first", path)
	}
	return nil
}

// WorkDiskSize is the size in bytes of the disk at path, as the guest sees it.
func WorkDiskSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, api.NotFound("work disk", path)
	}
	if err != nil {
		return 0, fmt.Errorf("work disk %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return 0, api.Errorf(api.KindInvalidInput, "work disk %s is not a regular file", path)
	}
	return st.Size(), nil
}
