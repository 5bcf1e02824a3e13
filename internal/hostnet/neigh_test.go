package hostnet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestForgetNeighbor(t *testing.T) {
	enterNewNetns(t)
	n := mustSetup(t, testConfig(0))
	br := mustLink(t, n.Bridge())
	add := func(ip string, mac string) {
		hw, _ := net.ParseMAC(mac)
		if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: unix.AF_INET,
			State: netlink.NUD_REACHABLE, IP: net.ParseIP(ip), HardwareAddr: hw}); err != nil {
			t.Fatal(err)
		}
	}
	add("172.30.0.2", "02:00:00:00:00:02")
	add("172.30.0.3", "02:00:00:00:00:03")
	if err := n.ForgetNeighbor(netip.MustParseAddr("172.30.0.2")); err != nil {
		t.Fatal(err)
	}
	left, err := netlink.NeighList(br.Attrs().Index, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ne := range left {
		if ne.IP.IsMulticast() { // the kernel's own IGMP entries
			continue
		}
		ips = append(ips, ne.IP.String())
	}
	if len(ips) != 1 || ips[0] != "172.30.0.3" {
		t.Fatalf("neighbors after forgetting 172.30.0.2: %v", ips)
	}
	// Forgetting an address with no entry is fine.
	if err := n.ForgetNeighbor(netip.MustParseAddr("172.30.0.9")); err != nil {
		t.Fatal(err)
	}
}
