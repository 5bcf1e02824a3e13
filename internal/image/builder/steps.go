package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// kernel downloads the kernel metapackage and the versioned image package
// it depends on, using the new root's own apt configuration and package
// lists (so the suite and mirror are the recipe's, not the host's), and
// unpacks the image package into the root without running its maintainer
// scripts. tar keeps the root's merged-/usr symlinks (lib -> usr/lib)
// intact, which dpkg-deb -x would replace with real directories.
func (b *build) kernel(ctx context.Context) error {
	debs := filepath.Join(b.dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	download := func(pkg string) (string, error) {
		cmd := b.run.command(ctx, "apt-get",
			"-o", "Dir="+b.root, "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
			"download", pkg)
		cmd.Dir = debs
		if err := b.run.wait(ctx, cmd, "apt-get download", []string{pkg}); err != nil {
			return "", err
		}
		matches, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		if len(matches) != 1 {
			return "", fmt.Errorf("apt-get download %s left %d matching .deb files, want 1", pkg, len(matches))
		}
		return matches[0], nil
	}
	meta, err := download(b.recipe.KernelPackage)
	if err != nil {
		return err
	}
	b.advance(0.3, "")
	image := meta
	if !debHasVmlinuz(ctx, b.run, meta) {
		depends, err := b.run.output(ctx, "dpkg-deb", "-f", meta, "Depends")
		if err != nil {
			return err
		}
		dep := kernelImageDependency(string(depends))
		if dep == "" {
			return fmt.Errorf("%s contains no /boot/vmlinuz and depends on no linux-image-* package (Depends: %s)", b.recipe.KernelPackage, strings.TrimSpace(string(depends)))
		}
		if image, err = download(dep); err != nil {
			return err
		}
	}
	b.advance(0.6, "unpacking "+filepath.Base(image))
	tarball := filepath.Join(b.dir, "kernel.tar")
	out, err := os.Create(tarball)
	if err != nil {
		return err
	}
	cmd := b.run.command(ctx, "dpkg-deb", "--fsys-tarfile", image)
	cmd.Stdout = out
	err = cmd.Run()
	out.Close()
	if err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w", image, err)
	}
	if err := b.run.run(ctx, "tar", "-x", "--keep-directory-symlink", "-f", tarball, "-C", b.root); err != nil {
		return err
	}
	os.Remove(tarball)
	os.RemoveAll(debs)

	kernels, _ := filepath.Glob(filepath.Join(b.root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("want exactly one /boot/vmlinuz-* after unpacking the kernel, found %d", len(kernels))
	}
	b.kernelVersion = strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	return b.chroot(ctx, "/sbin/depmod", "-a", b.kernelVersion)
}

func debHasVmlinuz(ctx context.Context, run *runner, deb string) bool {
	list, err := run.output(ctx, "dpkg-deb", "-c", deb)
	return err == nil && strings.Contains(string(list), "./boot/vmlinuz-")
}

var kernelImagePackage = regexp.MustCompile(`^linux-image-[0-9][A-Za-z0-9.+-]*$`)

// kernelImageDependency picks the versioned linux-image package out of a
// metapackage's Depends field, e.g. "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)".
func kernelImageDependency(depends string) string {
	for _, clause := range strings.Split(depends, ",") {
		for _, alt := range strings.Split(clause, "|") {
			name, _, _ := strings.Cut(strings.TrimSpace(alt), " ")
			name, _, _ = strings.Cut(name, ":")
			if kernelImagePackage.MatchString(name) {
				return name
			}
		}
	}
	return ""
}

// maskedUnits slow the boot, need a network the guest may not have, or
// serve a console no banger VM has. The serial getty stays.
var maskedUnits = []string{
	"apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
	"e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
	"systemd-networkd-wait-online.service", "systemd-timesyncd.service",
	"getty@tty1.service",
}

// guestFile is an embedded file and where it goes in the root.
type guestFile struct {
	src, dst string
	mode     os.FileMode
}

var guestFileTargets = []guestFile{
	{"apply-config.sh", "usr/lib/banger/apply-config", 0o755},
	{"banger-config.service", "etc/systemd/system/banger-config.service", 0o644},
	{"ssh-banger.conf", "etc/systemd/system/ssh.service.d/banger.conf", 0o644},
	{"sshd-banger.conf", "etc/ssh/sshd_config.d/banger.conf", 0o644},
	{"initramfs-modules", "etc/initramfs-tools/modules", 0o644},
	{"initramfs-banger.conf", "etc/initramfs-tools/conf.d/banger.conf", 0o644},
}

func (b *build) configure(ctx context.Context) error {
	user := b.recipe.User
	if err := b.chroot(ctx, "useradd", "--uid", fmt.Sprint(guestUID), "--user-group",
		"--groups", "sudo", "--shell", "/bin/bash", "--home-dir", "/home/"+user,
		"--no-create-home", "--password", "*", user); err != nil {
		return err
	}
	// The home is an empty mountpoint: the work disk is mounted over it.
	home := b.path("home", user)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if err := os.Chown(home, guestUID, guestUID); err != nil {
		return err
	}
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"etc/sudoers.d/banger": {user + " ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440},
		"etc/fstab": {"# banger: the root is /dev/vda (mounted rw by the kernel); the work disk holds the home.\n" +
			"LABEL=banger-root / ext4 defaults,noatime 0 0\n" +
			"LABEL=banger-work /home/" + user + " ext4 defaults,nofail,x-systemd.device-timeout=90s 0 2\n", 0o644},
		"etc/hostname":    {"banger\n", 0o644},
		"etc/hosts":       {"127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644},
		"etc/resolv.conf": {"# written at boot by banger-config.service\n", 0o644},
		// Empty: each VM gets its own machine ID at boot (and no first-boot presets).
		"etc/machine-id": {"", 0o444},
	}
	for rel, f := range files {
		if err := writeFile(b.path(rel), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	for _, g := range guestFileTargets {
		data, err := guestFiles.ReadFile("guestfiles/" + g.src)
		if err != nil {
			return err
		}
		if err := writeFile(b.path(g.dst), data, g.mode); err != nil {
			return err
		}
	}
	if err := symlink("/etc/systemd/system/banger-config.service", b.path("etc/systemd/system/sysinit.target.wants/banger-config.service")); err != nil {
		return err
	}
	for _, unit := range maskedUnits {
		if err := symlink("/dev/null", b.path("etc/systemd/system", unit)); err != nil {
			return err
		}
	}
	// Host keys come from each VM's config drive; none may be shared.
	keys, _ := filepath.Glob(b.path("etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	for _, p := range []string{"var/lib/dbus/machine-id"} {
		if err := os.Remove(b.path(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	// Downloaded packages and package lists only cost space; a guest runs
	// apt-get update before installing anything anyway.
	for _, pattern := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"} {
		matches, _ := filepath.Glob(b.path(pattern))
		for _, m := range matches {
			os.Remove(m)
		}
	}
	return nil
}

func (b *build) initramfs(ctx context.Context) error {
	if err := b.chroot(ctx, "update-initramfs", "-c", "-k", b.kernelVersion); err != nil {
		return err
	}
	// Kernel and initrd live outside the root filesystem: the VMM loads them.
	for src, dst := range map[string]string{
		"boot/vmlinuz-" + b.kernelVersion:    fileKernel,
		"boot/initrd.img-" + b.kernelVersion: fileInitrd,
	} {
		if err := os.Rename(b.path(src), filepath.Join(b.dir, dst)); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(b.dir, dst), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *build) vmlinux(ctx context.Context) error {
	return ExtractVmlinux(ctx, filepath.Join(b.dir, fileKernel), filepath.Join(b.dir, fileVmlinux))
}

func (b *build) filesystem(ctx context.Context) error {
	used, err := diskUsage(b.root)
	if err != nil {
		return fmt.Errorf("measure root: %w", err)
	}
	// Content plus a quarter for ext4 metadata and 256 MiB to grow into,
	// or the recipe's size when that is larger. The file is sparse.
	needMiB := int(used*5/4>>20) + 256
	sizeMiB := max(b.recipe.RootFSSizeMiB, needMiB)
	b.advance(0.1, fmt.Sprintf("root content %d MiB, filesystem %d MiB", used>>20, sizeMiB))
	return mkfs(ctx, b.run, filepath.Join(b.dir, fileRootFS), "banger-root", b.root, sizeMiB, "0:0")
}

// workSeed builds the user's home as its own small filesystem: the files
// of /etc/skel and an empty ~/.ssh, owned by the user.
func (b *build) workSeed(ctx context.Context) error {
	staging := filepath.Join(b.dir, "work")
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return err
	}
	skel, err := os.ReadDir(b.path("etc/skel"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range skel {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if err := copyFile(b.path("etc/skel", e.Name()), filepath.Join(staging, e.Name()), info.Mode().Perm()); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(staging, ".ssh"), 0o700); err != nil {
		return err
	}
	if err := filepath.WalkDir(staging, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, guestUID, guestUID)
	}); err != nil {
		return err
	}
	uidgid := fmt.Sprintf("%d:%d", guestUID, guestUID)
	if err := mkfs(ctx, b.run, filepath.Join(b.dir, fileWorkSeed), "banger-work", staging, b.recipe.WorkSeedSizeMiB, uidgid); err != nil {
		return err
	}
	return os.RemoveAll(staging)
}

// mkfs makes a sparse ext4 image of sizeMiB populated from dir, without mounting.
func mkfs(ctx context.Context, run *runner, image, label, dir string, sizeMiB int, rootOwner string) error {
	f, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return run.run(ctx, "mkfs.ext4", "-q", "-F", "-L", label, "-m", "0",
		"-E", "root_owner="+rootOwner, "-d", dir, image)
}

func (b *build) path(rel ...string) string {
	return filepath.Join(append([]string{b.root}, rel...)...)
}

// writeFile replaces path (never following a symlink planted there).
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode) // WriteFile's mode is subject to the umask
}

func symlink(target, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Symlink(target, path)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// diskUsage sums the allocated size of everything under dir.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += (info.Size() + 4095) &^ 4095
		return nil
	})
	return total, err
}
