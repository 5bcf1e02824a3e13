package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// diskFileMode is the mode of every disk file banger makes: VM disks are
// private to the daemon.
const diskFileMode = 0o600

// createFileAtomic makes dst by filling a temporary file next to it and
// renaming it into place once complete and synced, so a crash or a failure
// never leaves a half-written dst. The temporary file is removed on error.
// dst must not exist.
func createFileAtomic(dst string, fill func(tmp *os.File) error) (err error) {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("create %s: it already exists", dst)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(diskFileMode); err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return renameNoReplace(tmp.Name(), dst)
}

// renameNoReplace renames and refuses to overwrite, so two creators racing
// for one path cannot silently replace each other's file.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// Filesystem without RENAME_NOREPLACE: fall back to a checked rename.
		if _, statErr := os.Lstat(to); statErr == nil {
			return fmt.Errorf("rename %s to %s: destination exists", from, to)
		}
		err = os.Rename(from, to)
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// reflinkInto clones src into the open file dst with FICLONE: O(1), the
// two files share blocks until either is written.
func reflinkInto(dst *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	if err := unix.IoctlFileClone(int(dst.Fd()), int(in.Fd())); err != nil {
		if isNoReflink(err) {
			return fmt.Errorf("reflink %s to %s: the filesystem cannot reflink (%v); use the copy strategy", src, dst.Name(), err)
		}
		return fmt.Errorf("reflink %s to %s: %w", src, dst.Name(), err)
	}
	return nil
}

// copyBlock is the granularity at which runs of zeros are left as holes;
// it matches the ext4 block size of every image banger makes.
const copyBlock = 4096

// sparseCopyInto copies src into the empty open file dst, reading only the
// data extents of src (SEEK_DATA/SEEK_HOLE) and leaving any block of zeros
// as a hole. The cost is proportional to the data, not to the size.
func sparseCopyInto(ctx context.Context, dst *os.File, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	size := st.Size()
	buf := make([]byte, 1<<20)
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		end := size
		if err != nil {
			// No SEEK_DATA on this filesystem: treat the rest as data; the
			// zero-block check still keeps the copy sparse.
			start = off
		} else if end, err = unix.Seek(fd, start, unix.SEEK_HOLE); err != nil {
			return fmt.Errorf("find holes in %s: %w", src, err)
		}
		if err := copyRangeSkippingZeros(ctx, dst, in, start, end, buf); err != nil {
			return fmt.Errorf("copy %s to %s: %w", src, dst.Name(), err)
		}
		off = end
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("set size of %s: %w", dst.Name(), err)
	}
	return nil
}

func copyRangeSkippingZeros(ctx context.Context, dst, src *os.File, start, end int64, buf []byte) error {
	for pos := start; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), end-pos)]
		n, err := src.ReadAt(chunk, pos)
		if n == 0 && err != nil {
			if err == io.EOF {
				return nil // src shrank under us; the final truncate sets the size
			}
			return err
		}
		if err := writeNonZeroRuns(dst, chunk[:n], pos); err != nil {
			return err
		}
		pos += int64(n)
	}
	return nil
}

// writeNonZeroRuns writes data at off, skipping whole blocks of zeros.
func writeNonZeroRuns(dst *os.File, data []byte, off int64) error {
	runStart := -1
	for i := 0; i < len(data); i += copyBlock {
		blk := data[i:min(i+copyBlock, len(data))]
		if isZero(blk) {
			if runStart >= 0 {
				if _, err := dst.WriteAt(data[runStart:i], off+int64(runStart)); err != nil {
					return err
				}
				runStart = -1
			}
			continue
		}
		if runStart < 0 {
			runStart = i
		}
	}
	if runStart >= 0 {
		if _, err := dst.WriteAt(data[runStart:], off+int64(runStart)); err != nil {
			return err
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
