package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker/fakefc"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

// TestMain lets the test binary act as the fake Firecracker: a symlink to
// it named "firecracker" runs fakefc instead of the tests, so the driver
// starts a real process speaking the API without building anything.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "firecracker" {
		os.Exit(fakefc.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// fakeBinary returns the path of a "firecracker" that is the fake.
func fakeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "firecracker")
	if err := os.Symlink(self, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// noKVM says "KVM unusable" so tests prove the fake's marker is honoured.
func noKVM() vmm.KVMProbe { return vmm.KVMProbe{Reason: "test: no KVM"} }

func newFakeDriver(t *testing.T, bin string) *Driver {
	return New(Options{Binary: bin, ProbeKVM: noKVM, SocketTimeout: 5 * time.Second})
}

var seq atomic.Int32

// testSpec is a bootable spec for the fake: every file exists.
func testSpec(t *testing.T) vmm.MachineSpec {
	t.Helper()
	dir := t.TempDir()
	touch := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return vmm.MachineSpec{
		ID: fmt.Sprintf("c0ffee%02d", seq.Add(1)), Name: "fc", CPUs: 2, MemoryMiB: 256,
		KernelRaw: touch("vmlinux"), Initrd: touch("initrd"),
		KernelArgs: "console=ttyS0 root=/dev/vda rw panic=-1 quiet",
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: touch("rootfs.img"), Format: "raw"},
			{ID: "config", Path: touch("config.img"), Format: "raw", ReadOnly: true},
			{ID: "work", Path: touch("work.img"), Format: "raw"},
		},
		NICs:       []vmm.NIC{{TAP: "bgtap7", MAC: "06:00:AC:1E:00:07"}},
		RunDir:     filepath.Join(dir, "run"),
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestContractWithFake(t *testing.T) {
	bin := fakeBinary(t)
	vmmtest.Run(t, vmmtest.Setup{
		NewDriver: func() vmm.Driver { return newFakeDriver(t, bin) },
		Spec:      testSpec,
		Timeout:   20 * time.Second,
	})
}

// recorded reads the requests the fake recorded for spec, with the test's
// temporary directories replaced by $DIR.
func recorded(t *testing.T, recDir string, spec vmm.MachineSpec) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(recDir, instanceID(spec.ID)+".jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := filepath.Dir(spec.RunDir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r fakefc.Request
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status)
		if len(r.Body) > 0 {
			line += " " + string(r.Body)
		}
		out = append(out, strings.ReplaceAll(line, dir, "$DIR"))
	}
	return out
}

// checkGolden compares lines with testdata/golden/<name>; BANGER_UPDATE_GOLDEN=1 rewrites it.
func checkGolden(t *testing.T, name string, lines []string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	got := strings.Join(lines, "\n") + "\n"
	if os.Getenv("BANGER_UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with BANGER_UPDATE_GOLDEN=1 to create it)", err)
	}
	if got != string(want) {
		t.Errorf("request sequence %s differs from the golden file\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// TestGoldenRequestSequences pins the exact API requests of create
// (Start), pause, resume and stop (Shutdown).
func TestGoldenRequestSequences(t *testing.T) {
	recDir := t.TempDir()
	t.Setenv("FAKEFC_RECORD_DIR", recDir)
	d := newFakeDriver(t, fakeBinary(t))
	spec := testSpec(t)
	ctx := ctxT(t, 30*time.Second)
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	var seen int
	step := func(name string) {
		all := recorded(t, recDir, spec)
		checkGolden(t, name, all[seen:])
		seen = len(all)
	}
	step("create.txt")
	if err := d.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	step("pause.txt")
	if err := d.Resume(ctx, h); err != nil {
		t.Fatal(err)
	}
	step("resume.txt")
	if err := d.Shutdown(ctx, h); err != nil {
		t.Fatal(err)
	}
	step("stop.txt")
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("firecracker alive after Shutdown")
	}
	assertNoRunFiles(t, spec.RunDir)
}

func assertNoRunFiles(t *testing.T, runDir string) {
	t.Helper()
	for _, name := range []string{apiSocketName, pidFileName, stateFileName} {
		if _, err := os.Lstat(filepath.Join(runDir, name)); err == nil {
			t.Errorf("%s left behind in the run directory", name)
		}
	}
}

func TestStartedVMConfigMatchesSpec(t *testing.T) {
	d := newFakeDriver(t, fakeBinary(t))
	spec := testSpec(t)
	ctx := ctxT(t, 30*time.Second)
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	cfg, err := d.Client(h).VMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MachineConfig == nil || cfg.MachineConfig.VCPUCount != 2 || cfg.MachineConfig.MemSizeMiB != 256 {
		t.Errorf("machine-config = %+v", cfg.MachineConfig)
	}
	if cfg.BootSource == nil || cfg.BootSource.KernelImagePath != spec.KernelRaw || cfg.BootSource.InitrdPath != spec.Initrd {
		t.Errorf("boot-source = %+v", cfg.BootSource)
	}
	if len(cfg.Drives) != 3 || !cfg.Drives[0].IsRootDevice || !cfg.Drives[1].IsReadOnly || cfg.Drives[2].DriveID != "work" {
		t.Errorf("drives = %+v", cfg.Drives)
	}
	if len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0].HostDevName != "bgtap7" || cfg.NetworkInterfaces[0].GuestMAC != "06:00:ac:1e:00:07" {
		t.Errorf("network-interfaces = %+v", cfg.NetworkInterfaces)
	}
	if v, err := d.Client(h).Version(ctx); err != nil || v != fakefc.DefaultVersion {
		t.Errorf("GET /version = %q, %v", v, err)
	}
	if err := d.FlushMetrics(ctx, h); err != nil {
		t.Errorf("FlushMetrics: %v", err)
	}
	// Pre-boot resources are refused after InstanceStart, verbatim.
	err = d.Client(h).PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMiB: 128})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.FaultMessage, "not supported after starting the microVM") {
		t.Errorf("PUT /machine-config after boot = %v", err)
	}
}

// processesOf lists live processes whose command line mentions marker.
func processesOf(t *testing.T, marker string) []string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-af", marker).Output()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, "pgrep") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestStartFailures(t *testing.T) {
	bin := fakeBinary(t)
	cases := []struct {
		name    string
		env     map[string]string
		binary  string
		timeout time.Duration
		want    string
	}{
		{name: "binary missing", binary: "/nonexistent/firecracker", want: "configured firecracker binary \"/nonexistent/firecracker\" not found"},
		{name: "wrong version", env: map[string]string{"FAKEFC_VERSION": "1.9.2"}, want: "is Firecracker 1.9.2; banger supports Firecracker 1.10 and later"},
		{name: "socket never appears", env: map[string]string{"FAKEFC_NO_SOCKET": "1"}, timeout: 500 * time.Millisecond, want: "did not answer within 500ms"},
		{name: "InstanceStart rejected", env: map[string]string{"FAKEFC_FAIL_START": "Start microvm error: Cannot open /dev/kvm"}, want: "firecracker refused to start the instance: firecracker API PUT /actions: 400 Bad Request: Start microvm error: Cannot open /dev/kvm"},
		{name: "dies during boot", env: map[string]string{"FAKEFC_DIE_ON_START": "1"}, want: "dying on InstanceStart as asked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			b := bin
			if tc.binary != "" {
				b = tc.binary
			}
			d := New(Options{Binary: b, ProbeKVM: noKVM, SocketTimeout: tc.timeout})
			spec := testSpec(t)
			h, err := d.Start(ctxT(t, 30*time.Second), spec)
			if err == nil {
				_ = d.Kill(context.Background(), h)
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if p := processesOf(t, instanceID(spec.ID)); len(p) > 0 {
				t.Fatalf("failed Start left processes: %v", p)
			}
			assertNoRunFiles(t, spec.RunDir)
		})
	}
}

func TestAvailable(t *testing.T) {
	bin := fakeBinary(t)
	if err := newFakeDriver(t, bin).Available(context.Background()); err != nil {
		t.Fatalf("fake firecracker (no KVM needed): %v", err)
	}
	// A real Firecracker (no marker) needs usable KVM.
	script := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'Firecracker v1.11.0'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := New(Options{Binary: script, ProbeKVM: noKVM}).Available(context.Background())
	if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "needs hardware KVM") {
		t.Fatalf("Available without KVM = %v", err)
	}
	usable := func() vmm.KVMProbe { return vmm.KVMProbe{DevicePresent: true, Usable: true} }
	if err := New(Options{Binary: script, ProbeKVM: usable}).Available(context.Background()); err != nil {
		t.Fatalf("Available with KVM: %v", err)
	}
	old := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'Firecracker v1.7.0'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := New(Options{Binary: old, ProbeKVM: usable}).Available(context.Background()); !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "1.7.0") {
		t.Fatalf("Available with 1.7.0 = %v", err)
	}
}

func TestResolveBinaryOrder(t *testing.T) {
	rt := t.TempDir()
	bundled := filepath.Join(rt, "firecracker")
	if err := os.WriteFile(bundled, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pathDir := t.TempDir()
	onPath := filepath.Join(pathDir, "firecracker")
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", pathDir)
	if p, err := resolveBinary("", "firecracker", []string{rt}); err != nil || p != bundled {
		t.Errorf("with a runtime dir: %q, %v; want %q", p, err, bundled)
	}
	if p, err := resolveBinary("", "firecracker", []string{t.TempDir()}); err != nil || p != onPath {
		t.Errorf("falling back to PATH: %q, %v; want %q", p, err, onPath)
	}
	if p, err := resolveBinary(onPath, "firecracker", []string{rt}); err != nil || p != onPath {
		t.Errorf("configured path wins: %q, %v", p, err)
	}
	if _, err := resolveBinary("/nope/firecracker", "firecracker", []string{rt}); !errors.Is(err, vmm.ErrUnavailable) {
		t.Errorf("configured but missing must not fall back: %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		program, out string
		want         Version
		ok           bool
	}{
		{"Firecracker", "Firecracker v1.10.1\n\nSupported snapshot data format versions: v5.0.0\n", Version{1, 10, 1}, true},
		{"Firecracker", "Firecracker v1.13.0-dev\n", Version{1, 13, 0}, true},
		{"Jailer", "Jailer v1.10.1\n", Version{1, 10, 1}, true},
		{"Firecracker", "Jailer v1.10.1\n", Version{}, false},
		{"Firecracker", "firecracker 1.10\n", Version{}, false},
	} {
		v, err := ParseVersion(tc.program, tc.out)
		if (err == nil) != tc.ok || v != tc.want {
			t.Errorf("ParseVersion(%q, %q) = %v, %v", tc.program, tc.out, v, err)
		}
	}
	if !(Version{1, 9, 9}).Less(MinVersion) || (Version{1, 10, 0}).Less(MinVersion) {
		t.Error("MinVersion comparison is wrong")
	}
}

func TestBootArgs(t *testing.T) {
	got := bootArgs("console=ttyS1 root=/dev/vda rw panic=-1")
	want := "console=ttyS1 root=/dev/vda rw panic=-1 reboot=k pci=off i8042.noaux i8042.nomux i8042.nopnp"
	if got != want {
		t.Errorf("bootArgs = %q, want %q", got, want)
	}
	if got := bootArgs(""); !strings.HasPrefix(got, "console=ttyS0 reboot=k") {
		t.Errorf("bootArgs(\"\") = %q", got)
	}
}

func TestValidateSpecRefusesQcow2(t *testing.T) {
	spec := testSpec(t)
	spec.Drives[0].Format = "qcow2"
	if err := validateSpec(spec); err == nil || !strings.Contains(err.Error(), "only reads raw images") {
		t.Fatalf("qcow2 drive: %v", err)
	}
	spec = testSpec(t)
	spec.KernelRaw = ""
	if err := validateSpec(spec); err == nil || !strings.Contains(err.Error(), "vmlinux") {
		t.Fatalf("no vmlinux: %v", err)
	}
}

func TestMatchCmdline(t *testing.T) {
	id := instanceID("abc")
	ok := [][]string{
		{"/usr/bin/firecracker", "--api-sock", "/x", "--id", id},
		{"/firecracker", "--id=" + id, "--start-time-us=1", "--api-sock", "/run/firecracker.socket"},
	}
	for _, argv := range ok {
		if err := matchCmdline(argv, id); err != nil {
			t.Errorf("%v: %v", argv, err)
		}
	}
	bad := [][]string{
		{"/usr/bin/qemu-system-x86_64", "--id", id},
		{"/usr/bin/firecracker", "--id", instanceID("other")},
		{"/usr/bin/firecracker", "--api-sock", "/x"},
		{},
	}
	for _, argv := range bad {
		if err := matchCmdline(argv, id); err == nil {
			t.Errorf("%v accepted", argv)
		}
	}
}

// TestAdoptByPidFile: a handle without a pid (lost by a crash) is
// recovered from the pid file and verified by command line.
func TestAdoptByPidFile(t *testing.T) {
	bin := fakeBinary(t)
	d := newFakeDriver(t, bin)
	spec := testSpec(t)
	ctx := ctxT(t, 30*time.Second)
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	if err := newFakeDriver(t, bin).Adopt(ctx, spec, vmm.Handle{RunDir: spec.RunDir}); err != nil {
		t.Fatalf("Adopt by pid file: %v", err)
	}
	// Start refuses to clobber a VM that runs.
	if _, err := d.Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Fatalf("second Start = %v", err)
	}
}

// TestRealFirecrackerContract runs the shared contract and the golden
// scenarios' lifecycle against a real Firecracker when one is installed
// (it cannot be here: no package, and KVM is PVM).
func TestRealFirecrackerContract(t *testing.T) {
	if os.Getenv("BANGER_INTEGRATION") != "1" {
		t.Skip("integration test: set BANGER_INTEGRATION=1 (needs firecracker, usable KVM and a vmlinux in BANGER_TEST_VMLINUX)")
	}
	path, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("firecracker is not installed on this host (no Debian package or Go module provides it); the fake-backed tests cover the backend here")
	}
	if p := vmm.ProbeKVM(); !p.Usable {
		t.Skipf("KVM cannot run ordinary guests here (%s), so firecracker cannot boot", p.Reason)
	}
	kernel := os.Getenv("BANGER_TEST_VMLINUX")
	if kernel == "" {
		t.Skip("set BANGER_TEST_VMLINUX to an uncompressed guest kernel")
	}
	vmmtest.Run(t, vmmtest.Setup{
		NewDriver: func() vmm.Driver { return New(Options{Binary: path}) },
		Spec: func(t *testing.T) vmm.MachineSpec {
			s := testSpec(t)
			s.KernelRaw, s.Initrd, s.NICs = kernel, "", nil
			s.Drives = s.Drives[1:2] // a read-only scratch drive; the kernel panics without root and idles
			return s
		},
		BootWait: func(t *testing.T, _ vmm.MachineSpec, _ vmm.Handle) { time.Sleep(3 * time.Second) },
		Timeout:  60 * time.Second,
	})
}
