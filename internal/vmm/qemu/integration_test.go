package qemu

// Integration tests boot a real kernel under QEMU. They run only with
// BANGER_INTEGRATION=1 (they take tens of seconds and need
// qemu-system-x86_64 and a Debian cloud kernel).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

// helperStartEnv makes the test binary act as a short-lived "daemon" that
// starts a VM, prints its Handle and exits, so the VM is not a child of
// the test process (as after a real daemon restart).
const helperStartEnv = "BANGER_QEMU_TEST_HELPER_START"

func TestMain(m *testing.M) {
	if specJSON := os.Getenv(helperStartEnv); specJSON != "" {
		os.Exit(helperStart(specJSON))
	}
	os.Exit(m.Run())
}

func helperStart(specJSON string) int {
	var spec vmm.MachineSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := New(Options{}).Start(ctx, spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(h)
	return 0
}

func requireIntegration(t *testing.T) {
	t.Helper()
	if os.Getenv("BANGER_INTEGRATION") != "1" {
		t.Skip("integration test: set BANGER_INTEGRATION=1 to boot real kernels under QEMU")
	}
	_, err := exec.LookPath(DefaultBinary)
	testenv.Require(t, err == nil, DefaultBinary+" on PATH (apt-get install qemu-system-x86)")
}

// kernelCacheDir receives the Debian cloud kernel when the test fetches it.
const kernelCacheDir = "/var/cache/banger-test/qemu-kernel"

// testKernel finds a bzImage: $BANGER_TEST_KERNEL, the kernel of a built
// test image, a cached download, or a fresh `apt-get download` of
// Debian's cloud kernel.
func testKernel(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BANGER_TEST_KERNEL"); p != "" {
		return p
	}
	if img, ok := builtImage(); ok {
		return img.kernel
	}
	if m, _ := filepath.Glob(kernelCacheDir + "/boot/vmlinuz-*"); len(m) > 0 {
		return m[0]
	}
	k, err := fetchCloudKernel()
	testenv.Require(t, err == nil, fmt.Sprintf("a guest kernel (set BANGER_TEST_KERNEL, or let apt-get download linux-image-cloud-amd64): %v", err))
	return k
}

func fetchCloudKernel() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-cloud-amd64: %w", err)
	}
	var pkg string
	for _, line := range strings.Split(string(out), "\n") {
		if _, dep, ok := strings.Cut(line, "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			pkg = strings.TrimSpace(dep)
			break
		}
	}
	if pkg == "" {
		return "", errors.New("linux-image-cloud-amd64 names no versioned kernel package")
	}
	tmp, err := os.MkdirTemp("", "banger-kernel-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.Command("apt-get", "download", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s produced %d .deb files", pkg, len(debs))
	}
	staging := kernelCacheDir + ".tmp"
	os.RemoveAll(staging)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], staging).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x: %v: %s", err, out)
	}
	// Only the bzImage is needed; the modules are most of the package.
	os.RemoveAll(filepath.Join(staging, "lib"))
	os.RemoveAll(filepath.Join(staging, "usr"))
	if err := os.Rename(staging, kernelCacheDir); err != nil {
		return "", err
	}
	m, _ := filepath.Glob(kernelCacheDir + "/boot/vmlinuz-*")
	if len(m) == 0 {
		return "", fmt.Errorf("%s has no vmlinuz", pkg)
	}
	return m[0], nil
}

// diskless boots the kernel without any disk: it panics when it finds no
// root filesystem and, without panic=, then idles until killed.
func disklessSpec(t *testing.T, id, extraArgs string) vmm.MachineSpec {
	dir := t.TempDir()
	return vmm.MachineSpec{
		ID:         id,
		Name:       id,
		CPUs:       1,
		MemoryMiB:  256,
		Kernel:     testKernel(t),
		KernelArgs: strings.TrimSpace("console=ttyS0 " + extraArgs),
		RunDir:     filepath.Join(dir, "run"),
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

// vmProcesses lists live processes whose command line carries the VM's tag.
func vmProcesses(vmID string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !vmm.ProcessAlive(pid, 0) {
			continue
		}
		argv, _ := vmm.ProcessCmdline(pid)
		for _, a := range argv {
			if strings.HasPrefix(a, processTag(vmID)+",") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// killLeftovers is a safety net so a failing test leaves no QEMU behind.
func killLeftovers(t *testing.T, vmID string) {
	t.Cleanup(func() {
		for _, pid := range vmProcesses(vmID) {
			t.Errorf("QEMU pid %d of %s still running at the end of the test; killing it", pid, vmID)
			vmm.SignalProcess(pid, 0, 9)
		}
	})
}

func waitForFile(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(want)) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s did not show %q within %s; it holds:\n%s", path, want, timeout, tail(string(b), 2000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestIntegrationLifecycle(t *testing.T) {
	requireIntegration(t)
	spec := disklessSpec(t, "it-life", "")
	killLeftovers(t, spec.ID)
	d := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), h)
	st, _ := vmm.ProcessStartTime(h.PID)
	accel, _ := d.AccelInfo()
	if h.PID <= 0 || h.StartTime != st || h.RunDir != spec.RunDir || h.Accel != accel || h.StartedAt.IsZero() {
		t.Fatalf("handle %+v (start time on /proc: %d, accel %s)", h, st, accel)
	}
	if pidFile, err := os.ReadFile(filepath.Join(spec.RunDir, pidFileName)); err != nil || strings.TrimSpace(string(pidFile)) != strconv.Itoa(h.PID) {
		t.Errorf("pidfile = %q, %v; want %d", pidFile, err, h.PID)
	}
	if s, err := d.Status(ctx, h); err != nil || !s.Running || s.Paused {
		t.Fatalf("Status after Start = %+v, %v", s, err)
	}
	if fi, err := os.Stat(spec.ConsoleLog); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("console log: %v, %v; want mode 0600", fi, err)
	}
	if _, err := New(Options{}).Start(ctx, spec); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("second Start of a running VM = %v, want conflict", err)
	}
	// The guest kernel writes to the console log.
	waitForFile(t, spec.ConsoleLog, "Linux version", 60*time.Second)
	if accel == AccelTCG {
		cmdline, _ := vmm.ProcessCmdline(h.PID)
		if !strings.Contains(strings.Join(cmdline, " "), "tsc_early_khz=") {
			t.Errorf("TCG guest started without tsc_early_khz: %q", cmdline)
		}
	}

	if err := d.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Status(ctx, h); err != nil || s.Running || !s.Paused {
		t.Fatalf("Status after Pause = %+v, %v", s, err)
	}
	if err := d.Resume(ctx, h); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Status(ctx, h); err != nil || !s.Running || s.Paused {
		t.Fatalf("Status after Resume = %+v, %v", s, err)
	}
	stats, err := d.Stats(h)
	if err != nil || stats.CPUSeconds <= 0 || stats.RSSBytes < 10<<20 {
		t.Fatalf("Stats = %+v, %v", stats, err)
	}

	// A second Driver (the daemon after a restart) adopts the process.
	d2 := New(Options{})
	if err := d2.Adopt(ctx, spec, h); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	other := spec
	other.ID = "it-other"
	if err := d2.Adopt(ctx, other, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt for another VM id: %v, want ErrNotRunning", err)
	}
	stale := h
	stale.StartTime++
	if err := d2.Adopt(ctx, spec, stale); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt with a wrong start time: %v, want ErrNotRunning", err)
	}

	// Wait must block while the VM runs.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if err := d.Wait(short, h); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running VM = %v, want deadline exceeded", err)
	}

	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("process alive after Kill")
	}
	if _, err := os.Stat(filepath.Join(spec.RunDir, qmpSocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("QMP socket left after Kill: %v", err)
	}
	if _, err := d.Status(ctx, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Status after Kill = %v, want ErrNotRunning", err)
	}
	if err := d.Pause(ctx, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Pause after Kill = %v, want ErrNotRunning", err)
	}
	if err := d2.Adopt(ctx, spec, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Adopt after Kill = %v, want ErrNotRunning", err)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Errorf("second Kill = %v, want nil", err)
	}
	if err := d.Wait(ctx, h); err != nil {
		t.Errorf("Wait after Kill = %v", err)
	}
}

func TestIntegrationEarlyExitReportsQEMUError(t *testing.T) {
	requireIntegration(t)
	spec := disklessSpec(t, "it-early", "")
	missing := filepath.Join(t.TempDir(), "missing.img")
	spec.Drives = []vmm.Drive{{ID: "rootfs", Path: missing}}
	killLeftovers(t, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := New(Options{}).Start(ctx, spec)
	if err == nil {
		t.Fatal("Start succeeded with a missing disk image")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "No such file") {
		t.Fatalf("error lacks QEMU's reason: %v", err)
	}
	for _, name := range []string{qmpSocketName, pidFileName} {
		if _, err := os.Stat(filepath.Join(spec.RunDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}
}

func TestIntegrationStartCancelledLeavesNothing(t *testing.T) {
	requireIntegration(t)
	spec := disklessSpec(t, "it-cancel", "")
	killLeftovers(t, spec.ID)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(Options{}).Start(ctx, spec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context = %v, want context.Canceled", err)
	}
	if pids := vmProcesses(spec.ID); len(pids) > 0 {
		t.Fatalf("cancelled Start left QEMU running: %v", pids)
	}
}

func TestIntegrationGuestExitEndsProcess(t *testing.T) {
	requireIntegration(t)
	// panic=-1 reboots at once on panic, and -no-reboot turns that into exit.
	spec := disklessSpec(t, "it-exit", "panic=-1")
	killLeftovers(t, spec.ID)
	d := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), h)
	if err := d.Wait(ctx, h); err != nil {
		t.Fatalf("guest did not end QEMU: %v", err)
	}
	waitForFile(t, spec.ConsoleLog, "Kernel panic", time.Second)
	if _, err := d.Status(ctx, h); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Status after guest exit = %v, want ErrNotRunning", err)
	}
	if err := d.Shutdown(ctx, h); err != nil {
		t.Fatalf("Shutdown of an exited VM = %v, want nil", err)
	}
}

func TestIntegrationAdoptNonChild(t *testing.T) {
	requireIntegration(t)
	spec := disklessSpec(t, "it-adopt", "")
	killLeftovers(t, spec.ID)
	h := startInHelper(t, spec)
	// The helper exited, so QEMU was re-parented and is not our child.
	if ppid := parentPID(t, h.PID); ppid == os.Getpid() {
		t.Fatalf("QEMU's parent is %d; expected it re-parented", ppid)
	}
	d := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer d.Kill(context.Background(), h)
	if err := d.Adopt(ctx, spec, h); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if err := d.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Status(ctx, h); err != nil || !s.Paused {
		t.Fatalf("Status = %+v, %v", s, err)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("adopted process alive after Kill")
	}
}

func parentPID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// testImage is a complete default image built by internal/image/builder's
// integration test (or by hand) under /var/cache/banger-test/images.
type testImage struct {
	kernel, initrd, rootfs, workSeed, kernelArgs string
}

// builtImage returns the first complete image: one whose manifest.json
// exists (the builder writes it last), skipping in-progress .tmp dirs.
func builtImage() (testImage, bool) {
	manifests, _ := filepath.Glob("/var/cache/banger-test/images/*/manifest.json")
	for _, m := range manifests {
		dir := filepath.Dir(m)
		if strings.HasPrefix(filepath.Base(dir), ".") {
			continue
		}
		data, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var manifest struct {
			KernelArgs string `json:"kernel_args"`
		}
		if json.Unmarshal(data, &manifest) != nil {
			continue
		}
		img := testImage{
			kernel:     filepath.Join(dir, "vmlinuz"),
			initrd:     filepath.Join(dir, "initrd.img"),
			rootfs:     filepath.Join(dir, "rootfs.ext4"),
			workSeed:   filepath.Join(dir, "work-seed.ext4"),
			kernelArgs: manifest.KernelArgs,
		}
		complete := true
		for _, f := range []string{img.kernel, img.initrd, img.rootfs, img.workSeed} {
			if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
				complete = false
			}
		}
		if complete {
			return img, true
		}
	}
	return testImage{}, false
}

// TestIntegrationShutdownSystemdGuest boots the default Debian image (on a
// qcow2 overlay, so the image stays untouched) and powers it off through
// the ACPI power button.
func TestIntegrationShutdownSystemdGuest(t *testing.T) {
	requireIntegration(t)
	spec := imageSpec(t, "it-shutdown")
	killLeftovers(t, spec.ID)
	d := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), h)
	waitForLogin(t, spec)

	start := time.Now()
	shutdownCtx, cancelShutdown := context.WithTimeout(ctx, 90*time.Second)
	defer cancelShutdown()
	if err := d.Shutdown(shutdownCtx, h); err != nil {
		b, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("Shutdown: %v\nconsole:\n%s", err, tail(string(b), 3000))
	}
	// An orderly systemd shutdown takes seconds; the kernel's immediate
	// Ctrl-Alt-Del reboot (init did not claim it) would take none.
	took := time.Since(start)
	t.Logf("guest shut down %s after Shutdown was called", took.Round(100*time.Millisecond))
	if took < time.Second {
		t.Errorf("guest went down in %s: that is not an orderly shutdown", took)
	}
	if vmm.ProcessAlive(h.PID, h.StartTime) {
		t.Fatal("QEMU alive after Shutdown returned")
	}
	// The kernel's last words: "Power down" after the power button (with
	// logind), "Restarting system" after Ctrl-Alt-Del (systemd reboots,
	// which -no-reboot turns into an exit).
	b, _ := os.ReadFile(spec.ConsoleLog)
	if !bytes.Contains(b, []byte("reboot: Power down")) && !bytes.Contains(b, []byte("reboot: Restarting system")) {
		t.Fatalf("console shows no orderly power-off or reboot:\n%s", tail(string(b), 3000))
	}
}

// startInHelper starts spec from a separate short-lived process (see
// helperStartEnv), optionally wrapped by prefix (e.g. ip netns exec NS).
func startInHelper(t *testing.T, spec vmm.MachineSpec, prefix ...string) vmm.Handle {
	t.Helper()
	specJSON, _ := json.Marshal(spec)
	argv := append(append([]string{}, prefix...), os.Args[0], "-test.run=^$")
	helper := exec.Command(argv[0], argv[1:]...)
	helper.Env = append(os.Environ(), helperStartEnv+"="+string(specJSON))
	var stderr bytes.Buffer
	helper.Stderr = &stderr
	out, err := helper.Output()
	if err != nil {
		t.Fatalf("helper daemon failed: %v: %s", err, stderr.String())
	}
	var h vmm.Handle
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return h
}

// TestIntegrationNICInNetns gives the VM a TAP inside a network namespace
// the test creates and removes, so nothing touches the host's network.
func TestIntegrationNICInNetns(t *testing.T) {
	requireIntegration(t)
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "the ip command (apt-get install iproute2)")
	ns := fmt.Sprintf("bgtest-qemu-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "tuntap", "add", "dev", "bgtap0", "mode", "tap")
	ip("-n", ns, "link", "set", "bgtap0", "up")

	spec := disklessSpec(t, "it-nic", "")
	spec.NICs = []vmm.NIC{{TAP: "bgtap0", MAC: "02:00:5e:00:00:01"}}
	killLeftovers(t, spec.ID)
	h := startInHelper(t, spec, "ip", "netns", "exec", ns)
	d := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer d.Kill(context.Background(), h)
	if err := d.Adopt(ctx, spec, h); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	// QEMU attached the TAP: the kernel shows it as in use by a process.
	out, err := exec.Command("ip", "-n", ns, "-d", "link", "show", "bgtap0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LOWER_UP") {
		t.Fatalf("TAP not carrier-up while QEMU holds it: %v: %s", err, out)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "-n", ns, "-d", "link", "show", "bgtap0").CombinedOutput()
	if strings.Contains(string(out), "LOWER_UP") {
		t.Errorf("TAP still carrier-up after Kill: %s", out)
	}
}

// imageSpec boots the built default image on qcow2 overlays of its root
// and work disks, so the image stays untouched.
func imageSpec(t *testing.T, id string) vmm.MachineSpec {
	t.Helper()
	img, ok := builtImage()
	testenv.Require(t, ok, "a built default image under /var/cache/banger-test/images (run internal/image/builder's integration test first)")
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img on PATH (apt-get install qemu-utils)")

	dir := t.TempDir()
	overlay := filepath.Join(dir, "system.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", img.rootfs, "-F", "raw", overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	// The work disk too, or the guest waits 90 s for its home.
	work := filepath.Join(dir, "work.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", img.workSeed, "-F", "raw", work).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	spec := vmm.MachineSpec{
		ID:         id,
		Name:       id,
		CPUs:       2,
		MemoryMiB:  512,
		Kernel:     img.kernel,
		Initrd:     img.initrd,
		KernelArgs: img.kernelArgs,
		// The image boots with root=/dev/vda, so reaching login also
		// shows that Drives[0] became vda.
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: overlay, Format: "qcow2"},
			{ID: "work", Path: work, Format: "qcow2"},
		},
		RunDir:     filepath.Join(dir, "run"),
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
	return spec
}

// waitForLogin waits for the getty prompt: systemd is up, so the guest
// handles Ctrl-Alt-Del and the power button.
func waitForLogin(t *testing.T, spec vmm.MachineSpec) {
	waitForFile(t, spec.ConsoleLog, "login:", 150*time.Second)
}

// TestIntegrationContract runs the shared vmm.Driver contract against
// QEMU with the default image.
func TestIntegrationContract(t *testing.T) {
	requireIntegration(t)
	n := 0
	vmmtest.Run(t, vmmtest.Setup{
		NewDriver: func() vmm.Driver { return New(Options{}) },
		Spec: func(t *testing.T) vmm.MachineSpec {
			n++
			spec := imageSpec(t, fmt.Sprintf("it-contract-%d", n))
			killLeftovers(t, spec.ID)
			return spec
		},
		BootWait: func(t *testing.T, spec vmm.MachineSpec, _ vmm.Handle) { waitForLogin(t, spec) },
		Timeout:  90 * time.Second,
	})
}
