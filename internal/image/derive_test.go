package image

import (
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
)

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed (e2fsprogs, qemu-utils)")
	}
}

// makeRootFS builds a small ext4 image that looks like a guest that booted
// once: host keys and authorized keys in /etc/ssh.
func makeRootFS(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	for path, content := range map[string]string{
		"etc/ssh/sshd_config":                 "UseDNS no\n",
		"etc/ssh/ssh_host_ed25519_key":        "private\n",
		"etc/ssh/ssh_host_ed25519_key.pub":    "public\n",
		"etc/ssh/ssh_host_rsa_key":            "private\n",
		"etc/ssh/authorized_keys/banger":      "ssh-ed25519 AAAA\n",
		"usr/local/bin/tool":                  strings.Repeat("x", 3<<20),
		"home/banger/.profile":                "# hi\n",
		"etc/ssh/not_a_host_key_ssh_host_foo": "keep\n",
	} {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, "-L", "banger-root", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

func TestFlattenFitScrubIsDeterministic(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "debugfs", "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	src := makeRootFS(t, dir)
	// A qcow2 overlay over it, as a VM's system disk under QEMU.
	overlay := filepath.Join(dir, "overlay.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", src, overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	var digests []string
	for i := range 2 {
		out := filepath.Join(dir, "flat"+string(rune('a'+i))+".ext4")
		if err := flattenDisk(ctx, overlay, "qcow2", out); err != nil {
			t.Fatal(err)
		}
		fit, err := fitFilesystem(ctx, out, 1700000000, func(min int64) (int64, error) { return min + 8<<20, nil })
		if err != nil {
			t.Fatal(err)
		}
		if fit.MinBytes <= 3<<20 || fit.MinBytes >= 64<<20 || fit.FinalBytes != (fit.MinBytes+8<<20+1<<20-1)&^(1<<20-1) {
			t.Fatalf("fit = %+v", fit)
		}
		if fi, _ := os.Stat(out); fi.Size() != fit.FinalBytes {
			t.Fatalf("file size %d, want %d", fi.Size(), fit.FinalBytes)
		}
		info, err := readFSInfo(ctx, out)
		if err != nil || info.SizeBytes() != fit.FinalBytes {
			t.Fatalf("filesystem size %d (%v), want %d", info.SizeBytes(), err, fit.FinalBytes)
		}
		removed, err := scrubRootFS(ctx, out, 1700000000)
		if err != nil {
			t.Fatal(err)
		}
		want := "/etc/ssh/ssh_host_ed25519_key,/etc/ssh/ssh_host_ed25519_key.pub,/etc/ssh/ssh_host_rsa_key,/etc/ssh/authorized_keys/banger"
		if got := strings.Join(sortedCopy(removed), ","); got != strings.Join(sortedCopy(strings.Split(want, ",")), ",") {
			t.Fatalf("removed %v", removed)
		}
		ls, err := runTool(ctx, nil, "debugfs", "-R", "ls -p /etc/ssh", out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ls, "/ssh_host_") || !strings.Contains(ls, "/sshd_config/") || !strings.Contains(ls, "not_a_host_key_ssh_host_foo") {
			t.Fatalf("/etc/ssh after scrub:\n%s", ls)
		}
		if err := fsck(ctx, pinnedClock(1700000000), out); err != nil {
			t.Fatalf("result is not a clean filesystem: %v", err)
		}
		d, err := sha256File(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("flattening the same disk twice gave different bytes (%s, %s): dedup would not work", digests[0], digests[1])
	}
	// The base was never written.
	if out, err := exec.Command("debugfs", "-R", "ls -p /etc/ssh", src).Output(); err != nil || !strings.Contains(string(out), "ssh_host_rsa_key") {
		t.Fatalf("the base image was modified: %v %s", err, out)
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestFitRefusesTooSmall(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs")
	ctx := context.Background()
	img := makeRootFS(t, t.TempDir())
	_, err := fitFilesystem(ctx, img, 1, func(min int64) (int64, error) {
		return 0, sizeError("the built root filesystem", min, 1)
	})
	if !api.IsKind(err, api.KindInvalidInput) || !strings.Contains(err.Error(), "needs at least") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseFSInfo(t *testing.T) {
	fi, err := parseFSInfo("Filesystem volume name:   banger-root\nBlock count:              524288\nReserved block count:     0\nFree blocks:              394961\nBlock size:               4096\n")
	if err != nil || fi.UsedBytes() != (524288-394961)*4096 || fi.SizeBytes() != 524288*4096 {
		t.Fatalf("%+v %v", fi, err)
	}
	if _, err := parseFSInfo("dumpe2fs: Bad magic number in super-block"); err == nil {
		t.Fatal("garbage parsed")
	}
}

func newTestService(t *testing.T) *Service {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	layout, err := paths.New(filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	return &Service{Store: st, Layout: layout, Ops: opstate.New(ctx, nil), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func writeTemp(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Registering identical results twice stores the bytes once; removing the
// images releases the blob only with its last user; a parent whose files a
// child uses cannot be removed.
func TestDedupLineageAndDelete(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	dir := t.TempDir()
	parent := store.Image{Name: "base", Kernel: writeTemp(t, dir, "vmlinuz", "kernel"),
		Initrd: writeTemp(t, dir, "initrd", "initrd"), RootFS: writeTemp(t, dir, "root", "base root"),
		WorkSeed: writeTemp(t, dir, "seed", "seed")}
	if err := s.Store.CreateImage(ctx, &parent); err != nil {
		t.Fatal(err)
	}
	var made []store.Image
	for _, name := range []string{"one", "two"} {
		staging, err := s.newStaging()
		if err != nil {
			t.Fatal(err)
		}
		root := writeTemp(t, staging, "rootfs.ext4", "derived root")
		im, err := s.registerDerived(ctx, name, store.NewID(), parent, root, "", "",
			store.Lineage{Source: "promote", Scripts: []store.ScriptDigest{{Name: "a.sh", SHA256: "ab"}}}, "test")
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, im)
	}
	if made[0].RootFS != made[1].RootFS || !s.isBlob(made[0].RootFS) {
		t.Fatalf("identical content stored twice: %s, %s", made[0].RootFS, made[1].RootFS)
	}
	if made[0].Kernel != parent.Kernel || made[0].WorkSeed != parent.WorkSeed {
		t.Fatalf("unchanged files not shared with the parent: %+v", made[0])
	}
	w, err := s.Show(ctx, api.ImageRef{Image: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if w.Parent != "base" || len(w.Scripts) != 1 || w.Scripts[0].Name != "a.sh" || w.DiskBytes <= 0 {
		t.Fatalf("show one: %+v", w)
	}
	pw, err := s.Show(ctx, api.ImageRef{Image: "base"})
	if err != nil || strings.Join(pw.Children, ",") != "one,two" {
		t.Fatalf("children of base: %v %v", pw.Children, err)
	}

	_, err = s.Delete(ctx, api.ImageRef{Image: "base"})
	if !api.IsKind(err, api.KindConflict) || !strings.Contains(err.Error(), "one, two") {
		t.Fatalf("delete of a needed parent: %v", err)
	}
	if _, err := s.Delete(ctx, api.ImageRef{Image: "one"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(made[1].RootFS); err != nil {
		t.Fatalf("blob removed while image two uses it: %v", err)
	}
	if _, err := s.Delete(ctx, api.ImageRef{Image: "two"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(made[1].RootFS); !os.IsNotExist(err) {
		t.Fatalf("unused blob kept: %v", err)
	}
	if _, err := s.Delete(ctx, api.ImageRef{Image: "base"}); err != nil {
		t.Fatalf("delete of the parent once its children are gone: %v", err)
	}
	if _, err := os.Stat(parent.Kernel); err != nil {
		t.Fatalf("in-place files of a registered image were removed: %v", err)
	}
}

func TestReconcileRemovesLeftovers(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	staging, err := s.newStaging()
	if err != nil {
		t.Fatal(err)
	}
	writeTemp(t, staging, "rootfs.ext4", "partial")
	if err := os.MkdirAll(s.blobsDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	orphan := writeTemp(t, s.blobsDir(), "00.ext4", "orphan")
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{staging, orphan} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after reconcile (%v)", p, err)
		}
	}
}

func TestPlanDeriveRefusals(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	dir := t.TempDir()
	base := store.Image{Name: "base", Kernel: writeTemp(t, dir, "k", "k"), RootFS: writeTemp(t, dir, "r", "r")}
	if err := s.Store.CreateImage(ctx, &base); err != nil {
		t.Fatal(err)
	}
	script := []api.ProvisionScript{{Name: "a.sh", Content: "true"}}
	cases := []struct {
		name string
		p    api.ImageBuildParams
		kind api.ErrorKind
		want string
	}{
		{"no VM service", api.ImageBuildParams{Name: "new", From: "base", Provision: script}, api.KindUnavailable, "build VMs"},
		{"taken", api.ImageBuildParams{Name: "base", From: "base"}, api.KindConflict, "already exists"},
		{"bad name", api.ImageBuildParams{Name: "Bad Name", From: "base"}, api.KindInvalidName, "invalid image name"},
		{"recipe", api.ImageBuildParams{Name: "new", From: "base", Recipe: "default"}, api.KindInvalidInput, "--recipe"},
	}
	for _, c := range cases {
		_, err := s.Build(ctx, c.p)
		if !api.IsKind(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, err := s.Build(ctx, api.ImageBuildParams{Name: "new", Provision: script}); !api.IsKind(err, api.KindInvalidInput) {
		t.Errorf("--provision without --from: %v", err)
	}
}

func TestLineWriterSplitsLines(t *testing.T) {
	s := newTestService(t)
	var got []string
	snap := s.Ops.Begin("test", "x", nil, func(ctx context.Context, op *opstate.Op) (map[string]any, error) {
		l := &buildLog{op: op}
		w := &lineWriter{log: l, prefix: "a.sh: "}
		w.Write([]byte("one\ntw"))
		w.Write([]byte("o\r\nthree"))
		w.Flush()
		got = append(got, l.lastOutput(10))
		return nil, nil
	})
	_ = snap
	s.Ops.Wait(context.Background(), snap.ID, time.Time{})
	if len(got) != 1 || got[0] != "a.sh: one\na.sh: two\na.sh: three" {
		t.Fatalf("lines: %q", got)
	}
}
