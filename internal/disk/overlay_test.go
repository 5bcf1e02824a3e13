package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// testBase makes a sparse 16 MiB "image" with data at a few places.
func testBase(t *testing.T) string {
	t.Helper()
	base := filepath.Join(t.TempDir(), "rootfs.ext4")
	sparseFile(t, base, 16<<20, map[int64][]byte{0: pattern(8192, 1), 10 << 20: pattern(1<<20, 2)})
	if err := os.Chmod(base, 0o444); err != nil {
		t.Fatal(err)
	}
	return base
}

// Raw-file strategies: the overlay is a full clone the VMM opens directly.
func TestRawFileOverlayLifecycle(t *testing.T) {
	for _, s := range []Strategy{StrategyCopy, StrategyReflink} {
		t.Run(string(s), func(t *testing.T) {
			ctx := context.Background()
			base := testBase(t)
			dir := t.TempDir()
			if s == StrategyReflink {
				// FICLONE needs base and clone on the same filesystem.
				dir = reflinkDir(t)
				base = filepath.Join(dir, "rootfs.ext4")
				writeAt(t, base, 0, readFile(t, testBase(t)))
				dir = filepath.Join(dir, "vm1")
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			baseBefore := readFile(t, base)
			o, err := CreateOverlay(ctx, s, base, dir, "vm1")
			if err != nil {
				t.Fatal(err)
			}
			if o.Strategy != s || o.Format != FormatRaw || o.Base != base || o.DMName != "" || filepath.Dir(o.File) != dir {
				t.Fatalf("overlay = %+v", o)
			}
			path, err := o.Activate(ctx)
			if err != nil || path != o.File {
				t.Fatalf("Activate = %q, %v", path, err)
			}
			if !bytes.Equal(readFile(t, o.File), baseBefore) {
				t.Fatal("overlay content differs from base")
			}
			// The guest writes; the base must not change.
			writeAt(t, o.File, 4096, []byte("guest wrote this"))
			if !bytes.Equal(readFile(t, base), baseBefore) {
				t.Fatal("writing the overlay changed the base")
			}
			if err := o.Deactivate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := o.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, o.File), baseBefore) {
				t.Fatal("Reset did not restore the base content")
			}
			if left := dirEntries(t, dir); len(left) != 1 {
				t.Errorf("files in VM dir after reset: %v", left)
			}
			// Creating over an existing overlay is refused and harmless.
			if _, err := CreateOverlay(ctx, s, base, dir, "vm1"); !api.IsKind(err, api.KindConflict) {
				t.Errorf("second CreateOverlay = %v, want conflict", err)
			}
			if err := o.Remove(ctx); err != nil {
				t.Fatal(err)
			}
			if err := o.Remove(ctx); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
			if left := dirEntries(t, dir); len(left) != 0 {
				t.Errorf("files left after Remove: %v", left)
			}
			if _, err := o.Activate(ctx); !api.IsKind(err, api.KindNotFound) {
				t.Errorf("Activate after Remove = %v, want not_found", err)
			}
		})
	}
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

type qemuImgInfo struct {
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	BackingFile    string `json:"backing-filename"`
	BackingFormat  string `json:"backing-filename-format"`
	FullBackingFil string `json:"full-backing-filename"`
}

func TestQcow2Overlay(t *testing.T) {
	requireTools(t, "qemu-img")
	ctx := context.Background()
	base := testBase(t)
	baseBefore := readFile(t, base)
	dir := t.TempDir()
	o, err := CreateOverlay(ctx, StrategyQcow2, base, dir, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Format != FormatQcow2 || o.File != filepath.Join(dir, "overlay.qcow2") {
		t.Fatalf("overlay = %+v", o)
	}
	check := func() {
		t.Helper()
		var info qemuImgInfo
		if err := json.Unmarshal([]byte(runTool(t, "qemu-img", "info", "--output=json", o.File)), &info); err != nil {
			t.Fatal(err)
		}
		if info.Format != "qcow2" || info.BackingFile != base || info.BackingFormat != "raw" || info.VirtualSize != 16<<20 {
			t.Errorf("qemu-img info = %+v, want qcow2 backed by raw %s, 16 MiB", info, base)
		}
	}
	check()
	if a := allocatedBytes(t, o.File); a > 1<<20 {
		t.Errorf("qcow2 overlay allocates %d bytes: not O(1)", a)
	}
	if p, err := o.Activate(ctx); err != nil || p != o.File {
		t.Fatalf("Activate = %q, %v", p, err)
	}
	// Write through qemu-io if present, so Reset has something to discard.
	if _, err := exec.LookPath("qemu-io"); err == nil {
		runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", o.File)
		if err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", o.File, base).Run(); exitCodeOf(err) != 1 {
			t.Fatalf("after a write qemu-img compare = %v, want exit status 1 (differ)", err)
		}
		if !bytes.Equal(readFile(t, base), baseBefore) {
			t.Fatal("writing the overlay changed the base")
		}
	}
	if err := o.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	check()
	out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", o.File, base).CombinedOutput()
	if err != nil {
		t.Errorf("after Reset the overlay differs from its base: %v %s", err, out)
	}
	if err := o.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if left := dirEntries(t, dir); len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
}

func TestQcow2FailureLeavesNothing(t *testing.T) {
	base := testBase(t)
	dir := t.TempDir()
	old := runCommand
	t.Cleanup(func() { runCommand = old })
	runCommand = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		// Half-made output, then failure.
		writeAt(t, args[len(args)-1], 0, []byte("partial"))
		return nil, fail(name, "injected failure")
	}
	_, err := CreateOverlay(context.Background(), StrategyQcow2, base, dir, "vm1")
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("err = %v", err)
	}
	if left := dirEntries(t, dir); len(left) != 0 {
		t.Errorf("failed create left: %v", left)
	}
}

func TestCreateOverlayRefusals(t *testing.T) {
	ctx := context.Background()
	base := testBase(t)
	dir := t.TempDir()
	tests := []struct {
		name     string
		s        Strategy
		base, id string
		kind     api.ErrorKind
	}{
		{"bad strategy", "zfs", base, "vm1", api.KindInvalidInput},
		{"bad vm id", StrategyCopy, base, "../vm1", api.KindInvalidInput},
		{"missing base", StrategyCopy, filepath.Join(dir, "nope.ext4"), "vm1", api.KindNotFound},
		{"base is a dir", StrategyCopy, dir, "vm1", api.KindInvalidInput},
	}
	for _, tt := range tests {
		if _, err := CreateOverlay(ctx, tt.s, tt.base, dir, tt.id); !api.IsKind(err, tt.kind) {
			t.Errorf("%s: err = %v, want %s", tt.name, err, tt.kind)
		}
	}
	if _, err := CreateOverlayWith(ctx, StrategyDMSnapshot, base, dir, "vm1", OverlayOptions{COWSizeBytes: -1}); !api.IsKind(err, api.KindInvalidInput) {
		t.Errorf("negative COW size: err = %v", err)
	}
	if left := dirEntries(t, dir); len(left) != 0 {
		t.Errorf("refused creates left: %v", left)
	}
}

func TestOverlayJSON(t *testing.T) {
	in := Overlay{Strategy: StrategyDMSnapshot, Base: "/b", File: "/f", Format: FormatRaw, DMName: "banger-x"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"strategy":"dm-snapshot","base":"/b","file":"/f","format":"raw","dm_name":"banger-x"}`
	if string(b) != want {
		t.Errorf("json %s, want %s", b, want)
	}
	var out Overlay
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip = %+v, %v", out, err)
	}
}

// TestDMSnapshotReal drives a real device-mapper snapshot. It needs root,
// device-mapper and loop devices, and changes host state (it cleans up).
func TestDMSnapshotReal(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "root (device-mapper and loop devices)")
	why := deviceMapperMissing()
	testenv.Require(t, why == "", why)
	ctx := context.Background()
	base := testBase(t)
	baseBefore := readFile(t, base)
	o, err := CreateOverlay(ctx, StrategyDMSnapshot, base, t.TempDir(), "disktest-"+filepath.Base(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Remove(context.Background()) })
	dev, err := o.Activate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readDev := func(off int64, n int) []byte {
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(readDev(0, 8192), baseBefore[:8192]) {
		t.Fatal("snapshot does not show the base content")
	}
	msg := pattern(4096, 9)
	f, err := os.OpenFile(dev, os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(msg, 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Survives deactivate/activate (as across a host reboot): persistent COW.
	if err := o.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	if dev, err = o.Activate(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readDev(4096, 4096), msg) {
		t.Error("write did not survive re-activation")
	}
	if !bytes.Equal(readFile(t, base), baseBefore) {
		t.Error("base changed")
	}
	if err := o.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if dev, err = o.Activate(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readDev(4096, 4096), baseBefore[4096:8192]) {
		t.Error("Reset did not discard the write")
	}
	if err := o.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if fileExists(dmDevicePath(o.DMName)) {
		t.Error("device node left after Remove")
	}
}
