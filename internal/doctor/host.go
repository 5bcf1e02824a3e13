package doctor

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// DiskSpace is what Statfs reports for one file system.
type DiskSpace struct {
	AvailBytes int64 // free to an unprivileged user
	TotalBytes int64
}

// Host is every host-dependent operation the checks use. It is a struct of
// funcs rather than an interface so a test fake can be a few closures over
// maps; RealHost fills each field with the operating system's version.
type Host struct {
	Stat     func(path string) (fs.FileInfo, error)
	ReadFile func(path string) ([]byte, error)
	// OpenRW opens path for reading and writing and closes it again; it
	// proves a device node is usable, not just present.
	OpenRW func(path string) error
	// ProbeWrite creates a temporary file in dir and removes it.
	ProbeWrite func(dir string) error
	LookPath   func(file string) (string, error)
	Statfs     func(path string) (DiskSpace, error)
	Geteuid    func() int
	// Output runs a short command (a "--version" query) and returns its
	// combined output. It must stop the command when ctx ends.
	Output   func(ctx context.Context, name string, args ...string) (string, error)
	ProbeKVM func() vmm.KVMProbe
}

// RealHost returns a Host backed by the operating system.
func RealHost() Host {
	return Host{
		Stat:       os.Stat,
		ReadFile:   os.ReadFile,
		OpenRW:     openRW,
		ProbeWrite: probeWrite,
		LookPath:   lookPathWithSbin,
		Statfs:     statfs,
		Geteuid:    os.Geteuid,
		Output:     output,
		ProbeKVM:   vmm.ProbeKVM,
	}
}

func openRW(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".banger-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("probe"))
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(werr, cerr, rerr)
}

// sbinDirs are searched after PATH: a non-root user's PATH on Debian lacks
// them, yet mkfs.ext4 and debootstrap live there and the daemon (root) will
// find them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

func lookPathWithSbin(file string) (string, error) {
	path, err := exec.LookPath(file)
	if err == nil || filepath.Base(file) != file {
		return path, err
	}
	for _, dir := range sbinDirs {
		if p, serr := exec.LookPath(filepath.Join(dir, file)); serr == nil {
			return p, nil
		}
	}
	return "", err
}

func statfs(path string) (DiskSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskSpace{}, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	bsize := st.Bsize
	return DiskSpace{
		AvailBytes: int64(st.Bavail) * bsize,
		TotalBytes: int64(st.Blocks) * bsize,
	}, nil
}

// maxOutput bounds what a version command may return; the first line is
// all that is used.
const maxOutput = 64 << 10

type cappedBuffer struct{ bytes.Buffer }

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out cappedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// A child that keeps the pipes open after being killed must not hold
	// the check past its deadline.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	return out.String(), err
}
