package doctor

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

func runFake(t *testing.T, f *fakeHost, opts Options) api.DoctorReport {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/banger"
	}
	return New(opts, f.host()).Run(context.Background())
}

func find(t *testing.T, r api.DoctorReport, name string) api.Check {
	t.Helper()
	for _, ch := range r.Checks {
		if ch.Name == name {
			return ch
		}
	}
	t.Fatalf("report has no check %q: %+v", name, r.Checks)
	return api.Check{}
}

func TestHealthyHostAllOK(t *testing.T) {
	r := runFake(t, healthyHost(), Options{Bridge: "banger0"})
	for _, ch := range r.Checks {
		if ch.Status != api.CheckOK {
			t.Errorf("%s: status %s (%s), want ok", ch.Name, ch.Status, ch.Message)
		}
		if ch.Message == "" {
			t.Errorf("%s: empty message", ch.Name)
		}
	}
}

var (
	errPerm = &fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}
	errRO   = &fs.PathError{Op: "open", Path: "x", Err: syscall.EROFS}
)

func TestChecks(t *testing.T) {
	const gib = int64(1) << 30
	noModules := func(f *fakeHost) {
		delete(f.dirs, "/sys/module/bridge")
		delete(f.dirs, "/sys/module/nf_tables")
	}
	noKernelInfo := func(f *fakeHost) {
		noModules(f)
		delete(f.files, "/proc/config.gz")
	}
	pvm := vmm.KVMProbe{DevicePresent: true, PVM: true, Reason: "host KVM is kvm_pvm"}

	tests := []struct {
		name   string
		check  string
		opts   Options
		mutate func(f *fakeHost)
		want   api.CheckStatus
		substr string
	}{
		{name: "root ok", check: "root", want: api.CheckOK, substr: "running as root"},
		{name: "root not root", check: "root", mutate: func(f *fakeHost) { f.euid = 1000 }, want: api.CheckFail, substr: "uid 1000"},

		{name: "state dir exists", check: "state-dir", want: api.CheckOK, substr: "exists and is writable"},
		{name: "state dir creatable", check: "state-dir", opts: Options{StateDir: "/var/lib/banger-new/sub"}, want: api.CheckOK, substr: "can be created under /var/lib"},
		{name: "state dir read-only", check: "state-dir", mutate: func(f *fakeHost) { f.readOnly = map[string]error{"/var/lib/banger": errRO} }, want: api.CheckFail, substr: "not writable"},
		{name: "state dir parent read-only", check: "state-dir", opts: Options{StateDir: "/var/lib/new"}, mutate: func(f *fakeHost) { f.readOnly = map[string]error{"/var/lib": errPerm} }, want: api.CheckFail, substr: "/var/lib is not writable"},
		{name: "state dir is a file", check: "state-dir", opts: Options{StateDir: "/var/lib/banger.db"}, mutate: func(f *fakeHost) { f.files["/var/lib/banger.db"] = nil }, want: api.CheckFail, substr: "not a directory"},
		{name: "state dir unreadable", check: "state-dir", mutate: func(f *fakeHost) { f.statErr = map[string]error{"/var/lib/banger": errPerm} }, want: api.CheckFail, substr: "cannot inspect"},

		{name: "disk plenty", check: "disk-space", want: api.CheckOK, substr: "100.0 GiB free of 200.0 GiB"},
		{name: "disk low", check: "disk-space", mutate: func(f *fakeHost) { f.space.AvailBytes = 5 * gib }, want: api.CheckWarn, substr: "below the recommended 10.0 GiB"},
		{name: "disk full", check: "disk-space", mutate: func(f *fakeHost) { f.space.AvailBytes = 1 * gib }, want: api.CheckFail, substr: "will not fit"},
		{name: "disk custom threshold warn", check: "disk-space", opts: Options{MinFreeBytes: 20 * gib}, mutate: func(f *fakeHost) { f.space.AvailBytes = 15 * gib }, want: api.CheckWarn, substr: "recommended 20.0 GiB"},
		{name: "disk small custom threshold", check: "disk-space", opts: Options{MinFreeBytes: gib}, mutate: func(f *fakeHost) { f.space.AvailBytes = 3 * gib / 2 }, want: api.CheckOK, substr: "1.5 GiB free"},
		{name: "disk of missing dir uses parent", check: "disk-space", opts: Options{StateDir: "/var/lib/none"}, want: api.CheckOK, substr: "file system of /var/lib"},
		{name: "disk statfs error", check: "disk-space", mutate: func(f *fakeHost) { f.spaceErr = syscall.EIO }, want: api.CheckFail, substr: "cannot read free space"},

		{name: "kvm usable", check: "kvm", want: api.CheckOK, substr: "hardware acceleration"},
		{name: "kvm pvm", check: "kvm", mutate: func(f *fakeHost) { f.kvm = pvm }, want: api.CheckWarn, substr: "guests will run under TCG emulation (slow)"},
		{name: "kvm absent", check: "kvm", mutate: func(f *fakeHost) { f.kvm = vmm.KVMProbe{} }, want: api.CheckWarn, substr: "missing, so guests will run under TCG emulation (slow)"},
		{name: "kvm unopenable", check: "kvm", mutate: func(f *fakeHost) { f.kvm = vmm.KVMProbe{DevicePresent: true, Reason: "permission denied"} }, want: api.CheckWarn, substr: "not usable"},

		{name: "tun ok", check: "tun", want: api.CheckOK, substr: "opens"},
		{name: "tun missing", check: "tun", mutate: func(f *fakeHost) { delete(f.files, "/dev/net/tun") }, want: api.CheckFail, substr: "missing"},
		{name: "tun unopenable", check: "tun", mutate: func(f *fakeHost) { f.openErr = map[string]error{"/dev/net/tun": errPerm} }, want: api.CheckFail, substr: "cannot be opened"},

		{name: "bridge exists", check: "bridge", opts: Options{Bridge: "banger0"}, want: api.CheckOK, substr: "bridge banger0 exists"},
		{name: "bridge name is not a bridge", check: "bridge", opts: Options{Bridge: "eth0"}, mutate: func(f *fakeHost) { f.dirs["/sys/class/net/eth0"] = true }, want: api.CheckFail, substr: "not a bridge"},
		{name: "bridge name invalid", check: "bridge", opts: Options{Bridge: "../../etc"}, want: api.CheckFail, substr: "not a valid interface name"},
		{name: "bridge module loaded", check: "bridge", opts: Options{Bridge: "br-new"}, want: api.CheckOK, substr: "/sys/module/bridge"},
		{name: "bridge in proc modules", check: "bridge", mutate: func(f *fakeHost) {
			noKernelInfo(f)
			f.files["/proc/modules"] = []byte("stp 16384 1 bridge, Live 0x0\nbridge 311296 0 - Live 0x0\n")
		}, want: api.CheckOK, substr: "module bridge loaded"},
		{name: "bridge built in", check: "bridge", mutate: noModules, want: api.CheckOK, substr: "CONFIG_BRIDGE=y"},
		{name: "bridge not in kernel", check: "bridge", mutate: func(f *fakeHost) {
			noModules(f)
			f.files["/proc/config.gz"] = gz("# CONFIG_BRIDGE is not set\n")
		}, want: api.CheckFail, substr: "not in this kernel"},
		{name: "bridge unknown", check: "bridge", mutate: noKernelInfo, want: api.CheckWarn, substr: "unknown"},

		{name: "nftables module loaded", check: "nftables", want: api.CheckOK, substr: "nft command is installed (optional: banger speaks netlink)"},
		{name: "nftables built in without nft cli", check: "nftables", mutate: func(f *fakeHost) {
			noModules(f)
			delete(f.bins, "nft")
		}, want: api.CheckOK, substr: "built into the kernel (CONFIG_NF_TABLES=y in /proc/config.gz); the nft command is not installed; it is optional"},
		{name: "nftables from boot config", check: "nftables", mutate: func(f *fakeHost) {
			noKernelInfo(f)
			f.files["/proc/sys/kernel/osrelease"] = []byte("6.1.0-9-amd64\n")
			f.files["/boot/config-6.1.0-9-amd64"] = []byte("CONFIG_NF_TABLES=m\nCONFIG_NFT_NAT=m\nCONFIG_NFT_MASQ=m\n")
		}, want: api.CheckOK, substr: "CONFIG_NF_TABLES=m in /boot/config-6.1.0-9-amd64"},
		{name: "nftables not in kernel", check: "nftables", mutate: func(f *fakeHost) {
			noModules(f)
			f.files["/proc/config.gz"] = gz("# CONFIG_NF_TABLES is not set\n")
		}, want: api.CheckFail, substr: "no NAT egress"},
		{name: "nftables without masquerade", check: "nftables", mutate: func(f *fakeHost) {
			f.files["/proc/config.gz"] = gz("CONFIG_NF_TABLES=y\nCONFIG_NFT_NAT=y\n# CONFIG_NFT_MASQ is not set\n")
		}, want: api.CheckFail, substr: "CONFIG_NFT_MASQ is not set"},
		{name: "nftables unknown", check: "nftables", mutate: noKernelInfo, want: api.CheckWarn, substr: "unknown"},

		{name: "loop ok", check: "loop", want: api.CheckOK, substr: "present and opens"},
		{name: "loop unopenable", check: "loop", mutate: func(f *fakeHost) { f.openErr = map[string]error{"/dev/loop-control": errPerm} }, want: api.CheckWarn, substr: "cannot be opened"},
		{name: "loop missing", check: "loop", mutate: func(f *fakeHost) { delete(f.files, "/dev/loop-control") }, want: api.CheckWarn, substr: "dm-snapshot overlay is unavailable"},

		{name: "dm ok", check: "device-mapper", want: api.CheckOK, substr: "opens: dm-snapshot overlays available"},
		{name: "dm missing", check: "device-mapper", mutate: func(f *fakeHost) { delete(f.files, "/dev/mapper/control") }, want: api.CheckWarn,
			substr: "dm-snapshot overlay unavailable; banger will use qcow2 (QEMU) or reflink/copy"},
		{name: "dm node without driver", check: "device-mapper", mutate: func(f *fakeHost) {
			f.openErr = map[string]error{"/dev/mapper/control": &fs.PathError{Op: "open", Path: "/dev/mapper/control", Err: syscall.ENODEV}}
		}, want: api.CheckWarn, substr: "cannot be opened (open /dev/mapper/control: no such device): dm-snapshot overlay unavailable"},

		{name: "qemu ok", check: "qemu", want: api.CheckOK, substr: "/usr/bin/qemu-system-x86_64: QEMU emulator version 7.2.0"},
		{name: "qemu custom binary", check: "qemu", opts: Options{QEMUBinary: "/opt/qemu/bin/qemu-system-x86_64"}, mutate: func(f *fakeHost) {
			f.bins["/opt/qemu/bin/qemu-system-x86_64"] = "/opt/qemu/bin/qemu-system-x86_64"
			f.output["/opt/qemu/bin/qemu-system-x86_64"] = "QEMU emulator version 9.0.0\n"
		}, want: api.CheckOK, substr: "version 9.0.0"},
		{name: "qemu version fails", check: "qemu", mutate: func(f *fakeHost) {
			f.runErr = map[string]error{"/usr/bin/qemu-system-x86_64": errors.New("exit status 1")}
		}, want: api.CheckWarn, substr: "version is unreadable"},
		{name: "qemu missing firecracker works", check: "qemu", mutate: func(f *fakeHost) { delete(f.bins, "qemu-system-x86_64") }, want: api.CheckWarn, substr: "firecracker is used"},
		{name: "qemu missing but configured", check: "qemu", opts: Options{VMM: "qemu"}, mutate: func(f *fakeHost) { delete(f.bins, "qemu-system-x86_64") }, want: api.CheckFail, substr: "configured VMM"},
		{name: "qemu missing no firecracker", check: "qemu", mutate: func(f *fakeHost) {
			delete(f.bins, "qemu-system-x86_64")
			delete(f.bins, "firecracker")
		}, want: api.CheckFail, substr: "no VMM backend"},
		{name: "qemu missing firecracker without kvm", check: "qemu", mutate: func(f *fakeHost) {
			delete(f.bins, "qemu-system-x86_64")
			f.kvm = pvm
		}, want: api.CheckFail, substr: "no VMM backend"},

		{name: "qemu-img ok", check: "qemu-img", want: api.CheckOK, substr: "qemu-img version 7.2.0"},
		{name: "qemu-img missing", check: "qemu-img", mutate: func(f *fakeHost) { delete(f.bins, "qemu-img") }, want: api.CheckWarn, substr: "qcow2 overlays unavailable"},
		{name: "qemu-img version empty", check: "qemu-img", mutate: func(f *fakeHost) { f.output["/usr/bin/qemu-img"] = "\n" }, want: api.CheckWarn, substr: "printed nothing"},

		{name: "e2fsprogs ok", check: "e2fsprogs", want: api.CheckOK, substr: "resize2fs found"},
		{name: "e2fsprogs missing", check: "e2fsprogs", mutate: func(f *fakeHost) {
			delete(f.bins, "resize2fs")
			delete(f.bins, "e2fsck")
		}, want: api.CheckFail, substr: "e2fsck, resize2fs not found"},

		{name: "debootstrap ok", check: "debootstrap", want: api.CheckOK, substr: "/usr/sbin/debootstrap"},
		{name: "debootstrap missing", check: "debootstrap", mutate: func(f *fakeHost) { delete(f.bins, "debootstrap") }, want: api.CheckWarn, substr: "image build"},

		{name: "firecracker ok", check: "firecracker", want: api.CheckOK, substr: "Firecracker v1.10.1 (supported: 1.10 and later)"},
		{name: "firecracker too old", check: "firecracker", mutate: func(f *fakeHost) { f.output["/usr/local/bin/firecracker"] = "Firecracker v1.9.0\n" }, want: api.CheckWarn, substr: "older than banger supports"},
		{name: "firecracker too old but configured", check: "firecracker", opts: Options{VMM: "firecracker"}, mutate: func(f *fakeHost) { f.output["/usr/local/bin/firecracker"] = "Firecracker v1.9.0\n" }, want: api.CheckFail, substr: "supports Firecracker 1.10 and later"},
		{name: "jailer ok", check: "jailer", want: api.CheckOK, substr: "Jailer v1.10.1"},
		{name: "jailer missing", check: "jailer", mutate: func(f *fakeHost) { delete(f.bins, "jailer") }, want: api.CheckWarn, substr: "cannot run jailed"},
		{name: "jailer other release", check: "jailer", mutate: func(f *fakeHost) { f.output["/usr/local/bin/jailer"] = "Jailer v1.11.0\n" }, want: api.CheckWarn, substr: "same release"},
		{name: "jailer without firecracker", check: "jailer", mutate: func(f *fakeHost) { delete(f.bins, "firecracker") }, want: api.CheckOK, substr: "not checked"},
		{name: "firecracker missing", check: "firecracker", mutate: func(f *fakeHost) { delete(f.bins, "firecracker") }, want: api.CheckWarn, substr: "firecracker backend unavailable; QEMU is used"},
		{name: "firecracker missing but configured", check: "firecracker", opts: Options{VMM: "firecracker"}, mutate: func(f *fakeHost) { delete(f.bins, "firecracker") }, want: api.CheckFail, substr: "configured VMM"},
		{name: "firecracker without kvm", check: "firecracker", mutate: func(f *fakeHost) { f.kvm = pvm }, want: api.CheckWarn, substr: "QEMU is used"},
		{name: "firecracker configured without kvm", check: "firecracker", opts: Options{VMM: "firecracker"}, mutate: func(f *fakeHost) { f.kvm = pvm }, want: api.CheckFail, substr: "cannot run"},
		{name: "firecracker version fails", check: "firecracker", mutate: func(f *fakeHost) { delete(f.output, "/usr/local/bin/firecracker") }, want: api.CheckWarn, substr: "version is unreadable"},

		{name: "cgroup v2", check: "cgroup-v2", want: api.CheckOK, substr: "unified"},
		{name: "cgroup hybrid", check: "cgroup-v2", mutate: func(f *fakeHost) {
			delete(f.files, "/sys/fs/cgroup/cgroup.controllers")
			f.files["/sys/fs/cgroup/unified/cgroup.controllers"] = nil
		}, want: api.CheckWarn, substr: "hybrid"},
		{name: "cgroup none", check: "cgroup-v2", mutate: func(f *fakeHost) { delete(f.files, "/sys/fs/cgroup/cgroup.controllers") }, want: api.CheckWarn, substr: "not mounted"},

		{name: "forwarding on", check: "ip-forward", want: api.CheckOK, substr: "is on"},
		{name: "forwarding off is informational", check: "ip-forward", mutate: func(f *fakeHost) { f.files["/proc/sys/net/ipv4/ip_forward"] = []byte("0\n") }, want: api.CheckOK, substr: "is off"},
		{name: "forwarding unreadable", check: "ip-forward", mutate: func(f *fakeHost) { delete(f.files, "/proc/sys/net/ipv4/ip_forward") }, want: api.CheckWarn, substr: "cannot read"},
		{name: "forwarding garbage", check: "ip-forward", mutate: func(f *fakeHost) { f.files["/proc/sys/net/ipv4/ip_forward"] = []byte("yes") }, want: api.CheckWarn, substr: "unexpected"},

		{name: "resolved running", check: "systemd-resolved", want: api.CheckOK, substr: "banger.internal"},
		{name: "resolved stopped", check: "systemd-resolved", mutate: func(f *fakeHost) { delete(f.files, "/run/systemd/resolve/io.systemd.Resolve") }, want: api.CheckWarn,
			substr: "systemd-resolved is not running: VM names won't resolve on the host via <vm>.banger.internal; `banger ssh-config` still works"},
		{name: "resolved without systemd", check: "systemd-resolved", mutate: func(f *fakeHost) {
			delete(f.files, "/run/systemd/resolve/io.systemd.Resolve")
			delete(f.dirs, "/run/systemd/system")
		}, want: api.CheckWarn, substr: "systemd is not PID 1"},
	}

	seen := map[string]map[api.CheckStatus]bool{}
	for _, tt := range tests {
		if seen[tt.check] == nil {
			seen[tt.check] = map[api.CheckStatus]bool{}
		}
		seen[tt.check][tt.want] = true
		t.Run(tt.name, func(t *testing.T) {
			f := healthyHost()
			if tt.mutate != nil {
				tt.mutate(f)
			}
			got := find(t, runFake(t, f, tt.opts), tt.check)
			if got.Status != tt.want {
				t.Fatalf("status = %s (%q), want %s", got.Status, got.Message, tt.want)
			}
			if !strings.Contains(got.Message, tt.substr) {
				t.Errorf("message %q does not contain %q", got.Message, tt.substr)
			}
			if got.Status != api.CheckOK && got.Fix == "" {
				t.Errorf("non-ok check has no fix hint: %q", got.Message)
			}
		})
	}

	// Every check must have its ok path and at least one finding covered.
	for _, name := range New(Options{}, healthyHost().host()).Names() {
		st := seen[name]
		if !st[api.CheckOK] || (!st[api.CheckWarn] && !st[api.CheckFail]) {
			t.Errorf("check %q: table covers only %v", name, st)
		}
	}
}

func TestParseKernelConfig(t *testing.T) {
	got := parseKernelConfig([]byte("#\n# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=\"x y\"\nNOT_CONFIG=y\n"))
	want := map[string]string{"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_S": "x y"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestCorruptConfigGzFallsBackToBoot(t *testing.T) {
	f := healthyHost()
	f.files["/proc/config.gz"] = []byte("not gzip")
	f.files["/proc/sys/kernel/osrelease"] = []byte("6.1.0\n")
	f.files["/boot/config-6.1.0"] = []byte("CONFIG_BRIDGE=m\n")
	cfg := readKernelConfig(f.host())
	if cfg.source != "/boot/config-6.1.0" || cfg.values["CONFIG_BRIDGE"] != "m" {
		t.Fatalf("got %+v", cfg)
	}
}
