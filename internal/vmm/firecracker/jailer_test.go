package firecracker

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestJailerArgs(t *testing.T) {
	got := jailerArgs(JailerOptions{UID: 123, GID: 100, ChrootBaseDir: "/srv/bj"}, "/usr/bin/firecracker", "banger-abc")
	want := []string{"--id", "banger-abc", "--exec-file", "/usr/bin/firecracker", "--uid", "123", "--gid", "100",
		"--chroot-base-dir", "/srv/bj", "--cgroup-version", "2", "--parent-cgroup", "banger",
		"--", "--api-sock", "/run/firecracker.socket"}
	if !slices.Equal(got, want) {
		t.Errorf("jailerArgs =\n%q\nwant\n%q", got, want)
	}
}

func TestJailLayout(t *testing.T) {
	j := newJail(JailerOptions{}, "/opt/fc/firecracker-v1.10.1", "banger-abc")
	if j.Root != "/srv/jailer/firecracker-v1.10.1/banger-abc/root" {
		t.Errorf("root = %s", j.Root)
	}
	if j.Cgroup != "/sys/fs/cgroup/banger/banger-abc" {
		t.Errorf("cgroup = %s", j.Cgroup)
	}
	if j.hostPath(jailAPISocket) != "/srv/jailer/firecracker-v1.10.1/banger-abc/root/run/firecracker.socket" {
		t.Errorf("api socket = %s", j.hostPath(jailAPISocket))
	}
}

// TestJailPrepareAndRemove builds a jail in a temp dir: hard links (same
// inode, originals untouched by removal), ownership of per-VM drives and
// log files, then removal of jail and cgroup.
func TestJailPrepareAndRemove(t *testing.T) {
	base := t.TempDir()
	cgroupRoot := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	d := New(Options{Jailer: &JailerOptions{ChrootBaseDir: filepath.Join(base, "jail"), UID: uid, GID: gid, CgroupRoot: cgroupRoot}})
	spec := testSpec(t)
	// Hard links need one file system: put the images under base too.
	for i := range spec.Drives {
		p := filepath.Join(base, spec.Drives[i].ID+".img")
		if err := os.WriteFile(p, []byte(spec.Drives[i].ID), 0o600); err != nil {
			t.Fatal(err)
		}
		spec.Drives[i].Path = p
	}
	kernel := filepath.Join(base, "vmlinux")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.KernelRaw, spec.Initrd = kernel, ""
	j := newJail(*d.opts.Jailer, "/usr/bin/firecracker", instanceID(spec.ID))
	if err := os.MkdirAll(j.Cgroup, 0o755); err != nil { // as the jailer would
		t.Fatal(err)
	}
	if err := d.prepareJail(j, spec); err != nil {
		t.Fatal(err)
	}
	same := func(a, b string) bool {
		fa, err1 := os.Stat(a)
		fb, err2 := os.Stat(b)
		return err1 == nil && err2 == nil && os.SameFile(fa, fb)
	}
	if !same(kernel, j.hostPath(jailKernel)) {
		t.Error("kernel is not hard-linked into the jail")
	}
	for _, dr := range spec.Drives {
		if !same(dr.Path, j.hostPath(jailDriveDir+"/"+dr.ID)) {
			t.Errorf("drive %s is not hard-linked into the jail", dr.ID)
		}
	}
	for _, f := range []string{jailLog, jailMetrics} {
		fi, err := os.Stat(j.hostPath(f))
		if err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
			t.Errorf("%s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Dir(j.hostPath(jailAPISocket))); err != nil || !fi.IsDir() {
		t.Errorf("API socket directory missing: %v", err)
	}
	p := jailPaths(spec)
	if plan := planBoot(spec, p); plan.Boot.KernelImagePath != "/vmlinux" || plan.Drives[0].PathOnHost != "/drives/rootfs" || plan.Logger.LogPath != "/firecracker.log" {
		t.Errorf("jailed plan uses host paths: %+v", plan)
	}
	if err := j.remove(); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{filepath.Dir(j.Root), j.Cgroup} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s still exists after remove (%v)", gone, err)
		}
	}
	for _, dr := range spec.Drives {
		if _, err := os.Stat(dr.Path); err != nil {
			t.Errorf("original drive %s removed with the jail: %v", dr.ID, err)
		}
	}
}

func TestJailLinkRefusesOtherFiles(t *testing.T) {
	j := newJail(JailerOptions{ChrootBaseDir: t.TempDir()}, "/usr/bin/firecracker", "banger-x")
	if err := j.linkFile(t.TempDir(), filepath.Join(j.Root, "d"), false); err == nil {
		t.Error("a directory was accepted as a drive")
	}
	if err := j.linkFile("/nonexistent/img", filepath.Join(j.Root, "d"), false); err == nil {
		t.Error("a missing file was accepted")
	}
}
