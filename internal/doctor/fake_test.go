package doctor

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

type fakeInfo struct {
	name string
	dir  bool
}

func (f fakeInfo) Name() string { return f.name }
func (f fakeInfo) Size() int64  { return 0 }
func (f fakeInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.dir }
func (f fakeInfo) Sys() any           { return nil }

// fakeHost is an in-memory host. Its zero maps mean "nothing there".
type fakeHost struct {
	dirs     map[string]bool   // existing directories
	files    map[string][]byte // existing files (device nodes included)
	statErr  map[string]error  // Stat fails with this instead
	openErr  map[string]error  // OpenRW fails
	readOnly map[string]error  // ProbeWrite fails for these dirs
	bins     map[string]string // LookPath name -> path
	output   map[string]string // binary path -> --version output
	runErr   map[string]error
	space    DiskSpace
	spaceErr error
	euid     int
	kvm      vmm.KVMProbe
	// block makes Stat of a path wait until the channel is closed.
	block map[string]chan struct{}
}

// healthyHost is a host on which every check passes.
func healthyHost() *fakeHost {
	return &fakeHost{
		dirs: map[string]bool{"/": true, "/var": true, "/var/lib": true, "/var/lib/banger": true,
			"/sys/module/bridge": true, "/sys/module/nf_tables": true, "/run/systemd/system": true,
			"/sys/class/net/banger0": true, "/sys/class/net/banger0/bridge": true},
		files: map[string][]byte{
			"/dev/net/tun": nil, "/dev/loop-control": nil, "/dev/mapper/control": nil,
			"/sys/fs/cgroup/cgroup.controllers":       []byte("cpu memory"),
			"/run/systemd/resolve/io.systemd.Resolve": nil,
			"/proc/sys/net/ipv4/ip_forward":           []byte("1\n"),
			"/proc/config.gz":                         gz(kconfigFull),
		},
		bins: map[string]string{
			"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "qemu-img": "/usr/bin/qemu-img",
			"mkfs.ext4": "/usr/sbin/mkfs.ext4", "e2fsck": "/usr/sbin/e2fsck", "resize2fs": "/usr/sbin/resize2fs",
			"debootstrap": "/usr/sbin/debootstrap", "firecracker": "/usr/local/bin/firecracker", "jailer": "/usr/local/bin/jailer", "nft": "/usr/sbin/nft",
		},
		output: map[string]string{
			"/usr/bin/qemu-system-x86_64": "QEMU emulator version 7.2.0\nCopyright (c) 2003-2022\n",
			"/usr/bin/qemu-img":           "qemu-img version 7.2.0\n",
			"/usr/local/bin/firecracker":  "Firecracker v1.10.1\n\n",
			"/usr/local/bin/jailer":       "Jailer v1.10.1\n",
		},
		space: DiskSpace{AvailBytes: 100 << 30, TotalBytes: 200 << 30},
		kvm:   vmm.KVMProbe{DevicePresent: true, Usable: true},
	}
}

const kconfigFull = "CONFIG_BRIDGE=y\nCONFIG_NF_TABLES=y\nCONFIG_NFT_NAT=m\nCONFIG_NFT_MASQ=m\n# CONFIG_BLK_DEV_DM is not set\n"

func (f *fakeHost) notExist(op, p string) error {
	return &fs.PathError{Op: op, Path: p, Err: fs.ErrNotExist}
}

func (f *fakeHost) host() Host {
	return Host{
		Stat: func(p string) (fs.FileInfo, error) {
			if ch, ok := f.block[p]; ok {
				<-ch
			}
			if err := f.statErr[p]; err != nil {
				return nil, err
			}
			if f.dirs[p] {
				return fakeInfo{name: path.Base(p), dir: true}, nil
			}
			if _, ok := f.files[p]; ok {
				return fakeInfo{name: path.Base(p)}, nil
			}
			return nil, f.notExist("stat", p)
		},
		ReadFile: func(p string) ([]byte, error) {
			if data, ok := f.files[p]; ok {
				return data, nil
			}
			return nil, f.notExist("open", p)
		},
		OpenRW: func(p string) error {
			if err := f.openErr[p]; err != nil {
				return err
			}
			if _, ok := f.files[p]; !ok {
				return f.notExist("open", p)
			}
			return nil
		},
		ProbeWrite: func(dir string) error {
			if err := f.readOnly[dir]; err != nil {
				return err
			}
			if !f.dirs[dir] {
				return f.notExist("open", dir+"/probe")
			}
			return nil
		},
		LookPath: func(name string) (string, error) {
			if p, ok := f.bins[name]; ok {
				return p, nil
			}
			return "", errors.New("exec: " + name + ": executable file not found in $PATH")
		},
		Statfs: func(p string) (DiskSpace, error) {
			if !f.dirs[p] {
				return DiskSpace{}, f.notExist("statfs", p)
			}
			return f.space, f.spaceErr
		},
		Geteuid: func() int { return f.euid },
		Output: func(ctx context.Context, name string, args ...string) (string, error) {
			if len(args) != 1 || args[0] != "--version" {
				return "", errors.New("fake: unexpected args " + strings.Join(args, " "))
			}
			if err := f.runErr[name]; err != nil {
				return f.output[name], err
			}
			out, ok := f.output[name]
			if !ok {
				return "", errors.New("fake: no such command " + name)
			}
			return out, ctx.Err()
		},
		ProbeKVM: func() vmm.KVMProbe { return f.kvm },
	}
}

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}
