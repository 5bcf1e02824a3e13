package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// JailerOptions enable Firecracker's jailer (docs/jailer.md): each VM's
// Firecracker runs chrooted under ChrootBaseDir as UID:GID, in a cgroup v2
// child of ParentCgroup.
type JailerOptions struct {
	// Binary is the jailer executable; found like Firecracker when empty.
	Binary string
	// ChrootBaseDir holds the jails (default /srv/jailer).
	ChrootBaseDir string
	UID, GID      int
	// ParentCgroup is the cgroup v2 path (relative to CgroupRoot) under
	// which each VM gets a cgroup named after its Firecracker id.
	ParentCgroup string
	// CgroupRoot is the cgroup v2 mount (default /sys/fs/cgroup).
	CgroupRoot string
}

// Defaults of JailerOptions.
const (
	DefaultChrootBaseDir = "/srv/jailer"
	DefaultParentCgroup  = "banger"
	DefaultCgroupRoot    = "/sys/fs/cgroup"
)

func (j JailerOptions) withDefaults() JailerOptions {
	if j.ChrootBaseDir == "" {
		j.ChrootBaseDir = DefaultChrootBaseDir
	}
	if j.ParentCgroup == "" {
		j.ParentCgroup = DefaultParentCgroup
	}
	if j.CgroupRoot == "" {
		j.CgroupRoot = DefaultCgroupRoot
	}
	return j
}

// Paths inside the jail, as the jailed Firecracker sees them.
const (
	jailAPISocket = "/run/firecracker.socket"
	jailKernel    = "/vmlinux"
	jailInitrd    = "/initrd"
	jailDriveDir  = "/drives"
	jailLog       = "/firecracker.log"
	jailMetrics   = "/firecracker.metrics"
)

// jail describes one VM's jail on the host.
type jail struct {
	opts JailerOptions
	// Root is <base>/<exec file name>/<id>/root, the jailed "/".
	Root string
	// Cgroup is the VM's cgroup directory on the host.
	Cgroup string
}

func newJail(opts JailerOptions, firecrackerPath, fcID string) jail {
	opts = opts.withDefaults()
	return jail{
		opts:   opts,
		Root:   filepath.Join(opts.ChrootBaseDir, filepath.Base(firecrackerPath), fcID, "root"),
		Cgroup: filepath.Join(opts.CgroupRoot, opts.ParentCgroup, fcID),
	}
}

// hostPath maps a path inside the jail to the host.
func (j jail) hostPath(inJail string) string { return filepath.Join(j.Root, inJail) }

// jailerArgs is the jailer's argv (without the binary). It does not
// daemonize or use a new pid namespace, so the jailer execs Firecracker in
// place: the pid banger started is Firecracker's pid, and Firecracker's
// stdout (the guest serial console) is the one banger gave the jailer.
func jailerArgs(opts JailerOptions, firecrackerPath, fcID string) []string {
	opts = opts.withDefaults()
	return []string{
		"--id", fcID,
		"--exec-file", firecrackerPath,
		"--uid", strconv.Itoa(opts.UID),
		"--gid", strconv.Itoa(opts.GID),
		"--chroot-base-dir", opts.ChrootBaseDir,
		"--cgroup-version", "2",
		"--parent-cgroup", opts.ParentCgroup,
		"--",
		"--api-sock", jailAPISocket,
	}
}

// linkFile makes src available at dst inside the jail: a hard link for
// regular files (the jail must be on the same file system), a device node
// with the same numbers for block devices (dm-snapshot overlays). With
// chown, the jailed user gets ownership (needed for writable drives; the
// owner of a hard link is the owner of the original, so never chown shared
// image files).
func (j jail) linkFile(src, dst string, chown bool) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("jailer: %w", err)
	}
	switch {
	case fi.Mode().IsRegular():
		if err := os.Link(src, dst); err != nil {
			if errors.Is(err, unix.EXDEV) {
				return fmt.Errorf("jailer: cannot hard-link %s into %s: they are on different file systems; put the jailer base directory on the file system of banger's state directory", src, j.Root)
			}
			return fmt.Errorf("jailer: link %s: %w", src, err)
		}
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		st, ok := fi.Sys().(*unix.Stat_t)
		if !ok {
			return fmt.Errorf("jailer: cannot read device numbers of %s", src)
		}
		if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("jailer: create device node for %s: %w", src, err)
		}
	default:
		return fmt.Errorf("jailer: %s is neither a regular file nor a block device", src)
	}
	if chown {
		if err := os.Lchown(dst, j.opts.UID, j.opts.GID); err != nil {
			return fmt.Errorf("jailer: chown %s: %w", dst, err)
		}
	}
	return nil
}

// prepare creates the jail root with the API socket directory and the
// log files, owned by the jailed user. The jailer itself chowns the root.
func (j jail) prepare() error {
	if err := os.MkdirAll(j.Root, 0o755); err != nil {
		return fmt.Errorf("jailer: create %s: %w", j.Root, err)
	}
	run := j.hostPath(filepath.Dir(jailAPISocket))
	if err := os.MkdirAll(run, 0o750); err != nil {
		return fmt.Errorf("jailer: create %s: %w", run, err)
	}
	if err := os.Chown(run, j.opts.UID, j.opts.GID); err != nil {
		return fmt.Errorf("jailer: chown %s: %w", run, err)
	}
	for _, f := range []string{jailLog, jailMetrics} {
		p := j.hostPath(f)
		fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("jailer: create %s: %w", p, err)
		}
		fh.Close()
		if err := os.Chown(p, j.opts.UID, j.opts.GID); err != nil {
			return fmt.Errorf("jailer: chown %s: %w", p, err)
		}
	}
	return nil
}

// remove deletes the jail directory (<base>/<exec>/<id>, links and device
// nodes only: originals are untouched) and the VM's cgroup, which is
// empty once Firecracker exited.
func (j jail) remove() error {
	var errs []error
	if err := os.RemoveAll(filepath.Dir(j.Root)); err != nil {
		errs = append(errs, fmt.Errorf("remove jail %s: %w", filepath.Dir(j.Root), err))
	}
	if err := unix.Rmdir(j.Cgroup); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("remove cgroup %s: %w", j.Cgroup, err))
	}
	return errors.Join(errs...)
}
