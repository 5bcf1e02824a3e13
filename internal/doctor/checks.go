package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// allChecks is the report order: privileges and storage first, then
// virtualisation, networking, disk tooling, VMM binaries, extras.
func allChecks() []check {
	return []check{
		{"root", checkRoot},
		{"state-dir", checkStateDir},
		{"disk-space", checkDiskSpace},
		{"kvm", checkKVM},
		{"tun", checkTUN},
		{"bridge", checkBridge},
		{"nftables", checkNftables},
		{"loop", checkLoop},
		{"device-mapper", checkDeviceMapper},
		{"qemu", checkQEMU},
		{"qemu-img", checkQEMUImg},
		{"e2fsprogs", checkE2fsprogs},
		{"debootstrap", checkDebootstrap},
		{"firecracker", checkFirecracker},
		{"jailer", checkJailer},
		{"cgroup-v2", checkCgroupV2},
		{"ip-forward", checkIPForward},
		{"systemd-resolved", checkResolved},
	}
}

func passed(format string, args ...any) api.Check {
	return api.Check{Status: api.CheckOK, Message: fmt.Sprintf(format, args...)}
}

func warning(fix, format string, args ...any) api.Check {
	return api.Check{Status: api.CheckWarn, Message: fmt.Sprintf(format, args...), Fix: fix}
}

func failed(fix, format string, args ...any) api.Check {
	return api.Check{Status: api.CheckFail, Message: fmt.Sprintf(format, args...), Fix: fix}
}

func (e *env) exists(path string) bool {
	_, err := e.host.Stat(path)
	return err == nil
}

func checkRoot(_ context.Context, e *env) api.Check {
	if uid := e.host.Geteuid(); uid != 0 {
		return failed("run the daemon as root: `sudo banger daemon` (or its systemd unit)",
			"running as uid %d, not root: the daemon needs root for TAP devices, NAT and loop devices", uid)
	}
	return passed("running as root")
}

// existingAncestor returns the nearest existing directory at or above dir.
func (e *env) existingAncestor(dir string) (string, fs.FileInfo, error) {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := e.host.Stat(p)
		if err == nil {
			return p, fi, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return p, nil, err
		}
	}
}

func checkStateDir(_ context.Context, e *env) api.Check {
	dir := e.opts.StateDir
	fix := fmt.Sprintf("run as root, or make %s a writable directory (`sudo install -d -m 0700 %s`), or choose another state dir", dir, dir)
	base, fi, err := e.existingAncestor(dir)
	if err != nil {
		return failed(fix, "cannot inspect %s: %v", base, err)
	}
	if !fi.IsDir() {
		return failed(fix, "%s exists but is not a directory", base)
	}
	if err := e.host.ProbeWrite(base); err != nil {
		return failed(fix, "%s is not writable: %v", base, err)
	}
	if base != filepath.Clean(dir) {
		return passed("%s does not exist yet; it can be created under %s", dir, base)
	}
	return passed("%s exists and is writable", dir)
}

func checkDiskSpace(_ context.Context, e *env) api.Check {
	base, _, err := e.existingAncestor(e.opts.StateDir)
	if err != nil {
		return failed("make the state dir's parent readable", "cannot find the file system of %s: %v", e.opts.StateDir, err)
	}
	space, err := e.host.Statfs(base)
	if err != nil {
		return failed("check that the state dir is on a mounted, healthy file system", "cannot read free space of %s: %v", base, err)
	}
	failBelow := min(failFreeBytes, e.opts.MinFreeBytes)
	msg := fmt.Sprintf("%s free of %s on the file system of %s", formatBytes(space.AvailBytes), formatBytes(space.TotalBytes), base)
	fix := fmt.Sprintf("free space with `banger vm delete` / `banger image delete`, or move the state dir to a larger file system (want at least %s)", formatBytes(e.opts.MinFreeBytes))
	switch {
	case space.AvailBytes < failBelow:
		return failed(fix, "%s: below %s, VM disks will not fit", msg, formatBytes(failBelow))
	case space.AvailBytes < e.opts.MinFreeBytes:
		return warning(fix, "%s: below the recommended %s", msg, formatBytes(e.opts.MinFreeBytes))
	}
	return passed("%s", msg)
}

func formatBytes(n int64) string {
	const gib = 1 << 30
	if n >= gib {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

func checkKVM(_ context.Context, e *env) api.Check {
	p := e.kvm()
	switch {
	case p.Usable:
		return passed("/dev/kvm is usable: guests run with hardware acceleration")
	case p.PVM:
		return warning("run banger on bare metal or in a VM with nested VMX/SVM virtualisation (not PVM) for hardware acceleration",
			"guests will run under TCG emulation (slow): %s", p.Reason)
	case !p.DevicePresent:
		return warning("`modprobe kvm_intel` (or kvm_amd) and enable VT-x/AMD-V in the firmware; inside a VM, enable nested virtualisation",
			"/dev/kvm is missing, so guests will run under TCG emulation (slow)")
	default:
		return warning("run the daemon as root, or give its user access to /dev/kvm (`usermod -aG kvm USER`)",
			"/dev/kvm is present but not usable, so guests will run under TCG emulation (slow): %s", p.Reason)
	}
}

func checkTUN(_ context.Context, e *env) api.Check {
	const dev = "/dev/net/tun"
	if !e.exists(dev) {
		return failed("`modprobe tun` (and `mkdir -p /dev/net && mknod /dev/net/tun c 10 200` if udev does not create it)",
			"%s is missing: VMs cannot get TAP network devices", dev)
	}
	if err := e.host.OpenRW(dev); err != nil {
		return failed("run the daemon as root; in a container, allow the device (character 10:200) and CAP_NET_ADMIN",
			"%s exists but cannot be opened: %v", dev, err)
	}
	return passed("%s is present and opens", dev)
}

// validIfName reports whether name can be a Linux interface name, which
// also keeps it from escaping /sys/class/net.
func validIfName(name string) bool {
	return name != "" && len(name) < 16 && name != "." && name != ".." &&
		!strings.ContainsAny(name, "/: \t\n")
}

func checkBridge(_ context.Context, e *env) api.Check {
	if br := e.opts.Bridge; br != "" {
		if !validIfName(br) {
			return failed("set the bridge to a name of at most 15 characters without '/', ':' or spaces",
				"bridge name %q is not a valid interface name", br)
		}
		if e.exists("/sys/class/net/" + br) {
			if e.exists("/sys/class/net/" + br + "/bridge") {
				return passed("bridge %s exists", br)
			}
			return failed(fmt.Sprintf("remove it (`ip link delete %s`) or configure another bridge name", br),
				"%s exists but is not a bridge", br)
		}
	}
	state, how := e.feature("bridge", "CONFIG_BRIDGE")
	switch state {
	case supportPresent:
		return passed("kernel bridge support %s", how)
	case supportAbsent:
		return failed("use a kernel with CONFIG_BRIDGE (any distribution kernel has it)", "kernel bridge support is %s", how)
	}
	return warning("`modprobe bridge`", "kernel bridge support is unknown: %s", how)
}

func checkNftables(_ context.Context, e *env) api.Check {
	cli := "the nft command is not installed; it is optional, since banger speaks netlink (`apt-get install nftables` to inspect rules)"
	if _, err := e.host.LookPath("nft"); err == nil {
		cli = "the nft command is installed (optional: banger speaks netlink)"
	}
	state, how := e.feature("nf_tables", "CONFIG_NF_TABLES")
	switch state {
	case supportAbsent:
		return failed("use a kernel with CONFIG_NF_TABLES, CONFIG_NFT_NAT and CONFIG_NFT_MASQ", "nftables is %s: guests get no NAT egress; %s", how, cli)
	case supportUnknown:
		return warning("`modprobe nf_tables nft_nat nft_masq`", "nftables support is unknown: %s; %s", how, cli)
	}
	// NAT needs the nat and masquerade expressions too; only the kernel
	// config can tell before they are first used.
	if cfg := e.kernelConfig(); cfg.values != nil {
		var missing []string
		for _, key := range []string{"CONFIG_NFT_NAT", "CONFIG_NFT_MASQ"} {
			if v := cfg.values[key]; v != "y" && v != "m" {
				missing = append(missing, key)
			}
		}
		if len(missing) > 0 {
			return failed("use a kernel with "+strings.Join(missing, " and "),
				"nftables is %s, but %s is not set: guests get no NAT egress; %s", how, strings.Join(missing, ", "), cli)
		}
	}
	return passed("nftables %s; %s", how, cli)
}

func checkLoop(_ context.Context, e *env) api.Check {
	const dev = "/dev/loop-control"
	const effect = "no loop devices, so the dm-snapshot overlay is unavailable; banger will use qcow2 (QEMU) or reflink/copy"
	if !e.exists(dev) {
		return warning("`modprobe loop`", "%s is missing: %s", dev, effect)
	}
	if err := e.host.OpenRW(dev); err != nil {
		return warning("`modprobe loop`, and run the daemon as root", "%s exists but cannot be opened (%v): %s", dev, err, effect)
	}
	return passed("%s is present and opens", dev)
}

// checkDeviceMapper opens the control node rather than trusting its
// presence: dmsetup creates the node even on kernels without
// device-mapper, where opening it fails with ENODEV.
func checkDeviceMapper(_ context.Context, e *env) api.Check {
	const dev = "/dev/mapper/control"
	const effect = "dm-snapshot overlay unavailable; banger will use qcow2 (QEMU) or reflink/copy"
	const fix = "`modprobe dm_mod dm_snapshot` (kernel CONFIG_BLK_DEV_DM and CONFIG_DM_SNAPSHOT)"
	if !e.exists(dev) {
		return warning(fix, "%s is missing: %s", dev, effect)
	}
	if err := e.host.OpenRW(dev); err != nil {
		return warning(fix, "%s exists but cannot be opened (%v): %s", dev, err, effect)
	}
	return passed("%s opens: dm-snapshot overlays available", dev)
}

// version runs `path --version` and returns its first line.
func (e *env) version(ctx context.Context, path string) (string, error) {
	out, err := e.host.Output(ctx, path, "--version")
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("`%s --version` failed: %v: %s", path, err, firstLine(out))
	}
	line := firstLine(out)
	if line == "" {
		return "", fmt.Errorf("`%s --version` printed nothing", path)
	}
	return line, nil
}

func firstLine(s string) string {
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 120 {
				line = line[:120] + "..."
			}
			return line
		}
	}
	return ""
}

// firecrackerCanRun reports whether the Firecracker backend is usable at
// all: the binary exists and KVM runs ordinary guests.
func (e *env) firecrackerCanRun() bool {
	_, err := e.host.LookPath(e.opts.FirecrackerBinary)
	return err == nil && e.kvm().Usable
}

func checkQEMU(ctx context.Context, e *env) api.Check {
	bin := e.opts.QEMUBinary
	path, err := e.host.LookPath(bin)
	if err != nil {
		fix := "`apt-get install qemu-system-x86`, or set the QEMU binary path in banger's config"
		switch {
		case e.opts.VMM == "qemu":
			return failed(fix, "%s not found, but QEMU is the configured VMM", bin)
		case e.firecrackerCanRun():
			return warning(fix, "%s not found: QEMU backend unavailable; firecracker is used", bin)
		}
		return failed(fix, "%s not found and firecracker cannot run here: no VMM backend is available", bin)
	}
	v, err := e.version(ctx, path)
	if err != nil {
		return warning("reinstall QEMU (`apt-get install --reinstall qemu-system-x86`)", "%s found but its version is unreadable: %v", path, err)
	}
	return passed("%s: %s", path, v)
}

func checkQEMUImg(ctx context.Context, e *env) api.Check {
	path, err := e.host.LookPath("qemu-img")
	if err != nil {
		return warning("`apt-get install qemu-utils`",
			"qemu-img not found: qcow2 overlays unavailable; banger will use dm-snapshot, reflink or copy")
	}
	v, err := e.version(ctx, path)
	if err != nil {
		return warning("reinstall it (`apt-get install --reinstall qemu-utils`)", "%s found but its version is unreadable: %v", path, err)
	}
	return passed("%s: %s", path, v)
}

func checkE2fsprogs(_ context.Context, e *env) api.Check {
	var missing []string
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs"} {
		if _, err := e.host.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return failed("`apt-get install e2fsprogs`", "%s not found: work disks cannot be created or resized", strings.Join(missing, ", "))
	}
	return passed("mkfs.ext4, e2fsck and resize2fs found")
}

func checkDebootstrap(_ context.Context, e *env) api.Check {
	path, err := e.host.LookPath("debootstrap")
	if err != nil {
		return warning("`apt-get install debootstrap`",
			"debootstrap not found: `banger image build` is unavailable (registering existing images still works)")
	}
	return passed("%s found (needed for `banger image build`)", path)
}

func checkFirecracker(ctx context.Context, e *env) api.Check {
	bin := e.opts.FirecrackerBinary
	configured := e.opts.VMM == "firecracker"
	path, err := e.host.LookPath(bin)
	if err != nil {
		fix := "install the firecracker release binary (https://github.com/firecracker-microvm/firecracker/releases) into PATH, or set its path in banger's config"
		if configured {
			return failed(fix, "%s not found, but firecracker is the configured VMM", bin)
		}
		return warning(fix, "%s not found: firecracker backend unavailable; QEMU is used", bin)
	}
	if p := e.kvm(); !p.Usable {
		fix := "firecracker needs hardware KVM: run banger on bare metal or with nested virtualisation, or use the QEMU backend"
		if configured {
			return failed(fix, "%s found, but KVM cannot run ordinary guests here, so firecracker cannot run", path)
		}
		return warning(fix, "%s found, but KVM cannot run ordinary guests here: firecracker backend unavailable; QEMU is used", path)
	}
	v, err := e.version(ctx, path)
	if err != nil {
		return warning("reinstall the firecracker binary", "%s found but its version is unreadable: %v", path, err)
	}
	parsed, err := firecracker.ParseVersion("Firecracker", v)
	if err != nil {
		return warning("install an official firecracker release binary", "%s: %v", path, err)
	}
	if parsed.Less(firecracker.MinVersion) {
		fix := "install Firecracker " + firecracker.SupportedRange() + " (https://github.com/firecracker-microvm/firecracker/releases)"
		if configured {
			return failed(fix, "%s is %s, but banger supports Firecracker %s", path, v, firecracker.SupportedRange())
		}
		return warning(fix, "%s is %s, older than banger supports (%s): firecracker backend unavailable; QEMU is used", path, v, firecracker.SupportedRange())
	}
	return passed("%s: %s (supported: %s)", path, v, firecracker.SupportedRange())
}

// checkJailer looks for Firecracker's jailer next to firecracker or on
// PATH and checks that it is the same release. The jailer is optional.
func checkJailer(ctx context.Context, e *env) api.Check {
	fcPath, err := e.host.LookPath(e.opts.FirecrackerBinary)
	if err != nil {
		return passed("not checked: firecracker is not installed")
	}
	fix := "install the jailer binary of the same firecracker release next to firecracker or into PATH"
	path := filepath.Join(filepath.Dir(fcPath), firecracker.DefaultJailerBinary)
	if _, err := e.host.Stat(path); err != nil {
		if path, err = e.host.LookPath(firecracker.DefaultJailerBinary); err != nil {
			return warning(fix, "jailer not found: firecracker VMs cannot run jailed (chroot, own uid, cgroup)")
		}
	}
	jv, err := e.version(ctx, path)
	if err != nil {
		return warning(fix, "%s found but its version is unreadable: %v", path, err)
	}
	fv, ferr := e.version(ctx, fcPath)
	j, jerr := firecracker.ParseVersion("Jailer", jv)
	f, _ := firecracker.ParseVersion("Firecracker", fv)
	switch {
	case jerr != nil:
		return warning(fix, "%s: %v", path, jerr)
	case ferr == nil && j != f:
		return warning(fix, "%s is %s but %s is %s: the jailer must come from the same release", path, jv, fcPath, fv)
	}
	return passed("%s: %s", path, jv)
}

func checkCgroupV2(_ context.Context, e *env) api.Check {
	fix := "boot with `systemd.unified_cgroup_hierarchy=1`, or `mount -t cgroup2 none /sys/fs/cgroup` on a host without v1 users"
	if e.exists("/sys/fs/cgroup/cgroup.controllers") {
		return passed("cgroup v2 (unified hierarchy) is mounted at /sys/fs/cgroup")
	}
	if e.exists("/sys/fs/cgroup/unified/cgroup.controllers") {
		return warning(fix, "hybrid cgroup layout (v2 only at /sys/fs/cgroup/unified): the firecracker jailer needs cgroup v2 at /sys/fs/cgroup; VMs run without it")
	}
	return warning(fix, "cgroup v2 is not mounted at /sys/fs/cgroup: the firecracker jailer needs it; VMs run without it")
}

func checkIPForward(_ context.Context, e *env) api.Check {
	const path = "/proc/sys/net/ipv4/ip_forward"
	data, err := e.host.ReadFile(path)
	if err != nil {
		return warning("check that /proc is mounted", "cannot read %s: %v", path, err)
	}
	switch strings.TrimSpace(string(data)) {
	case "1":
		return passed("IPv4 forwarding is on")
	case "0":
		return passed("IPv4 forwarding is off for now: guest NAT egress needs it on (`sysctl -w net.ipv4.ip_forward=1`)")
	}
	return warning("check /proc/sys/net/ipv4/ip_forward", "unexpected content in %s: %q", path, firstLine(string(data)))
}

func checkResolved(_ context.Context, e *env) api.Check {
	if e.exists("/run/systemd/resolve/io.systemd.Resolve") {
		return passed("systemd-resolved is running: VM names resolve as <vm>.banger.internal on the host")
	}
	why := "systemd-resolved is not running"
	if !e.exists("/run/systemd/system") {
		why = "systemd is not PID 1, so systemd-resolved is not running"
	}
	return warning("`apt-get install systemd-resolved && systemctl enable --now systemd-resolved`",
		"%s: VM names won't resolve on the host via <vm>.banger.internal; `banger ssh-config` still works", why)
}
