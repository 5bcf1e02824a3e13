package disk

import (
	"bytes"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// requireTools skips unless every named host tool is installed.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
}

// runTool runs a host tool for test setup or verification.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// allocatedBytes is st_blocks*512 of path.
func allocatedBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// writeAt writes data at off in path, creating it.
func writeAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// sparseFile creates a sparse file of size with the given data pieces.
func sparseFile(t testing.TB, path string, size int64, pieces map[int64][]byte) {
	t.Helper()
	writeAt(t, path, 0, nil)
	for off, data := range pieces {
		writeAt(t, path, off, data)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

// dirEntries lists the names in dir, to check nothing was left behind.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// reflinkDir returns a directory whose filesystem can reflink: the test's
// temp dir when it can, otherwise (with BANGER_INTEGRATION=1, as root, with
// mkfs.xfs) a loop-mounted xfs image that is unmounted at cleanup.
func reflinkDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	probeErr := ReflinkSupported(dir)
	if probeErr == nil {
		return dir
	}
	if os.Getenv("BANGER_INTEGRATION") != "1" {
		testenv.Require(t, false, "reflink-capable filesystem (btrfs, xfs) for temp files ("+probeErr.Error()+
			"); set BANGER_INTEGRATION=1 to mount an xfs image instead")
	}
	testenv.Require(t, os.Geteuid() == 0, "root, to mount an xfs image for the reflink test")
	requireTools(t, "mkfs.xfs", "mount", "umount")
	img := filepath.Join(dir, "xfs.img")
	writeAt(t, img, 0, nil)
	if err := os.Truncate(img, 16<<30); err != nil { // sparse; room for a 10 GiB bench base
		t.Fatal(err)
	}
	runTool(t, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	if err := ReflinkSupported(mnt); err != nil {
		t.Fatalf("xfs mounted with reflink=1 still cannot reflink: %v", err)
	}
	return mnt
}
