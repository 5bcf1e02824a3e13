package disk

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"golang.org/x/sys/unix"
)

// fsFacts reads the filesystem size and label of an ext4 image.
func fsFacts(t *testing.T, path string) (sizeBytes int64, label string) {
	t.Helper()
	out := runTool(t, "dumpe2fs", "-h", path)
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dumpe2fs -h %s has no %q:\n%s", path, name, out)
		}
		return strings.TrimSpace(m[1])
	}
	count, err1 := strconv.ParseInt(field("Block count"), 10, 64)
	size, err2 := strconv.ParseInt(field("Block size"), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("dumpe2fs output: %v %v", err1, err2)
	}
	return count * size, field("Filesystem volume name")
}

func debugfsCat(t *testing.T, image, file string) string {
	t.Helper()
	return runTool(t, "debugfs", "-R", "cat "+file, image)
}

// makeSeed builds a work seed with one file in it, as the image builder does.
func makeSeed(t *testing.T, size string, label string) string {
	t.Helper()
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(filepath.Join(content, "projects"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "projects", "hello.txt"), []byte("hello from the seed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(dir, "work-seed.ext4")
	runTool(t, "mkfs.ext4", "-q", "-F", "-L", label, "-d", content, seed, size)
	return seed
}

func TestWorkDiskFromSeed(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "e2label", "dumpe2fs", "debugfs")
	ctx := context.Background()
	// A seed with another label: the work disk must still be banger-work.
	seed := makeSeed(t, "16M", "seed")
	disk := filepath.Join(t.TempDir(), "work.ext4")
	if err := CreateWorkDisk(ctx, seed, disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	size, label := fsFacts(t, disk)
	if size != 64<<20 || label != WorkLabel {
		t.Errorf("work disk: filesystem %d bytes label %q, want %d %q", size, label, 64<<20, WorkLabel)
	}
	if got := debugfsCat(t, disk, "/projects/hello.txt"); got != "hello from the seed\n" {
		t.Errorf("seed file after create: %q", got)
	}
	if n, err := WorkDiskSize(disk); err != nil || n != 64<<20 {
		t.Errorf("WorkDiskSize = %d, %v", n, err)
	}
	if st, _ := os.Stat(disk); st.Mode().Perm() != diskFileMode {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if _, l := fsFacts(t, seed); l != "seed" {
		t.Errorf("creating the work disk changed the seed's label to %q", l)
	}

	if err := GrowWorkDisk(ctx, disk, 96<<20); err != nil {
		t.Fatal(err)
	}
	size, label = fsFacts(t, disk)
	if size != 96<<20 || label != WorkLabel {
		t.Errorf("grown: filesystem %d bytes label %q, want %d %q", size, label, 96<<20, WorkLabel)
	}
	if got := debugfsCat(t, disk, "/projects/hello.txt"); got != "hello from the seed\n" {
		t.Errorf("seed file after grow: %q", got)
	}
	runTool(t, "e2fsck", "-fn", disk) // exit 0: clean

	// Same size: no-op. Smaller: refused, untouched.
	if err := GrowWorkDisk(ctx, disk, 96<<20); err != nil {
		t.Errorf("grow to the same size: %v", err)
	}
	err := GrowWorkDisk(ctx, disk, 32<<20)
	if !api.IsKind(err, api.KindInvalidInput) || !strings.Contains(err.Error(), "cannot shrink") {
		t.Errorf("shrink: %v, want invalid_input 'cannot shrink'", err)
	}
	if n, _ := WorkDiskSize(disk); n != 96<<20 {
		t.Errorf("refused shrink changed size to %d", n)
	}
}

func TestWorkDiskSeedSizeAndRefusals(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "e2label", "dumpe2fs", "debugfs")
	ctx := context.Background()
	seed := makeSeed(t, "16M", WorkLabel)
	dir := t.TempDir()

	// Size 0 keeps the seed's size and skips the resize.
	keep := filepath.Join(dir, "keep.ext4")
	if err := CreateWorkDisk(ctx, seed, keep, 0); err != nil {
		t.Fatal(err)
	}
	if size, label := fsFacts(t, keep); size != 16<<20 || label != WorkLabel {
		t.Errorf("size-0 disk: %d %q", size, label)
	}
	if allocatedBytes(t, keep) > allocatedBytes(t, seed)+64<<10 {
		t.Errorf("copy of the seed is not sparse: %d vs seed %d", allocatedBytes(t, keep), allocatedBytes(t, seed))
	}

	refusals := []struct {
		name, seed, path string
		size             int64
		kind             api.ErrorKind
	}{
		{"smaller than seed", seed, filepath.Join(dir, "small.ext4"), 8 << 20, api.KindInvalidInput},
		{"negative", seed, filepath.Join(dir, "neg.ext4"), -1, api.KindInvalidInput},
		{"exists", seed, keep, 32 << 20, api.KindConflict},
		{"missing seed", filepath.Join(dir, "nope"), filepath.Join(dir, "x.ext4"), 32 << 20, api.KindNotFound},
		{"no seed, no size", "", filepath.Join(dir, "y.ext4"), 0, api.KindInvalidInput},
		{"no seed, tiny", "", filepath.Join(dir, "z.ext4"), 4096, api.KindInvalidInput},
	}
	for _, r := range refusals {
		if err := CreateWorkDisk(ctx, r.seed, r.path, r.size); !api.IsKind(err, r.kind) {
			t.Errorf("%s: %v, want %s", r.name, err, r.kind)
		}
	}
	if left := dirEntries(t, dir); len(left) != 1 {
		t.Errorf("refused creates left files: %v", left)
	}
	if _, err := WorkDiskSize(filepath.Join(dir, "nope")); !api.IsKind(err, api.KindNotFound) {
		t.Errorf("WorkDiskSize(missing) = %v", err)
	}
	if err := GrowWorkDisk(ctx, filepath.Join(dir, "nope"), 1<<30); !api.IsKind(err, api.KindNotFound) {
		t.Errorf("GrowWorkDisk(missing) = %v", err)
	}
}

func TestWorkDiskEmpty(t *testing.T) {
	requireTools(t, "mkfs.ext4", "dumpe2fs")
	disk := filepath.Join(t.TempDir(), "work.ext4")
	if err := CreateWorkDisk(context.Background(), "", disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	if size, label := fsFacts(t, disk); size != 32<<20 || label != WorkLabel {
		t.Errorf("empty work disk: %d %q", size, label)
	}
	if out := runTool(t, "dumpe2fs", "-h", disk); !regexp.MustCompile(`(?m)^Reserved block count:\s+0$`).MatchString(out) {
		t.Errorf("empty work disk reserves blocks for root")
	}
}

// A failing e2fsck must leave the disk at its old size.
func TestGrowWorkDiskFailureRestoresSize(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "work.ext4")
	sparseFile(t, disk, 16<<20, nil)
	old := runCommand
	t.Cleanup(func() { runCommand = old })
	var calls []string
	runCommand = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, name)
		return nil, &commandError{Cmd: name, ExitCode: 8, Stderr: "e2fsck: Bad magic number", Err: os.ErrInvalid}
	}
	err := GrowWorkDisk(context.Background(), disk, 32<<20)
	if err == nil || !strings.Contains(err.Error(), "Bad magic number") {
		t.Fatalf("err = %v", err)
	}
	if n, _ := WorkDiskSize(disk); n != 16<<20 {
		t.Errorf("size after failed grow %d, want %d", n, 16<<20)
	}
	if strings.Join(calls, ",") != "e2fsck" {
		t.Errorf("commands run: %v, want only e2fsck", calls)
	}
	// Exit code 1 (errors fixed) is success: resize2fs runs.
	calls = nil
	runCommand = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, name)
		if name == "e2fsck" {
			return nil, &commandError{Cmd: name, ExitCode: 1, Err: os.ErrInvalid}
		}
		return nil, nil
	}
	if err := GrowWorkDisk(context.Background(), disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	if strings.Join(calls, ",") != "e2fsck,resize2fs" {
		t.Errorf("commands run: %v", calls)
	}
}

// A disk another process holds a lock on (as QEMU does) is not grown.
func TestGrowWorkDiskRefusesLockedDisk(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "work.ext4")
	sparseFile(t, disk, 16<<20, nil)
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// QEMU's image locks are OFD locks on single bytes.
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 100, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if err := GrowWorkDisk(context.Background(), disk, 32<<20); !api.IsKind(err, api.KindBusy) {
		t.Errorf("grow of locked disk = %v, want busy", err)
	}
	if n, _ := WorkDiskSize(disk); n != 16<<20 {
		t.Errorf("size changed to %d", n)
	}
}
