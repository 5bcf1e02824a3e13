package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// TestImages builds images through transient build VMs and promotes a
// VM, against real guests (BANGER_E2E=1). Each build boots a VM, so the
// cases share what they can: about five boots in all.
func TestImages(t *testing.T) {
	requireE2E(t)
	fx := newImageFixture(t)
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"BadInputLeavesNothing", fx.badInput},
		{"CancelledBuildLeavesNothing", fx.cancelBuild},
		{"FailingScriptFailsBuild", fx.failingScript},
		{"BuildInstallsDebAndWritesFile", fx.buildAndUse},
		{"PromoteAndReuse", fx.promote},
		{"Cleanup", fx.cleanup},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			t.Logf("daemon log: %s", env.daemonLg.Name())
			return
		}
	}
}

type imageFixture struct {
	dir, deb, install, fail, sleep string
	base                           api.Image
}

func newImageFixture(t *testing.T) *imageFixture {
	fx := &imageFixture{dir: t.TempDir()}
	// A tiny Debian package built on the host: the guest never needs the
	// internet to install it.
	pkg := filepath.Join(fx.dir, "pkg")
	writeFile(t, filepath.Join(pkg, "DEBIAN", "control"), 0o644, "Package: banger-hello\nVersion: 1.0\n"+
		"Architecture: all\nMaintainer: banger tests <tests@banger.invalid>\nDescription: banger e2e test package\n")
	writeFile(t, filepath.Join(pkg, "usr", "bin", "banger-hello"), 0o755, "#!/bin/sh\necho hello from a deb\n")
	fx.deb = filepath.Join(fx.dir, "banger-hello.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, fx.deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v: %s", err, out)
	}
	fx.install = filepath.Join(fx.dir, "install.sh")
	writeFile(t, fx.install, 0o644, `#!/bin/sh
set -eu
dpkg -i /var/tmp/banger-hello.deb
echo built-by-script > /etc/banger-built
echo seeded > /home/banger/seeded
chown 1000:1000 /home/banger/seeded
echo provision-done
`)
	fx.fail = filepath.Join(fx.dir, "fail.sh")
	writeFile(t, fx.fail, 0o644, "echo about-to-fail\necho on-stderr >&2\nexit 3\n")
	fx.sleep = filepath.Join(fx.dir, "sleep.sh")
	writeFile(t, fx.sleep, 0o644, "echo sleeping\nsleep 600\n")
	if err := json.Unmarshal([]byte(must(t, "image", "show", "default", "--json").stdout), &fx.base); err != nil {
		t.Fatal(err)
	}
	return fx
}

func writeFile(t *testing.T, path string, mode os.FileMode, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func imageNames(t *testing.T) []string {
	t.Helper()
	var res api.ImageListResult
	if err := json.Unmarshal([]byte(must(t, "image", "ls", "--json").stdout), &res); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range res.Images {
		names = append(names, im.Name)
	}
	return names
}

func vmNames(t *testing.T) []string {
	t.Helper()
	var res api.VMListResult
	if err := json.Unmarshal([]byte(must(t, "vm", "ls", "--json").stdout), &res); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range res.VMs {
		names = append(names, v.Name)
	}
	return names
}

func dirEntries(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// assertNothingLeft checks no build VM, VM dir, staging file or image
// named image is left.
func assertNothingLeft(t *testing.T, image string, vmsBefore []string) {
	t.Helper()
	if slices.Contains(imageNames(t), image) {
		t.Fatalf("image %s was registered", image)
	}
	if got := vmNames(t); !slices.Equal(got, vmsBefore) {
		t.Fatalf("VMs changed from %v to %v", vmsBefore, got)
	}
	if left := dirEntries(filepath.Join(env.state, "images", ".staging")); len(left) != 0 {
		t.Fatalf("staging files left: %v", left)
	}
}

func (fx *imageFixture) badInput(t *testing.T) {
	vms, images := vmNames(t), imageNames(t)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing script", []string{"image", "build", "bad1", "--from", "default", "--provision", filepath.Join(fx.dir, "nope.sh")}, 2, "no such file"},
		{"missing file", []string{"image", "build", "bad1", "--from", "default", "--file", filepath.Join(fx.dir, "nope.deb") + ":/tmp/x"}, 2, "no such file"},
		{"relative destination", []string{"image", "build", "bad1", "--from", "default", "--file", fx.deb + ":tmp/x"}, 2, "clean absolute path"},
		{"unknown base", []string{"image", "build", "bad1", "--from", "nosuchimage", "--provision", fx.install}, 3, "nosuchimage"},
		{"name taken", []string{"image", "build", "default", "--from", "default", "--provision", fx.install}, 4, "already exists"},
		{"disk too small", []string{"image", "build", "bad1", "--from", "default", "--provision", fx.install, "--size", "64"}, 2, "needs at least"},
		{"promote unknown VM", []string{"image", "promote", "nosuchvm", "bad1"}, 3, "nosuchvm"},
	}
	for _, c := range cases {
		r := run(t, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d (want %d), stderr %q (want %q)", c.name, r.code, c.code, r.stderr, c.want)
		}
	}
	if got := imageNames(t); !slices.Equal(got, images) {
		t.Fatalf("images changed from %v to %v", images, got)
	}
	assertNothingLeft(t, "bad1", vms)
}

func (fx *imageFixture) opByID(t *testing.T, id string) api.Operation {
	t.Helper()
	var op api.Operation
	if err := json.Unmarshal([]byte(must(t, "op", "show", id, "--json").stdout), &op); err != nil {
		t.Fatal(err)
	}
	return op
}

func (fx *imageFixture) cancelBuild(t *testing.T) {
	vms, tapsBefore := vmNames(t), taps(t)
	id := strings.TrimSpace(must(t, "image", "build", "cancelled", "--from", "default", "--provision", fx.sleep, "--detach").stdout)
	var op api.Operation
	var buildVM api.VM
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		op = fx.opByID(t, id)
		if buildVM.ID == "" {
			for _, n := range vmNames(t) {
				if strings.HasPrefix(n, "build-cancelled-") {
					buildVM = showVM(t, n)
				}
			}
		}
		if op.State.Terminal() || (op.Stage == "provision" && slices.ContainsFunc(op.LogTail, func(l string) bool { return strings.Contains(l, "sleeping") })) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if op.State.Terminal() || buildVM.ID == "" {
		t.Fatalf("build never reached its script (state %s, stage %s, build VM %q): %s\n%s", op.State, op.Stage, buildVM.Name, op.Error, strings.Join(op.LogTail, "\n"))
	}
	must(t, "op", "cancel", id)
	final := waitOp(t, id)
	if final.State != api.OpCancelled {
		t.Fatalf("cancelled build: %s %s", final.State, final.Error)
	}
	assertNothingLeft(t, "cancelled", vms)
	if p := vmProcesses(buildVM.ID); len(p) != 0 {
		t.Fatalf("build VM processes left: %v", p)
	}
	if _, err := os.Stat(filepath.Join(env.state, "vms", buildVM.ID)); !os.IsNotExist(err) {
		t.Fatalf("build VM dir left (%v)", err)
	}
	if got := taps(t); len(got) > len(tapsBefore)+1 {
		t.Fatalf("TAPs grew from %v to %v", tapsBefore, got)
	}
}

func (fx *imageFixture) failingScript(t *testing.T) {
	vms := vmNames(t)
	id := strings.TrimSpace(must(t, "image", "build", "broken", "--from", "default", "--provision", fx.fail, "--detach").stdout)
	op := waitOp(t, id)
	if op.State != api.OpFailed {
		t.Fatalf("build with a failing script: %s", op.State)
	}
	for _, want := range []string{"fail.sh", "exit status 3", "about-to-fail", "on-stderr"} {
		if !strings.Contains(op.Error, want) {
			t.Errorf("error %q lacks %q", op.Error, want)
		}
	}
	if !slices.ContainsFunc(op.LogTail, func(l string) bool { return strings.Contains(l, "fail.sh: about-to-fail") }) {
		t.Errorf("script output not in the op log:\n%s", strings.Join(op.LogTail, "\n"))
	}
	assertNothingLeft(t, "broken", vms)
}

func (fx *imageFixture) buildAndUse(t *testing.T) {
	start := time.Now()
	id := strings.TrimSpace(must(t, "image", "build", "hello", "--from", "default", "--provision", fx.install,
		"--file", fx.deb+":/var/tmp/banger-hello.deb", "--detach").stdout)
	op := waitOp(t, id)
	if op.State != api.OpSucceeded {
		t.Fatalf("build: %s: %s\n%s", op.State, op.Error, strings.Join(op.LogTail, "\n"))
	}
	t.Logf("image hello built in %s; stage seconds %v", time.Since(start).Round(100*time.Millisecond), op.Result["stage_seconds"])
	var im api.Image
	if err := json.Unmarshal([]byte(must(t, "image", "show", "hello", "--json").stdout), &im); err != nil {
		t.Fatal(err)
	}
	script, _ := os.ReadFile(fx.install)
	sum := sha256.Sum256(script)
	if im.Parent != "default" || len(im.Scripts) != 1 || im.Scripts[0].Name != "install.sh" || im.Scripts[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("lineage: parent %q scripts %+v", im.Parent, im.Scripts)
	}
	if im.HostKeyFingerprint == "" || im.DiskBytes <= 0 || im.Kernel != fx.base.Kernel {
		t.Fatalf("image: %+v", im)
	}
	baseRoot, _ := os.Stat(fx.base.RootFS)
	newRoot, _ := os.Stat(im.RootFS)
	t.Logf("rootfs: base %d MiB, hello %d MiB (on disk %d MiB)", baseRoot.Size()>>20, newRoot.Size()>>20, im.DiskBytes>>20)
	if slices.Contains(imageNames(t), "hello") == false || slices.ContainsFunc(vmNames(t), func(n string) bool { return strings.HasPrefix(n, "build-") }) {
		t.Fatalf("after build: images %v, VMs %v", imageNames(t), vmNames(t))
	}
	var parent api.Image
	_ = json.Unmarshal([]byte(must(t, "image", "show", "default", "--json").stdout), &parent)
	if !slices.Contains(parent.Children, "hello") {
		t.Fatalf("default's children: %v", parent.Children)
	}

	must(t, "vm", "create", "hv", "--image", "hello", "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "256")
	if got := execVM(t, "hv", "banger-hello"); got != "hello from a deb" {
		t.Fatalf("banger-hello = %q", got)
	}
	if got := execVM(t, "hv", "dpkg-query", "-W", "-f", "${Status}", "banger-hello"); got != "install ok installed" {
		t.Fatalf("package status = %q", got)
	}
	if got := execVM(t, "hv", "cat", "/etc/banger-built"); got != "built-by-script" {
		t.Fatalf("/etc/banger-built = %q", got)
	}
	// The work disk is mounted by fstab with nofail: give it a moment.
	mounted := ""
	for range 30 {
		if mounted = strings.TrimSpace(run(t, "exec", "hv", "--", "findmnt", "-n", "-o", "SOURCE", "/home/banger").stdout); mounted != "" {
			break
		}
		time.Sleep(time.Second)
	}
	if got := run(t, "exec", "hv", "--", "cat", "/home/banger/seeded"); strings.TrimSpace(got.stdout) != "seeded" {
		t.Fatalf("work seed file = %q %q (home mounted from %q); console tail:\n%s", got.stdout, got.stderr, mounted,
			lastN(must(t, "vm", "logs", "hv").stdout, 4000))
	}
	if fp := execVM(t, "hv", "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"); strings.Contains(fp, im.HostKeyFingerprint) {
		t.Fatalf("the VM has the build VM's host key %s", im.HostKeyFingerprint)
	}
	if got := execVM(t, "hv", "sh", "-c", "ls /var/tmp/banger-provision 2>&1 || true"); !strings.Contains(got, "No such file") {
		t.Fatalf("provisioning scripts left in the image: %q", got)
	}
	if r := run(t, "image", "rm", "default"); r.code != 4 || !strings.Contains(r.stderr, "hello") {
		t.Fatalf("image rm default while hello needs its files: exit %d %s", r.code, r.stderr)
	}
}

func (fx *imageFixture) promote(t *testing.T) {
	execVM(t, "hv", "sudo", "sh", "-c", "printf '#!/bin/sh\\necho made by hand\\n' > /usr/local/bin/handmade && chmod 755 /usr/local/bin/handmade && sync")
	must(t, "vm", "stop", "hv")
	if r := run(t, "image", "promote", "hv", "hello"); r.code != 4 {
		t.Fatalf("promote to a taken name: exit %d %s", r.code, r.stderr)
	}
	start := time.Now()
	must(t, "image", "promote", "hv", "handmade")
	t.Logf("promote took %s", time.Since(start).Round(100*time.Millisecond))
	must(t, "image", "promote", "hv", "handmade2")
	var a, b api.Image
	_ = json.Unmarshal([]byte(must(t, "image", "show", "handmade", "--json").stdout), &a)
	_ = json.Unmarshal([]byte(must(t, "image", "show", "handmade2", "--json").stdout), &b)
	if a.RootFS == "" || a.RootFS != b.RootFS {
		t.Fatalf("promoting twice stored two root filesystems: %s and %s", a.RootFS, b.RootFS)
	}
	if a.Parent != "hello" {
		t.Fatalf("handmade's parent = %q", a.Parent)
	}
	must(t, "vm", "create", "hm", "--image", "handmade", "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "256")
	if got := execVM(t, "hm", "handmade"); got != "made by hand" {
		t.Fatalf("handmade = %q", got)
	}
	if got := execVM(t, "hm", "banger-hello"); got != "hello from a deb" {
		t.Fatalf("banger-hello in the promoted image = %q", got)
	}
	if got := execVM(t, "hm", "hostname"); got != "hm" {
		t.Fatalf("hostname = %q", got)
	}
}

func (fx *imageFixture) cleanup(t *testing.T) {
	must(t, "vm", "rm", "--force", "hm")
	must(t, "vm", "rm", "--force", "hv")
	var hello api.Image
	_ = json.Unmarshal([]byte(must(t, "image", "show", "hello", "--json").stdout), &hello)
	must(t, "image", "rm", "handmade")
	if _, err := os.Stat(hello.RootFS); err != nil {
		t.Fatalf("removing handmade removed hello's rootfs: %v", err)
	}
	var h2 api.Image
	_ = json.Unmarshal([]byte(must(t, "image", "show", "handmade2", "--json").stdout), &h2)
	if _, err := os.Stat(h2.RootFS); err != nil {
		t.Fatalf("removing handmade removed the root filesystem handmade2 shares: %v", err)
	}
	must(t, "image", "rm", "handmade2")
	if _, err := os.Stat(h2.RootFS); !os.IsNotExist(err) {
		t.Fatalf("unreferenced rootfs %s left (%v)", h2.RootFS, err)
	}
	must(t, "image", "rm", "hello")
	if left := dirEntries(filepath.Join(env.state, "images", "blobs")); len(left) != 0 {
		t.Fatalf("blobs left after removing every derived image: %v", left)
	}
}

func lastN(s string, n int) string { return s[max(0, len(s)-n):] }
