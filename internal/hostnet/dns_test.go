package hostnet

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func vmLookup(vms map[string]string) func(string) (netip.Addr, bool) {
	return func(name string) (netip.Addr, bool) {
		s, ok := vms[name]
		if !ok {
			return netip.Addr{}, false
		}
		return netip.MustParseAddr(s), true
	}
}

// startDNS serves on listen until the test ends and checks Serve returns
// nil once cancelled.
func startDNS(t *testing.T, listen string, lookup func(string) (netip.Addr, bool)) *DNSServer {
	t.Helper()
	srv, err := ListenDNS(listen, "Banger.Internal", lookup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after cancel = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return srv
}

func query(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	m := new(dns.Msg).SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	return r
}

func TestDNSAnswers(t *testing.T) {
	srv := startDNS(t, "127.0.0.1:0", vmLookup(map[string]string{"web": "172.30.0.5"}))
	addr := srv.Addr()

	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, addr, "web.banger.internal.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
			t.Fatalf("%s A web: rcode %s aa %v answers %v", network, dns.RcodeToString[r.Rcode], r.Authoritative, r.Answer)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != "172.30.0.5" {
			t.Fatalf("%s A web = %v, want 172.30.0.5", network, r.Answer[0])
		}
	}
	if r := query(t, "udp", addr, "WEB.banger.INTERNAL.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("names must match case-insensitively: %v", r)
	}
	if r := query(t, "udp", addr, "nope.banger.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("unknown VM: rcode %s authority %v, want NXDOMAIN with SOA", dns.RcodeToString[r.Rcode], r.Ns)
	}
	if r := query(t, "udp", addr, "a.web.banger.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("deeper name: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := query(t, "udp", addr, "web.banger.internal.", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA web: rcode %s answers %v, want NOERROR without data", dns.RcodeToString[r.Rcode], r.Answer)
	}
	for _, other := range []string{"example.com.", "internal.", "xbanger.internal."} {
		if r := query(t, "udp", addr, other, dns.TypeA); r.Rcode != dns.RcodeRefused || r.RecursionAvailable || len(r.Answer) != 0 {
			t.Errorf("%s: rcode %s ra %v, want REFUSED without recursion", other, dns.RcodeToString[r.Rcode], r.RecursionAvailable)
		}
	}
}

func TestServeDNSStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ServeDNS(ctx, "127.0.0.1:0", "banger.internal", vmLookup(nil)); err != nil {
		t.Fatalf("ServeDNS with a cancelled context = %v, want nil", err)
	}
	if err := ServeDNS(context.Background(), "127.0.0.1:0", "not a zone!", vmLookup(nil)); err == nil {
		t.Fatal("ServeDNS accepted an invalid zone")
	}
}

// TestGuestReachesGatewayDNS proves L2 through the bridge: a fake guest in
// another namespace, attached by a veth pair, asks the DNS server on the
// gateway address and gets the answer.
func TestGuestReachesGatewayDNS(t *testing.T) {
	ns := enterNewNetns(t)
	cfg := testConfig(0)
	mustSetup(t, cfg)
	srv := startDNS(t, net.JoinHostPort(cfg.Gateway.String(), "0"), vmLookup(map[string]string{"db": "172.30.0.9"}))

	guest := newNamedPeerNetns(t, ns)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "vguest-host"
	attrs.MasterIndex = mustLink(t, cfg.Bridge).Attrs().Index
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(guest.h)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}

	// Switch this (locked) thread into the guest to configure it and query.
	if err := netns.Set(guest.h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(ns.h); err != nil {
			t.Fatalf("return to test netns: %v", err)
		}
	}()
	eth0 := mustLink(t, "eth0")
	if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(172, 30, 0, 50), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	r := query(t, "udp", srv.Addr(), "db.banger.internal.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.30.0.9" {
		t.Fatalf("guest query via bridge = %v", r)
	}
}

func TestCanonicalZone(t *testing.T) {
	for in, want := range map[string]string{"Banger.Internal": "banger.internal.", "vm.lan.": "vm.lan.", "x": "x."} {
		if got, err := canonicalZone(in); err != nil || got != want {
			t.Errorf("canonicalZone(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", "not a zone!", "a..b", "-x.internal", "x_y.internal"} {
		if got, err := canonicalZone(bad); err == nil {
			t.Errorf("canonicalZone(%q) = %q, want an error", bad, got)
		}
	}
}
