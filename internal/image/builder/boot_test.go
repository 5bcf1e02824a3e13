package builder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/banger-dev/banger/internal/testenv"
	"github.com/banger-dev/banger/internal/vmm"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
)

// TestBootDefaultImage boots the default image under QEMU (TCG when KVM is
// unusable) inside a network namespace this test creates, hands it a
// config drive, and logs in over SSH with the host key pinned. Gated by
// BANGER_INTEGRATION=1: it needs root, qemu-system-x86_64 and the image
// build (minutes on first run, cached after).
func TestBootDefaultImage(t *testing.T) {
	a := buildDefault(t)
	for _, tool := range []string{"qemu-system-x86_64", "ip"} {
		_, err := lookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
	dir := t.TempDir()
	rootfs, work, config, console := filepath.Join(dir, "rootfs.ext4"), filepath.Join(dir, "work.ext4"), filepath.Join(dir, "config.img"), filepath.Join(dir, "console.log")
	for src, dst := range map[string]string{a.RootFS: rootfs, a.WorkSeed: work} {
		if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v: %s", src, err, out)
		}
	}

	hostPriv, hostPub, hostSigner := testHostKey(t)
	_, clientKey, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	clientSigner, err := ssh.NewSignerFromKey(clientKey)
	must(t, err)
	const guestIP, gateway, mac, hostname = "172.30.0.2", "172.30.0.1", "52:54:00:12:34:56", "bgtest"
	must(t, WriteConfigDrive(config, ConfigDrive{
		Hostname: hostname, IP: guestIP + "/24", Gateway: gateway, MAC: mac, User: a.User,
		SearchDomain: "banger.internal", DNS: []string{gateway},
		AuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(clientSigner.PublicKey())))},
		HostKeyPrivate: hostPriv, HostKeyPublic: hostPub,
	}))

	ns := newTestNetns(t)
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", gateway + "/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns.name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}

	appendArgs := a.KernelArgs
	if khz, err := vmm.HostTSCkHz(); err == nil {
		appendArgs += fmt.Sprintf(" tsc_early_khz=%d", khz)
	} else {
		t.Logf("no tsc_early_khz: %v", err)
	}
	qemuArgs := []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-m", "512", "-smp", "2", "-accel", "tcg", "-cpu", "max",
		"-kernel", a.Kernel, "-initrd", a.Initrd, "-append", appendArgs,
		"-serial", "file:" + console,
		"-drive", "id=root,file=" + rootfs + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=root",
		"-drive", "id=config,file=" + config + ",format=raw,if=none,read-only=on",
		"-device", "virtio-blk-device,drive=config",
		"-drive", "id=work,file=" + work + ",format=raw,if=none",
		"-device", "virtio-blk-device,drive=work",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac=" + mac,
	}
	t.Logf("ip netns exec %s qemu-system-x86_64 %s", ns.name, shellJoin(qemuArgs))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	qemu := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name, "qemu-system-x86_64"}, qemuArgs...)...)
	qemu.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	qemu.Cancel = func() error { return syscall.Kill(-qemu.Process.Pid, syscall.SIGKILL) }
	var qemuOut bytes.Buffer
	qemu.Stdout, qemu.Stderr = &qemuOut, &qemuOut
	start := time.Now()
	must(t, qemu.Start())
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	defer func() {
		cancel()
		<-exited
		if t.Failed() || testing.Verbose() {
			log, _ := os.ReadFile(console)
			t.Logf("qemu output:\n%s\nconsole.log:\n%s", qemuOut.String(), log)
		}
	}()

	config2 := &ssh.ClientConfig{
		User:            a.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(clientSigner)},
		HostKeyCallback: ssh.FixedHostKey(hostSigner.PublicKey()),
		Timeout:         5 * time.Second,
	}
	var client *ssh.Client
	deadline := time.Now().Add(120 * time.Second)
	for client == nil {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu exited before SSH came up: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SSH to %s within %s", guestIP, time.Since(start).Round(time.Second))
		}
		conn, err := ns.dial("tcp", net.JoinHostPort(guestIP, "22"), time.Second)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		c, chans, reqs, err := ssh.NewClientConn(conn, guestIP, config2)
		if err != nil {
			conn.Close()
			if strings.Contains(err.Error(), "host key mismatch") {
				t.Fatalf("guest presented the wrong host key: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		client = ssh.NewClient(c, chans, reqs)
	}
	defer client.Close()
	bootToSSH := time.Since(start)
	t.Logf("boot to SSH: %.1fs", bootToSSH.Seconds())

	session, err := client.NewSession()
	must(t, err)
	out, err := session.CombinedOutput("id -un; hostname; ip -4 addr; findmnt /home/banger; stat -c '%U %a' /home/banger /home/banger/.ssh; cat /etc/resolv.conf; sudo -n true && echo sudo-ok; sudo -n systemctl is-system-running; sudo -n systemctl --failed --no-legend; sudo -n systemd-analyze; sudo -n systemd-analyze blame | head -n 8")
	session.Close()
	t.Logf("guest says:\n%s", out)
	if err != nil && !strings.Contains(string(out), "degraded") {
		t.Fatalf("guest commands: %v", err)
	}
	for _, want := range []string{
		a.User + "\n", hostname + "\n", "inet " + guestIP + "/24", "/home/banger /dev/vd", "ext4",
		a.User + " 755\n" + a.User + " 700", "nameserver " + gateway, "search banger.internal", "sudo-ok\nrunning\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("guest output lacks %q", want)
		}
	}
}

// testNetns is a network namespace owned by one test.
type testNetns struct {
	name   string
	handle netns.NsHandle
}

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "bgtest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatal(err)
	}
	ns := &testNetns{name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return ns
}

// dial opens a connection from inside the namespace: the socket is
// created while this goroutine's locked thread is in the namespace, and
// keeps living there after the thread switches back.
func (n *testNetns) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	conn, dialErr := net.DialTimeout(network, addr, timeout)
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine instead of
		// running other goroutines in the wrong namespace.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("return to the original network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}

func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'$") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			quoted[i] = a
		}
	}
	return strings.Join(quoted, " ")
}
