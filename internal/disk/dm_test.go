package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestLosetupArgs(t *testing.T) {
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"attach ro", losetupAttachArgs("/img/base.ext4", true), []string{"--find", "--show", "--read-only", "/img/base.ext4"}},
		{"attach rw", losetupAttachArgs("/vm/overlay.cow", false), []string{"--find", "--show", "/vm/overlay.cow"}},
		{"detach", losetupDetachArgs("/dev/loop3"), []string{"--detach", "/dev/loop3"}},
		{"associated", losetupAssociatedArgs("/vm/overlay.cow"), []string{"--list", "--noheadings", "--output", "NAME", "--associated", "/vm/overlay.cow"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestDMSnapshotTable(t *testing.T) {
	tests := []struct {
		size          int64
		base, cow     string
		want, wantErr string
	}{
		{10 << 30, "/dev/loop0", "/dev/loop1", "0 20971520 snapshot /dev/loop0 /dev/loop1 P 8", ""},
		{512, "/dev/loop7", "/dev/loop9", "0 1 snapshot /dev/loop7 /dev/loop9 P 8", ""},
		{1000, "/dev/loop0", "/dev/loop1", "", "not a positive multiple of 512"},
		{0, "/dev/loop0", "/dev/loop1", "", "not a positive multiple of 512"},
		{-512, "/dev/loop0", "/dev/loop1", "", "not a positive multiple of 512"},
		{4096, "", "/dev/loop1", "", "needs both"},
		{4096, "/dev/loop0", "", "", "needs both"},
	}
	for _, tt := range tests {
		got, err := dmSnapshotTable(tt.size, tt.base, tt.cow)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("dmSnapshotTable(%d,%q,%q) = %q, %v; want error %q", tt.size, tt.base, tt.cow, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("dmSnapshotTable(%d) = %q, %v; want %q", tt.size, got, err, tt.want)
		}
	}
}

func TestDMSetupArgs(t *testing.T) {
	table := "0 8 snapshot /dev/loop0 /dev/loop1 P 8"
	tests := []struct {
		name      string
		got, want []string
	}{
		{"create", dmCreateArgs("banger-vm1", table), []string{"create", "banger-vm1", "--table", table}},
		{"remove", dmRemoveArgs("banger-vm1"), []string{"remove", "--retry", "banger-vm1"}},
		{"info", dmInfoArgs("banger-vm1"), []string{"info", "--columns", "--noheadings", "--options", "name", "banger-vm1"}},
		{"deps", dmDepsArgs("banger-vm1"), []string{"deps", "-o", "devname", "banger-vm1"}},
		{"mknodes", dmMknodesArgs("banger-vm1"), []string{"mknodes", "banger-vm1"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if DMName("vm1") != "banger-vm1" || dmDevicePath("banger-vm1") != "/dev/mapper/banger-vm1" {
		t.Errorf("DMName/dmDevicePath = %q %q", DMName("vm1"), dmDevicePath("banger-vm1"))
	}
}

func TestParseDMDeps(t *testing.T) {
	tests := []struct {
		out  string
		want []string
	}{
		{" 2 dependencies\t: (loop1) (loop0)\n", []string{"/dev/loop1", "/dev/loop0"}},
		{" 1 dependencies  : (loop12)\n", []string{"/dev/loop12"}},
		{" 0 dependencies  :\n", nil},
		{"", nil},
	}
	for _, tt := range tests {
		if got := parseDMDeps(tt.out); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseDMDeps(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}

func TestDMCOWSize(t *testing.T) {
	for _, base := range []int64{1 << 20, 1 << 30, 10 << 30, 3<<30 + 4096} {
		got := dmCOWSize(base)
		// The persistent store needs a header chunk and one index chunk per
		// 256 data chunks of 4 KiB on top of the data itself.
		need := base + (base/4096/256+2)*4096
		if got < need || got%(1<<20) != 0 {
			t.Errorf("dmCOWSize(%d) = %d, want a MiB multiple >= %d", base, got, need)
		}
		if got > base+base/64+(2<<20) {
			t.Errorf("dmCOWSize(%d) = %d is wastefully large", base, got)
		}
	}
}

func TestCheckVMID(t *testing.T) {
	for _, ok := range []string{"vm1", "a", "01J9Z-abc_def.1"} {
		if err := checkVMID(ok); err != nil {
			t.Errorf("checkVMID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "a/b", "-lead", "sp ace", strings.Repeat("x", 101), "a\nb"} {
		if err := checkVMID(bad); err == nil {
			t.Errorf("checkVMID(%q) accepted", bad)
		}
	}
}

// fakeDMHost plays losetup and dmsetup with in-memory state, so the
// activation logic and its cleanup run without device-mapper.
type fakeDMHost struct {
	mu       sync.Mutex
	loops    map[string]string // device -> backing file
	readOnly map[string]bool
	targets  map[string]string // dm name -> table
	next     int
	failOn   string // a command prefix that fails once seen
	calls    []string
}

func newFakeDMHost(t *testing.T) *fakeDMHost {
	f := &fakeDMHost{loops: map[string]string{}, readOnly: map[string]bool{}, targets: map[string]string{}}
	oldRun, oldProbe := runCommand, deviceMapperProbe
	runCommand = f.run
	deviceMapperProbe = func() string { return "" }
	t.Cleanup(func() { runCommand, deviceMapperProbe = oldRun, oldProbe })
	return f
}

func fail(call, stderr string) error {
	return &commandError{Cmd: call, ExitCode: 1, Stderr: stderr, Err: errors.New("exit status 1")}
}

func (f *fakeDMHost) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := name + " " + strings.Join(args, " ")
	f.calls = append(f.calls, call)
	if f.failOn != "" && strings.HasPrefix(call, f.failOn) {
		return nil, fail(call, "injected failure")
	}
	last := args[len(args)-1]
	switch name + " " + args[0] {
	case "losetup --find":
		dev := fmt.Sprintf("/dev/loop%d", f.next)
		f.next++
		f.loops[dev] = last
		f.readOnly[dev] = slices.Contains(args, "--read-only")
		return []byte(dev + "\n"), nil
	case "losetup --detach":
		if _, ok := f.loops[last]; !ok {
			return nil, fail(call, "losetup: "+last+": detach failed: No such device or address")
		}
		delete(f.loops, last)
		return nil, nil
	case "losetup --list":
		var out strings.Builder
		for _, dev := range f.sortedLoops() {
			if f.loops[dev] == last {
				out.WriteString(dev + "\n")
			}
		}
		return []byte(out.String()), nil
	case "dmsetup info":
		if _, ok := f.targets[last]; !ok {
			return nil, fail(call, "Device does not exist.\nCommand failed.")
		}
		return []byte(last + "\n"), nil
	case "dmsetup create":
		if _, ok := f.targets[args[1]]; ok {
			return nil, fail(call, "device-mapper: create ioctl failed: Device or resource busy")
		}
		f.targets[args[1]] = args[3]
		return nil, nil
	case "dmsetup mknodes":
		return nil, nil
	case "dmsetup deps":
		table, ok := f.targets[last]
		if !ok {
			return nil, fail(call, "Device does not exist.")
		}
		fields := strings.Fields(table)
		return []byte(fmt.Sprintf(" 2 dependencies\t: (%s) (%s)\n",
			filepath.Base(fields[4]), filepath.Base(fields[3]))), nil
	case "dmsetup remove":
		if _, ok := f.targets[last]; !ok {
			return nil, fail(call, "Device does not exist.")
		}
		delete(f.targets, last)
		return nil, nil
	}
	return nil, fail(call, "fake host does not know this command")
}

func (f *fakeDMHost) sortedLoops() []string {
	devs := make([]string, 0, len(f.loops))
	for d := range f.loops {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	return devs
}

func (f *fakeDMHost) state() (loops map[string]string, targets map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps(f.loops), maps(f.targets)
}

func maps(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func newDMOverlay(t *testing.T, base, vmID string) Overlay {
	t.Helper()
	o, err := CreateOverlay(context.Background(), StrategyDMSnapshot, base, t.TempDir(), vmID)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDMOverlayCreate(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 64<<20, map[int64][]byte{0: pattern(4096, 1)})
	o := newDMOverlay(t, base, "vm1")
	if o.Strategy != StrategyDMSnapshot || o.Format != FormatRaw || o.DMName != "banger-vm1" || filepath.Base(o.File) != "overlay.cow" {
		t.Fatalf("overlay = %+v", o)
	}
	st, err := os.Stat(o.File)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != dmCOWSize(64<<20) {
		t.Errorf("COW size %d, want %d", st.Size(), dmCOWSize(64<<20))
	}
	if a := allocatedBytes(t, o.File); a != 0 {
		t.Errorf("fresh COW file allocates %d bytes, want a fully sparse (zeroed) file", a)
	}
	// A chosen COW size is honoured and kept by Reset.
	o2, err := CreateOverlayWith(context.Background(), StrategyDMSnapshot, base, t.TempDir(), "vm2", OverlayOptions{COWSizeBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	newFakeDMHost(t)
	if err := o2.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(o2.File); st.Size() != 8<<20 {
		t.Errorf("COW size after reset %d, want %d", st.Size(), 8<<20)
	}
}

func TestDMActivateDeactivate(t *testing.T) {
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 16<<20, nil)
	host := newFakeDMHost(t)
	o1 := newDMOverlay(t, base, "vm1")
	o2 := newDMOverlay(t, base, "vm2")

	path, err := o1.Activate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if path != "/dev/mapper/banger-vm1" {
		t.Errorf("Activate path %q", path)
	}
	loops, targets := host.state()
	wantTable := "0 32768 snapshot /dev/loop0 /dev/loop1 P 8"
	if targets["banger-vm1"] != wantTable {
		t.Errorf("table %q, want %q", targets["banger-vm1"], wantTable)
	}
	if loops["/dev/loop0"] != o1.Base || !host.readOnly["/dev/loop0"] {
		t.Errorf("base loop: %q read-only=%v", loops["/dev/loop0"], host.readOnly["/dev/loop0"])
	}
	if loops["/dev/loop1"] != o1.File || host.readOnly["/dev/loop1"] {
		t.Errorf("COW loop: %q read-only=%v", loops["/dev/loop1"], host.readOnly["/dev/loop1"])
	}

	// Idempotent: a second Activate reuses the target.
	if p, err := o1.Activate(ctx); err != nil || p != path {
		t.Fatalf("second Activate = %q, %v", p, err)
	}
	if loops, _ := host.state(); len(loops) != 2 {
		t.Errorf("second Activate attached more loops: %v", loops)
	}

	// A second VM over the same base gets its own base loop, which vm1's
	// teardown must leave alone.
	if _, err := o2.Activate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o1.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	loops, targets = host.state()
	if _, ok := targets["banger-vm1"]; ok || len(targets) != 1 {
		t.Errorf("targets after deactivating vm1: %v", targets)
	}
	if len(loops) != 2 || loops["/dev/loop2"] != o2.Base || loops["/dev/loop3"] != o2.File {
		t.Errorf("loops after deactivating vm1: %v", loops)
	}
	// Idempotent.
	if err := o1.Deactivate(ctx); err != nil {
		t.Fatalf("second Deactivate: %v", err)
	}
	if err := o2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o2.Remove(ctx); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	loops, targets = host.state()
	if len(loops) != 0 || len(targets) != 0 {
		t.Errorf("left behind: loops %v targets %v", loops, targets)
	}
	if fileExists(o2.File) {
		t.Errorf("Remove kept %s", o2.File)
	}
}

func TestDMActivateFailureCleansUp(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 16<<20, nil)
	for _, failOn := range []string{
		"losetup --find --show --read-only",
		"losetup --find --show " + "/", // the COW attach (rw has no flag)
		"dmsetup create",
		"dmsetup mknodes",
	} {
		t.Run(failOn, func(t *testing.T) {
			host := newFakeDMHost(t)
			o := newDMOverlay(t, base, "vm1")
			host.failOn = failOn
			if _, err := o.Activate(context.Background()); err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("Activate error = %v, want the injected failure", err)
			}
			loops, targets := host.state()
			if len(loops) != 0 || len(targets) != 0 {
				t.Errorf("failed Activate left loops %v targets %v", loops, targets)
			}
		})
	}
}

func TestDMRecoversLeakedCOWLoop(t *testing.T) {
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 16<<20, nil)
	host := newFakeDMHost(t)
	o := newDMOverlay(t, base, "vm1")
	// As if the daemon crashed after attaching the COW.
	if _, err := runCommand(ctx, "losetup", losetupAttachArgs(o.File, false)...); err != nil {
		t.Fatal(err)
	}
	if err := o.Deactivate(ctx); err != nil {
		t.Fatal(err)
	}
	if loops, _ := host.state(); len(loops) != 0 {
		t.Errorf("Deactivate left the leaked COW loop: %v", loops)
	}
	runCommand(ctx, "losetup", losetupAttachArgs(o.File, false)...)
	if _, err := o.Activate(ctx); err != nil {
		t.Fatal(err)
	}
	loops, _ := host.state()
	cowLoops := 0
	for _, f := range loops {
		if f == o.File {
			cowLoops++
		}
	}
	if cowLoops != 1 {
		t.Errorf("COW attached %d times after Activate, want 1: %v", cowLoops, loops)
	}
}

func TestDMActivateMissingCOW(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 16<<20, nil)
	host := newFakeDMHost(t)
	o := newDMOverlay(t, base, "vm1")
	os.Remove(o.File)
	_, err := o.Activate(context.Background())
	if err == nil || !strings.Contains(err.Error(), "COW file") {
		t.Fatalf("Activate without COW = %v", err)
	}
	if loops, _ := host.state(); len(loops) != 0 {
		t.Errorf("loops attached: %v", loops)
	}
}

func TestDMWithoutDeviceMapper(t *testing.T) {
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "base.ext4")
	sparseFile(t, base, 16<<20, nil)
	host := newFakeDMHost(t)
	deviceMapperProbe = func() string { return "no device-mapper in this test" }
	o := newDMOverlay(t, base, "vm1")
	if _, err := o.Activate(ctx); !api.IsKind(err, api.KindUnavailable) || !strings.Contains(err.Error(), "no device-mapper in this test") {
		t.Errorf("Activate = %v, want unavailable with the reason", err)
	}
	// The VM must stay deletable.
	if err := o.Remove(ctx); err != nil {
		t.Fatalf("Remove = %v", err)
	}
	if fileExists(o.File) {
		t.Error("Remove kept the COW file")
	}
	if len(host.calls) != 0 {
		t.Errorf("ran host commands without device-mapper: %v", host.calls)
	}
}
