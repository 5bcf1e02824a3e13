package hostnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
)

// Every test here runs inside a network namespace it creates and deletes.

func testConfig(spares int) Config {
	cfg := DefaultConfig()
	cfg.SpareTAPs = spares
	return cfg
}

func mustSetup(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := Setup(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func TestSetupIsIdempotent(t *testing.T) {
	enterNewNetns(t)
	cfg := testConfig(2)
	mustSetup(t, cfg)
	first := linkNames(t)

	br := mustLink(t, cfg.Bridge)
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().Alias != ownerAlias {
		t.Fatalf("bridge: type %s flags %v alias %q; want an up bridge marked %q", br.Type(), br.Attrs().Flags, br.Attrs().Alias, ownerAlias)
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "172.30.0.1/24" {
		t.Fatalf("bridge addresses = %v (%v), want exactly 172.30.0.1/24", addrs, err)
	}
	fwd, err := os.ReadFile(ipForwardPath)
	if err != nil || strings.TrimSpace(string(fwd)) != "1" {
		t.Fatalf("ip_forward = %q (%v), want 1", fwd, err)
	}
	if got := withPrefix(first, cfg.TAPPrefix); len(got) != 2 {
		t.Fatalf("TAPs after setup = %v, want 2 spares", got)
	}

	mustSetup(t, cfg)
	if second := linkNames(t); !mapsEqual(first, second) {
		t.Fatalf("second Setup changed links:\nbefore %v\nafter  %v", first, second)
	}
	addrs, _ = netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 {
		t.Fatalf("bridge has %d IPv4 addresses after second Setup, want 1", len(addrs))
	}
	// Listing every table is fine here: this namespace is the test's own.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Name != NFTTable || tables[0].Family != nftables.TableFamilyIPv4 {
		t.Fatalf("tables = %+v, want only ip %s", tables, NFTTable)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 2 {
		t.Fatalf("%d chains after two Setups, want 2", len(chains))
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSetupRefusesOverlappingSubnet(t *testing.T) {
	enterNewNetns(t)
	// Someone else's network in 172.30.0.0/16 on interface "other0".
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "other0"
	other := &netlink.Bridge{LinkAttrs: attrs}
	if err := netlink.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(other, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(172, 30, 5, 1), Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}

	_, err := Setup(context.Background(), testConfig(1), testLogger(t))
	if !api.IsKind(err, api.KindConflict) {
		t.Fatalf("Setup error = %v, want a conflict", err)
	}
	for _, want := range []string{"172.30.0.0/16", "other0", "subnet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if linkExists("banger0") {
		t.Error("refused Setup still created the bridge")
	}

	cfg := testConfig(1)
	cfg.Subnet = netip.MustParsePrefix("10.77.0.0/24")
	cfg.Gateway = netip.Addr{}
	n := mustSetup(t, cfg)
	if n.Gateway() != netip.MustParseAddr("10.77.0.1") {
		t.Fatalf("gateway = %v, want the subnet's first host", n.Gateway())
	}
}

func TestTAPAcquireReleaseReconcile(t *testing.T) {
	enterNewNetns(t)
	ctx := context.Background()
	cfg := testConfig(2)
	n := mustSetup(t, cfg)
	br := mustLink(t, cfg.Bridge)

	free, _ := n.TAPs()
	if !slices.Equal(free, []string{"bgtap0", "bgtap1"}) {
		t.Fatalf("spares = %v, want bgtap0 bgtap1", free)
	}
	for _, name := range free {
		l := mustLink(t, name)
		tap, ok := l.(*netlink.Tuntap)
		if !ok || tap.Mode != netlink.TUNTAP_MODE_TAP {
			t.Fatalf("%s is %T, want a TAP", name, l)
		}
		if tap.Flags&tapFlags != tapFlags || tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tap.NonPersist {
			t.Errorf("%s flags %v persist %v, want persistent NO_PI|VNET_HDR single queue", name, tap.Flags, !tap.NonPersist)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s master %d up %v, want on bridge %d and up", name, l.Attrs().MasterIndex, l.Attrs().Flags&net.FlagUp != 0, br.Attrs().Index)
		}
	}

	a, err := n.AcquireTAP(ctx)
	if err != nil || a != "bgtap0" {
		t.Fatalf("AcquireTAP = %q, %v; want bgtap0", a, err)
	}
	n.waitRefill()
	free, assigned := n.TAPs()
	if !slices.Equal(free, []string{"bgtap1", "bgtap2"}) || !slices.Equal(assigned, []string{"bgtap0"}) {
		t.Fatalf("after acquire+refill: free %v assigned %v", free, assigned)
	}
	b, _ := n.AcquireTAP(ctx)
	c, _ := n.AcquireTAP(ctx)
	n.waitRefill()
	if b == c || b == a || c == a {
		t.Fatalf("acquired the same TAP twice: %s %s %s", a, b, c)
	}

	// Release resets the TAP and puts it back, still on the bridge.
	if err := netlink.LinkSetNoMaster(mustLink(t, a)); err != nil {
		t.Fatal(err)
	}
	if err := n.ReleaseTAP(ctx, a); err != nil {
		t.Fatalf("ReleaseTAP: %v", err)
	}
	if l := mustLink(t, a); l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("released %s not back on the bridge and up", a)
	}
	free, _ = n.TAPs()
	if !slices.Contains(free, a) {
		t.Fatalf("released %s not in the pool %v", a, free)
	}
	if err := n.ReleaseTAP(ctx, a); err != nil {
		t.Fatalf("second release of %s: %v", a, err)
	}
	if err := n.ReleaseTAP(ctx, "eth0"); !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("release of a foreign name = %v, want invalid_input", err)
	}
	if err := n.ReleaseTAP(ctx, "bgtap999"); err != nil {
		t.Fatalf("release of a vanished TAP = %v, want nil", err)
	}

	// Daemon restart: a new Network sees every idle TAP, then the store says
	// b and bgtap7 (missing, e.g. after a reboot) belong to VMs.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	before := withPrefix(linkNames(t), cfg.TAPPrefix)
	n2 := mustSetup(t, cfg)
	if got := withPrefix(linkNames(t), cfg.TAPPrefix); len(got) != len(before) {
		t.Fatalf("restart Setup changed TAPs: %v -> %v", before, got)
	}
	if err := n2.Reconcile(ctx, map[string]bool{b: true, "bgtap7": true, "eth0": true}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	free, assigned = n2.TAPs()
	if !slices.Equal(assigned, []string{b, "bgtap7"}) {
		t.Fatalf("assigned after reconcile = %v, want [%s bgtap7]", assigned, b)
	}
	if len(free) != cfg.SpareTAPs || slices.Contains(free, b) {
		t.Fatalf("free after reconcile = %v, want %d spares without %s", free, cfg.SpareTAPs, b)
	}
	want := append(slices.Clone(free), assigned...)
	got := withPrefix(linkNames(t), cfg.TAPPrefix)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("TAP devices after reconcile = %v, want exactly %v (excess spares deleted)", got, want)
	}
	if l := mustLink(t, "bgtap7"); l.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatal("recreated bgtap7 is not on the bridge")
	}
	for range 3 {
		got, err := n2.AcquireTAP(ctx)
		if err != nil || got == b || got == "bgtap7" {
			t.Fatalf("AcquireTAP after reconcile = %q, %v; must not hand out an in-use TAP", got, err)
		}
	}
}

func TestNATRules(t *testing.T) {
	ns := enterNewNetns(t)
	cfg := testConfig(0)
	mustSetup(t, cfg)

	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == NFTTable {
			byName[ch.Name] = ch
		}
	}
	post, fwd := byName["postrouting"], byName["forward"]
	if post == nil || fwd == nil {
		t.Fatalf("chains in table %s = %v, want postrouting and forward", NFTTable, byName)
	}
	if post.Type != nftables.ChainTypeNAT || *post.Hooknum != *nftables.ChainHookPostrouting || *post.Priority != *nftables.ChainPriorityNATSource {
		t.Errorf("postrouting chain = %+v, want nat hook postrouting priority srcnat", post)
	}
	if fwd.Type != nftables.ChainTypeFilter || *fwd.Hooknum != *nftables.ChainHookForward ||
		*fwd.Priority != *nftables.ChainPriorityFilter || fwd.Policy == nil || *fwd.Policy != nftables.ChainPolicyAccept {
		t.Errorf("forward chain = %+v, want filter hook forward priority filter policy accept", fwd)
	}
	postRules, err := c.GetRules(bangerTable, post)
	if err != nil {
		t.Fatal(err)
	}
	if len(postRules) != 1 || !hasExpr[*expr.Masq](postRules[0].Exprs) {
		t.Fatalf("postrouting rules = %d, want one masquerade rule", len(postRules))
	}
	fwdRules, err := c.GetRules(bangerTable, fwd)
	if err != nil {
		t.Fatal(err)
	}
	if len(fwdRules) != 2 || !hasExpr[*expr.Ct](fwdRules[1].Exprs) {
		t.Fatalf("forward rules = %d, want 2 (from bridge; established,related back)", len(fwdRules))
	}

	// Cross-check the expressions with nft's own rendering, when present.
	nftOut := nftList(t, ns)
	t.Logf("nft list table ip %s:\n%s", NFTTable, nftOut)
	for _, want := range []string{
		`ip saddr 172.30.0.0/24 oifname != "banger0"`, "masquerade",
		`iifname "banger0"`, `oifname "banger0" ct state established,related`,
	} {
		if nftOut != "" && !strings.Contains(nftOut, want) {
			t.Errorf("nft list table ip banger lacks %q:\n%s", want, nftOut)
		}
	}

	// Re-running Setup with a new subnet replaces the rules atomically.
	cfg.Subnet = netip.MustParsePrefix("10.77.0.0/24")
	cfg.Gateway = netip.Addr{}
	mustSetup(t, cfg)
	postRules, err = c.GetRules(bangerTable, post)
	if err != nil || len(postRules) != 1 {
		t.Fatalf("postrouting after re-setup: %d rules, %v", len(postRules), err)
	}
	if out := nftList(t, ns); out != "" && (!strings.Contains(out, "10.77.0.0/24") || strings.Contains(out, "172.30.0.0/24")) {
		t.Errorf("rules not replaced for the new subnet:\n%s", out)
	}
	br := mustLink(t, cfg.Bridge)
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.0.1/24" {
		t.Errorf("bridge addresses after subnet change = %v, want only 10.77.0.1/24", addrs)
	}
}

func hasExpr[T expr.Any](exprs []expr.Any) bool {
	for _, e := range exprs {
		if _, ok := e.(T); ok {
			return true
		}
	}
	return false
}

// nftList renders our table with the nft tool inside the test netns, or ""
// when nft is not installed (the netlink checks above still ran).
func nftList(t *testing.T, ns *testNS) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("BANGER_REQUIRE_ALL") == "1" {
			t.Fatal("missing prerequisite (BANGER_REQUIRE_ALL=1): nft tool (apt-get install nftables)")
		}
		t.Log("nft tool not installed; skipping the nft rendering cross-check")
		return ""
	}
	out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "table", "ip", NFTTable).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	return string(out)
}

func TestTeardownRemovesOnlyOurs(t *testing.T) {
	enterNewNetns(t)
	ctx := context.Background()
	cfg := testConfig(2)
	n, err := Setup(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// A leaked TAP with our prefix that the pool never tracked.
	if err := createTAP("bgtap42", 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := withPrefix(linkNames(t), cfg.TAPPrefix); len(left) != 0 || linkExists(cfg.Bridge) {
		t.Fatalf("after teardown: TAPs %v, bridge exists %v", left, linkExists(cfg.Bridge))
	}
	assertNoBangerTable(t)

	// Busy: a TAP assigned to a VM keeps the bridge and NAT.
	n, err = Setup(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	busy, _ := n.AcquireTAP(ctx)
	err = n.Teardown(ctx)
	if !api.IsKind(err, api.KindBusy) || !strings.Contains(err.Error(), busy) {
		t.Fatalf("Teardown with %s assigned = %v, want busy naming it", busy, err)
	}
	if left := withPrefix(linkNames(t), cfg.TAPPrefix); !slices.Equal(left, []string{busy}) || !linkExists(cfg.Bridge) {
		t.Fatalf("busy teardown left TAPs %v bridge %v; want only %s and the bridge", left, linkExists(cfg.Bridge), busy)
	}
	if err := deleteLink(busy); err != nil {
		t.Fatal(err)
	}

	// A bridge the user made is adopted but never deleted.
	if err := deleteLink(cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Bridge
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	n, err = Setup(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if !linkExists(cfg.Bridge) {
		t.Fatal("Teardown deleted a bridge banger did not create")
	}
	assertNoBangerTable(t)
}

func assertNoBangerTable(t *testing.T) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListTableOfFamily(NFTTable, nftables.TableFamilyIPv4)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("table ip %s after teardown: err = %v, want ENOENT", NFTTable, err)
	}
}

func TestSetupRejectsNonBridge(t *testing.T) {
	enterNewNetns(t)
	if err := createTAP("banger0", 0); err != nil {
		t.Fatal(err)
	}
	_, err := Setup(context.Background(), testConfig(1), testLogger(t))
	if !api.IsKind(err, api.KindConflict) || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("Setup over a TAP named banger0 = %v, want a conflict", err)
	}
}

func TestHostChecksInNetns(t *testing.T) {
	enterNewNetns(t)
	if err := CheckTUN(); err != nil {
		t.Errorf("CheckTUN: %v", err)
	}
	if err := CheckBridgeSupport(); err != nil {
		t.Errorf("CheckBridgeSupport: %v", err)
	}
	if err := CheckNftables(); err != nil {
		t.Errorf("CheckNftables without our table: %v", err)
	}
	mustSetup(t, testConfig(0))
	if err := CheckNftables(); err != nil {
		t.Errorf("CheckNftables with our table: %v", err)
	}
}
