package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// isHole reports whether [off, off+n) of path is entirely unallocated.
func isHole(t *testing.T, path string, off, n int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return data >= off+n
}

func TestSparseCopyKeepsContentAndHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	const size = 32 << 20
	sparseFile(t, src, size, map[int64][]byte{
		0:                pattern(12288, 1),
		10 << 20:         pattern(1<<20+100, 2), // ends mid-block
		size - 4096:      pattern(4096, 3),      // last block
		(5 << 20) + 4096: make([]byte, 1<<20),   // written zeros: allocated in src
	})
	if isHole(t, src, 5<<20+4096, 1<<20) {
		t.Fatal("test setup: explicit zeros were not allocated in the source")
	}
	dst := filepath.Join(dir, "dst.img")
	err := createFileAtomic(dst, func(f *os.File) error { return sparseCopyInto(context.Background(), f, src) })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, src), readFile(t, dst)) {
		t.Fatal("copy differs from source")
	}
	st, _ := os.Stat(dst)
	if st.Size() != size || st.Mode().Perm() != diskFileMode {
		t.Errorf("copy size %d mode %v, want %d %v", st.Size(), st.Mode().Perm(), size, os.FileMode(diskFileMode))
	}
	// Data: 12 KiB + 1 MiB+100 rounded up to blocks + 4 KiB.
	const data = 12288 + (1<<20 + 4096) + 4096
	if got := allocatedBytes(t, dst); got < data || got > data+64<<10 {
		t.Errorf("copy allocates %d bytes, want about %d", got, data)
	}
	for _, hole := range [][2]int64{{12288, 10<<20 - 12288}, {5 << 20, 2 << 20}, {12 << 20, size - 4096 - 12<<20}} {
		if !isHole(t, dst, hole[0], hole[1]) {
			t.Errorf("copy has data in [%d, +%d), want a hole", hole[0], hole[1])
		}
	}
	if left := dirEntries(t, dir); len(left) != 2 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestSparseCopyEmptyAndAllHole(t *testing.T) {
	dir := t.TempDir()
	for name, size := range map[string]int64{"empty": 0, "hole": 8 << 20} {
		src := filepath.Join(dir, name)
		sparseFile(t, src, size, nil)
		dst := src + ".copy"
		if err := createFileAtomic(dst, func(f *os.File) error { return sparseCopyInto(context.Background(), f, src) }); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(dst); st.Size() != size || allocatedBytes(t, dst) != 0 {
			t.Errorf("%s: size %d allocated %d", name, st.Size(), allocatedBytes(t, dst))
		}
	}
}

func TestSparseCopyCancelled(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	sparseFile(t, src, 8<<20, map[int64][]byte{0: pattern(1<<20, 1)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(dir, "dst")
	err := createFileAtomic(dst, func(f *os.File) error { return sparseCopyInto(ctx, f, src) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if left := dirEntries(t, dir); len(left) != 1 {
		t.Errorf("cancelled copy left files: %v", left)
	}
}

func TestCreateFileAtomicRefusesExisting(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "x")
	writeAt(t, dst, 0, []byte("keep"))
	err := createFileAtomic(dst, func(f *os.File) error { _, err := f.WriteString("new"); return err })
	if err == nil || string(readFile(t, dst)) != "keep" {
		t.Fatalf("err = %v, content %q", err, readFile(t, dst))
	}
}
