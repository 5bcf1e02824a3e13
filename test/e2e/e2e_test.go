// Package e2e drives the real banger binary against real guests: the
// default Debian image booted under QEMU (KVM where the host can run
// ordinary guests, TCG otherwise). Everything runs inside a network
// namespace the suite creates and deletes, so bridges, TAPs and NAT rules
// never touch the host's own network.
//
// Enable with BANGER_E2E=1 (as root). The image is built once and cached
// in $BANGER_IMAGE_CACHE (default /var/cache/banger-test/images), keyed by
// its recipe. VMs are shared between cases where isolation allows: each
// boot costs 15-30 s under TCG.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

var env struct {
	tmp      string // everything the suite made on the host: binary, state, logs
	bin      string // banger binary
	netns    string
	state    string
	socket   string
	cache    string
	daemon   *exec.Cmd
	daemonLg *os.File
	vmm      string
	fcBin    string // the Firecracker fake, with BANGER_E2E_VMM=firecracker-fake
	// daemonArgs are extra daemon flags for the next startDaemon (set by
	// sessions_test.go to pass --config).
	daemonArgs []string
}

func TestMain(m *testing.M) {
	if os.Getenv("BANGER_E2E") != "1" {
		fmt.Println("e2e: skipped: set BANGER_E2E=1 (as root, with qemu-system-x86 and debootstrap installed) to boot real guests")
		os.Exit(m.Run())
	}
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		teardown()
		os.Exit(1)
	}
	code = m.Run()
	teardown()
	if code == 0 {
		// Keep the daemon log and state of a failed run for debugging.
		_ = os.RemoveAll(env.tmp)
	}
	os.Exit(code)
}

func setup() (int, error) {
	if os.Geteuid() != 0 {
		return 1, fmt.Errorf("BANGER_E2E=1 needs root (network namespaces, TAP devices)")
	}
	tmp, err := os.MkdirTemp("", "bge2e-")
	if err != nil {
		return 1, err
	}
	env.tmp = tmp
	env.bin = filepath.Join(tmp, "banger")
	build := exec.Command("go", "build", "-o", env.bin, "../../cmd/banger")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("build banger: %w", err)
	}
	env.state = filepath.Join(tmp, "state")
	env.socket = filepath.Join(tmp, "banger.sock")
	env.cache = os.Getenv("BANGER_IMAGE_CACHE")
	if env.cache == "" {
		env.cache = "/var/cache/banger-test/images"
	}
	env.vmm = os.Getenv("BANGER_E2E_VMM")
	if env.vmm == "" {
		env.vmm = "qemu"
	}
	if env.vmm == "firecracker-fake" {
		// The Firecracker backend against the API fake, which boots the
		// configured guest with QEMU (Firecracker cannot run here).
		env.fcBin = filepath.Join(tmp, "fakefc", "firecracker")
		build := exec.Command("go", "build", "-o", env.fcBin, "../../internal/vmm/firecracker/cmd/fakefc")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return 1, fmt.Errorf("build the Firecracker fake: %w", err)
		}
		env.vmm = "firecracker"
	}
	env.netns = fmt.Sprintf("bge2e-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", env.netns).CombinedOutput(); err != nil {
		return 1, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	_ = exec.Command("ip", "-n", env.netns, "link", "set", "lo", "up").Run()
	if env.daemonLg, err = os.Create(filepath.Join(tmp, "daemon.log")); err != nil {
		return 1, err
	}
	fmt.Println("e2e: daemon log:", env.daemonLg.Name())
	if err := startDaemon(); err != nil {
		return 1, err
	}
	// The image: built once per recipe, then reused from the cache.
	start := time.Now()
	if err := buildImage(tmp); err != nil {
		return 1, err
	}
	cmd := exec.Command(env.bin, "image", "build", "default", "--socket", env.socket)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return 1, fmt.Errorf("image build: %w", err)
	}
	fmt.Printf("e2e: image ready in %s\n", time.Since(start).Round(time.Second))
	return 0, nil
}

// buildImage fills the image cache. debootstrap needs the Debian mirror,
// which the test namespace cannot reach, so a second daemon in the host's
// namespace builds it — with --no-network it creates no bridge, TAP or
// NAT rule there. The test daemon then finds the recipe cached.
func buildImage(tmp string) error {
	sock := filepath.Join(tmp, "build.sock")
	d := exec.Command(env.bin, "daemon", "--state-dir", filepath.Join(tmp, "build-state"), "--socket", sock,
		"--image-cache", env.cache, "--no-network", "--log-level", "warn")
	d.Stdout, d.Stderr = env.daemonLg, env.daemonLg
	if err := d.Start(); err != nil {
		return err
	}
	defer func() {
		_ = d.Process.Signal(syscall.SIGINT)
		_ = d.Wait()
	}()
	for i := 0; exec.Command(env.bin, "--socket", sock, "version").Run() != nil; i++ {
		if i > 300 {
			return fmt.Errorf("image build daemon did not start; see %s", env.daemonLg.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd := exec.Command(env.bin, "--socket", sock, "image", "build", "default")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	return nil
}

func startDaemon() error {
	env.daemon = exec.Command("ip", "netns", "exec", env.netns, env.bin, "daemon",
		"--state-dir", env.state, "--socket", env.socket, "--image-cache", env.cache, "--log-level", "debug")
	env.daemon.Args = append(env.daemon.Args, env.daemonArgs...)
	if env.fcBin != "" {
		env.daemon.Args = append(env.daemon.Args, "--firecracker-bin", env.fcBin)
		env.daemon.Env = append(os.Environ(), "FAKEFC_BOOT=qemu")
	}
	env.daemon.Stdout, env.daemon.Stderr = env.daemonLg, env.daemonLg
	if err := env.daemon.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := exec.Command(env.bin, "--socket", env.socket, "version").Run(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("daemon did not come up; see %s", env.daemonLg.Name())
}

func teardown() {
	if env.daemon != nil && env.daemon.Process != nil {
		// Delete every VM so no QEMU process outlives the suite.
		if out, err := exec.Command(env.bin, "--socket", env.socket, "vm", "ls", "--json").Output(); err == nil {
			var res api.VMListResult
			if json.Unmarshal(out, &res) == nil {
				for _, v := range res.VMs {
					_ = exec.Command(env.bin, "--socket", env.socket, "vm", "rm", "--force", v.Name).Run()
				}
			}
		}
		_ = env.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = env.daemon.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = env.daemon.Process.Kill()
		}
	}
	// Anything left in the namespace (a QEMU of a failed test) dies with it.
	if out, err := exec.Command("ip", "netns", "pids", env.netns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if env.netns != "" {
		_ = exec.Command("ip", "netns", "delete", env.netns).Run()
	}
}

func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("BANGER_E2E") != "1" {
		t.Skip("set BANGER_E2E=1 to run end-to-end tests against real guests")
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the banger CLI on the host (the socket crosses namespaces).
func run(t *testing.T, args ...string) result {
	t.Helper()
	return runIn(t, false, "", args...)
}

// runNS runs the CLI inside the namespace, where guest addresses route.
func runNS(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runIn(t, true, stdin, args...)
}

func runIn(t *testing.T, inNS bool, stdin string, args ...string) result {
	t.Helper()
	full := append([]string{"--socket", env.socket}, args...)
	var cmd *exec.Cmd
	if inNS {
		cmd = exec.Command("ip", append([]string{"netns", "exec", env.netns, env.bin}, full...)...)
	} else {
		cmd = exec.Command(env.bin, full...)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func must(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func showVM(t *testing.T, name string) api.VM {
	t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(must(t, "vm", "show", name, "--json").stdout), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func execVM(t *testing.T, vm string, argv ...string) string {
	t.Helper()
	r := must(t, append([]string{"exec", vm, "--"}, argv...)...)
	return strings.TrimSpace(r.stdout)
}

// nsOutput runs a host command inside the namespace.
func nsOutput(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", env.netns}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
	return string(out)
}

// vmProcesses returns the pids of processes whose command line mentions id.
func vmProcesses(id string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(id)) && !bytes.Contains(b, []byte("go test")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func taps(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(nsOutput(t, "ip", "-o", "link", "show"), "\n") {
		if m := regexp.MustCompile(`^\d+: (bgtap\d+)[:@]`).FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

func waitOp(t *testing.T, id string) api.Operation {
	t.Helper()
	var op api.Operation
	r := run(t, "op", "wait", id, "--json")
	if err := json.Unmarshal([]byte(must(t, "op", "show", id, "--json").stdout), &op); err != nil {
		t.Fatal(err)
	}
	if r.code != 0 && op.State == api.OpSucceeded {
		t.Fatalf("op wait exit %d for a succeeded op: %s", r.code, r.stderr)
	}
	return op
}

// TestE2E runs the cases in order; later ones reuse the VMs earlier ones
// made, as each boot costs tens of seconds under TCG.
func TestE2E(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	_ = ctx

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"CreateTwoVMs", createTwo},
		{"PinnedHostKeys", pinnedHostKeys},
		{"VMsReachEachOther", reachEachOther},
		{"ExecExitCodesAndStreams", execStreams},
		{"ObserveStatsLogsHealth", observe},
		{"WorkDiskSurvivesRestartAndSetApplies", workDiskAndSet},
		{"DaemonKilledVMAdopted", daemonCrash},
		{"DeleteLeavesNothing", deleteLeavesNothing},
		{"CancelCreateLeavesNothing", cancelCreate},
		// Later tests in this package share the daemon; leave no VM behind.
		{"RemoveVMs", func(t *testing.T) { must(t, "vm", "rm", "--force", "alpha") }},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			t.Logf("daemon log: %s", env.daemonLg.Name())
			return // later steps depend on earlier ones
		}
	}
}

func createTwo(t *testing.T) {
	start := time.Now()
	var ops []string
	for _, name := range []string{"alpha", "beta"} {
		r := must(t, "vm", "create", name, "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "256", "--detach")
		ops = append(ops, strings.TrimSpace(r.stdout))
	}
	for i, id := range ops {
		op := waitOp(t, id)
		if op.State != api.OpSucceeded {
			t.Fatalf("create %d: %s: %s\n%s", i, op.State, op.Error, strings.Join(op.LogTail, "\n"))
		}
	}
	t.Logf("two VMs created and reachable over SSH in %s", time.Since(start).Round(100*time.Millisecond))
	for _, name := range []string{"alpha", "beta"} {
		v := showVM(t, name)
		if v.State != api.VMRunning || v.IP == "" || v.TAP == "" || v.PID == 0 {
			t.Fatalf("%s: %+v", name, v)
		}
		if v.Overlay == "" {
			t.Fatalf("%s: overlay strategy not reported", name)
		}
		if got := execVM(t, name, "hostname"); got != name {
			t.Fatalf("hostname in %s = %q", name, got)
		}
	}
}

func pinnedHostKeys(t *testing.T) {
	// banger ssh (its own SSH client, pinned key) passes the exit status.
	r := runNS(t, "", "ssh", "alpha", "--", "sh", "-c", "hostname; exit 3")
	if r.code != 3 || strings.TrimSpace(r.stdout) != "alpha" {
		t.Fatalf("banger ssh: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Plain OpenSSH through the generated config.
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(cfg, []byte(must(t, "ssh-config").stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	out := nsOutput(t, "ssh", "-F", cfg, "-o", "BatchMode=yes", "alpha.banger", "id", "-un")
	if strings.TrimSpace(out) != "banger" {
		t.Fatalf("ssh alpha.banger id -un = %q", out)
	}
	// A wrong pinned key (beta's, under alpha's name) is refused.
	a, b := showVM(t, "alpha"), showVM(t, "beta")
	bad := filepath.Join(t.TempDir(), "known_hosts")
	betaKH, err := os.ReadFile(filepath.Join(env.state, "vms", b.ID, "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(betaKH))
	if err := os.WriteFile(bad, []byte("alpha.banger,"+a.IP+" "+fields[1]+" "+fields[2]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", env.netns, "ssh", "-F", cfg, "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+bad, "alpha.banger", "touch", "/tmp/should-not-exist")
	outb, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(outb), "Host key verification failed") {
		t.Fatalf("ssh with a wrong pinned key: err=%v out=%s", err, outb)
	}
	if r := run(t, "exec", "alpha", "--", "test", "-e", "/tmp/should-not-exist"); r.code == 0 {
		t.Fatal("a command ran despite the host key mismatch")
	}
}

func reachEachOther(t *testing.T) {
	a, b := showVM(t, "alpha"), showVM(t, "beta")
	execVM(t, "alpha", "ping", "-c", "1", "-W", "5", b.IP)
	execVM(t, "beta", "ping", "-c", "1", "-W", "5", a.IP)
	// The daemon's DNS server answers for VM names.
	got := execVM(t, "alpha", "getent", "hosts", "beta.banger.internal")
	if !strings.HasPrefix(got, b.IP+" ") {
		t.Fatalf("getent hosts beta.banger.internal = %q, want %s", got, b.IP)
	}
}

func execStreams(t *testing.T) {
	r := run(t, "exec", "alpha", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("exec: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Arguments arrive as a list, not as shell text.
	r = must(t, "exec", "alpha", "--", "printf", "%s|", "a b", "$(id)", "it's")
	if r.stdout != "a b|$(id)|it's|" {
		t.Fatalf("argument quoting: %q", r.stdout)
	}
	if r := run(t, "exec", "nosuchvm", "--", "true"); r.code != 3 {
		t.Fatalf("exec on unknown VM: exit %d", r.code)
	}
}

func observe(t *testing.T) {
	var st api.VMStats
	if err := json.Unmarshal([]byte(must(t, "vm", "stats", "alpha", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.PID == 0 || st.RSSBytes < 64<<20 || st.CPUSeconds <= 0 || st.UptimeSeconds <= 0 || st.DiskBytes <= 0 {
		t.Fatalf("stats: %+v", st)
	}
	must(t, "vm", "health", "alpha")
	if logs := must(t, "vm", "logs", "alpha").stdout; !strings.Contains(logs, "alpha login:") {
		t.Fatalf("serial console has no login prompt; tail:\n%s", logs[max(0, len(logs)-2000):])
	}
}

func workDiskAndSet(t *testing.T) {
	execVM(t, "alpha", "sh", "-c", "echo persisted > ~/note && sync")
	must(t, "vm", "stop", "alpha")
	if v := showVM(t, "alpha"); v.State != api.VMStopped || len(vmProcesses(v.ID)) != 0 {
		t.Fatalf("after stop: %s, processes %v", v.State, vmProcesses(v.ID))
	}
	must(t, "vm", "set", "alpha", "--cpus", "2", "--memory", "768", "--disk-size", "512")
	must(t, "vm", "start", "alpha")
	if got := execVM(t, "alpha", "cat", "/home/banger/note"); got != "persisted" {
		t.Fatalf("work disk content after restart = %q", got)
	}
	if got := execVM(t, "alpha", "nproc"); got != "2" {
		t.Fatalf("nproc = %q after set --cpus 2", got)
	}
	memKB, _ := strconv.Atoi(strings.Fields(execVM(t, "alpha", "grep", "MemTotal", "/proc/meminfo"))[1])
	if memKB < 600*1024 || memKB > 768*1024 {
		t.Fatalf("MemTotal %d kB after set --memory 768", memKB)
	}
	sizeKB, _ := strconv.Atoi(execVM(t, "alpha", "sh", "-c", "df -k --output=size /home/banger | tail -1 | tr -d ' '"))
	if sizeKB < 400*1024 {
		t.Fatalf("work disk is %d kB after set --disk-size 512", sizeKB)
	}
}

func daemonCrash(t *testing.T) {
	before := showVM(t, "alpha")
	if err := env.daemon.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = env.daemon.Wait()
	// `ip netns exec` execs the daemon, so the pid was the daemon's own.
	if !processAlive(before.PID) {
		t.Fatal("the VM died with the daemon")
	}
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	after := showVM(t, "alpha")
	if after.State != api.VMRunning || after.PID != before.PID {
		t.Fatalf("after daemon restart: state %s pid %d (was %d)", after.State, after.PID, before.PID)
	}
	if got := execVM(t, "alpha", "cat", "/home/banger/note"); got != "persisted" {
		t.Fatalf("exec after adoption = %q", got)
	}
}

func processAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func deleteLeavesNothing(t *testing.T) {
	b := showVM(t, "beta")
	nftBefore := nsOutput(t, "nft", "list", "table", "ip", "banger")
	must(t, "vm", "rm", "--force", "beta")
	if r := run(t, "vm", "show", "beta"); r.code != 3 {
		t.Fatalf("vm show after rm: exit %d", r.code)
	}
	if p := vmProcesses(b.ID); len(p) != 0 {
		t.Fatalf("processes left: %v", p)
	}
	for _, dir := range []string{filepath.Join(env.state, "vms", b.ID), filepath.Join(env.state, "run", "vms", b.ID)} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s still exists", dir)
		}
	}
	if nft := nsOutput(t, "nft", "list", "table", "ip", "banger"); nft != nftBefore {
		t.Fatalf("nft table changed by delete:\nbefore:\n%s\nafter:\n%s", nftBefore, nft)
	}
	// The TAP is back in the pool: nobody holds it open, and the next VM
	// gets beta's address (the lowest free one).
	r := must(t, "vm", "create", "gamma", "--vmm", env.vmm, "--no-start", "--disk-size", "128")
	_ = r
	g := showVM(t, "gamma")
	if g.IP != b.IP {
		t.Fatalf("address %s was not released (gamma got %s)", b.IP, g.IP)
	}
	must(t, "vm", "rm", "gamma")
}

func cancelCreate(t *testing.T) {
	tapsBefore := taps(t)
	for _, stage := range []string{"boot", "wait-ssh"} {
		r := must(t, "vm", "create", "delta", "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "128", "--detach")
		id := strings.TrimSpace(r.stdout)
		var op api.Operation
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			_ = json.Unmarshal([]byte(must(t, "op", "show", id, "--json").stdout), &op)
			if op.Stage == stage || op.State.Terminal() {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if op.Stage != stage || op.State.Terminal() {
			t.Fatalf("never saw stage %s (state %s, stage %s)", stage, op.State, op.Stage)
		}
		var vmID string
		if r := run(t, "vm", "show", "delta", "--json"); r.code == 0 {
			var v api.VM
			_ = json.Unmarshal([]byte(r.stdout), &v)
			vmID = v.ID
		}
		must(t, "op", "cancel", id)
		final := waitOp(t, id)
		if final.State != api.OpCancelled {
			t.Fatalf("cancel at %s: op %s %s", stage, final.State, final.Error)
		}
		if r := run(t, "vm", "show", "delta"); r.code != 3 {
			t.Fatalf("cancel at %s: VM still exists", stage)
		}
		if vmID != "" {
			if p := vmProcesses(vmID); len(p) != 0 {
				t.Fatalf("cancel at %s: processes left %v", stage, p)
			}
			if _, err := os.Stat(filepath.Join(env.state, "vms", vmID)); !os.IsNotExist(err) {
				t.Fatalf("cancel at %s: VM dir left", stage)
			}
		}
		if got := taps(t); len(got) > len(tapsBefore)+1 {
			t.Fatalf("cancel at %s: TAPs grew from %v to %v", stage, tapsBefore, got)
		}
	}
}
