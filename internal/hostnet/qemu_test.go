package hostnet

import (
	"bytes"
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/vishvananda/netlink"
)

// startQEMUOnTAP starts a paused microvm whose only device is a virtio-net
// NIC on tap, inside the test namespace. QEMU attaches to the TAP at
// startup, so a running process proves the TAP's flags suit it.
func startQEMUOnTAP(t *testing.T, ns *testNS, tap string) (*exec.Cmd, *bytes.Buffer, chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name,
		"qemu-system-x86_64", "-M", "microvm", "-nodefaults", "-nographic", "-S",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start qemu: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); cancel() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, &out, exited
}

// waitCarrier polls until the TAP's carrier matches want (QEMU attached
// or detached) or QEMU exits.
func waitCarrier(t *testing.T, tap string, want bool, exited chan error, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if l, err := netlink.LinkByName(tap); err == nil && tapHeldOpen(l) == want {
			return
		}
		if want && exited != nil {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("qemu exited before attaching to %s: %v\n%s", tap, err, out)
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("TAP %s carrier never became %v", tap, want)
}

func TestQEMUOpensPoolTAP(t *testing.T) {
	_, err := exec.LookPath("qemu-system-x86_64")
	testenv.Require(t, err == nil, "qemu-system-x86_64 in PATH")
	ns := enterNewNetns(t)
	ctx := context.Background()
	n := mustSetup(t, testConfig(1))
	tap, err := n.AcquireTAP(ctx)
	if err != nil {
		t.Fatal(err)
	}

	cmd, out, exited := startQEMUOnTAP(t, ns, tap)
	waitCarrier(t, tap, true, exited, out)

	if err := n.ReleaseTAP(ctx, tap); !api.IsKind(err, api.KindBusy) {
		t.Fatalf("ReleaseTAP while QEMU holds %s = %v, want busy", tap, err)
	}
	// A restarted daemon must not hand out the TAP QEMU holds, even before
	// Reconcile runs.
	n2 := mustSetup(t, testConfig(1))
	if free, assigned := n2.TAPs(); len(assigned) != 1 || assigned[0] != tap {
		t.Fatalf("restart Setup while QEMU runs: free %v assigned %v; want %s assigned", free, assigned, tap)
	}
	_ = n2.Close()

	_ = cmd.Process.Kill()
	waitCarrier(t, tap, false, nil, out)
	if err := n.ReleaseTAP(ctx, tap); err != nil {
		t.Fatalf("ReleaseTAP after QEMU exited: %v", err)
	}
	// The reset TAP is reusable by the next VM.
	_, out, exited = startQEMUOnTAP(t, ns, tap)
	waitCarrier(t, tap, true, exited, out)
}

// TestQEMURejectsMultiQueueTAP shows why the pool's flags matter: QEMU's
// single-queue attach to a persistent multi-queue TAP fails.
func TestQEMURejectsMultiQueueTAP(t *testing.T) {
	_, err := exec.LookPath("qemu-system-x86_64")
	testenv.Require(t, err == nil, "qemu-system-x86_64 in PATH")
	ns := enterNewNetns(t)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "mqtap0"
	mq := &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP, Queues: 1,
		Flags: netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(mq); err != nil {
		t.Fatal(err)
	}
	for _, f := range mq.Fds {
		f.Close()
	}
	_, out, exited := startQEMUOnTAP(t, ns, "mqtap0")
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(out.String(), "Invalid argument") {
			t.Fatalf("qemu on a multi-queue TAP: err %v, output:\n%s\nwant an Invalid argument failure", err, out)
		}
		t.Logf("qemu refused as expected: %s", strings.TrimSpace(out.String()))
		exited <- err
	case <-time.After(15 * time.Second):
		t.Fatal("qemu kept running on a multi-queue TAP; the pool's flag choice is untested")
	}
}
