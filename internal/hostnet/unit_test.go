package hostnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestMACForVM(t *testing.T) {
	a, b := MACForVM("vm-a"), MACForVM("vm-b")
	if a != MACForVM("vm-a") {
		t.Fatal("MAC is not stable for the same id")
	}
	if a == b {
		t.Fatalf("different ids share MAC %s", a)
	}
	for _, m := range []string{a, b} {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			t.Fatalf("MAC %q does not parse: %v", m, err)
		}
		if hw[0] != 0x02 {
			t.Errorf("MAC %s: first octet %#x, want 0x02 (locally administered, unicast)", m, hw[0])
		}
	}
}

func TestConfigNormalize(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Gateway = netip.Addr{}
	got, err := cfg.normalize()
	if err != nil || got.Gateway != netip.MustParseAddr("172.30.0.1") || got.DNSListen != "172.30.0.1:53" {
		t.Fatalf("default config: gateway %v, DNS %q, err %v", got.Gateway, got.DNSListen, err)
	}
	bad := map[string]func(*Config){
		"long bridge":   func(c *Config) { c.Bridge = "this-name-is-too-long" },
		"long prefix":   func(c *Config) { c.TAPPrefix = "bangertapxyz" },
		"bridge prefix": func(c *Config) { c.Bridge = "bgtapbr" },
		"v6 subnet":     func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		"host bits":     func(c *Config) { c.Subnet = netip.MustParsePrefix("172.30.0.5/24") },
		"gw outside":    func(c *Config) { c.Gateway = netip.MustParseAddr("10.0.0.1") },
		"gw network":    func(c *Config) { c.Gateway = netip.MustParseAddr("172.30.0.0") },
		"spares":        func(c *Config) { c.SpareTAPs = -1 },
		"zone":          func(c *Config) { c.DNSZone = "bad zone" },
	}
	for name, mutate := range bad {
		c := DefaultConfig()
		mutate(&c)
		if _, err := c.normalize(); !api.IsKind(err, api.KindInvalidInput) {
			t.Errorf("%s: normalize = %v, want invalid_input", name, err)
		}
	}
}

func TestTAPIndex(t *testing.T) {
	for name, want := range map[string]int{"bgtap0": 0, "bgtap12": 12, "bgtap9999": 9999} {
		if got, ok := tapIndex("bgtap", name); !ok || got != want {
			t.Errorf("tapIndex(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	for _, name := range []string{"bgtap", "bgtap01", "bgtap-1", "bgtap+1", "bgtapx", "bgtap10000", "eth0", "xbgtap1"} {
		if _, ok := tapIndex("bgtap", name); ok {
			t.Errorf("tapIndex(%q) accepted a name that is not ours", name)
		}
	}
}

func TestResolvedCommands(t *testing.T) {
	cmds, err := resolvedCommands("banger0", netip.MustParseAddr("172.30.0.1"), "Banger.Internal.")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"resolvectl", "dns", "banger0", "172.30.0.1"},
		{"resolvectl", "domain", "banger0", "~banger.internal"},
	}
	if !slices.EqualFunc(cmds, want, slices.Equal) {
		t.Fatalf("commands = %q, want %q", cmds, want)
	}
	if _, err := resolvedCommands("banger0", netip.Addr{}, "banger.internal"); err == nil {
		t.Error("accepted a missing DNS address")
	}
	if _, err := resolvedCommands("bad name", netip.MustParseAddr("172.30.0.1"), "banger.internal"); err == nil {
		t.Error("accepted an invalid bridge name")
	}
}

func TestConfigureResolved(t *testing.T) {
	ctx := context.Background()
	gw := netip.MustParseAddr("172.30.0.1")
	var ran [][]string
	env := resolvedEnv{
		stubPath: filepath.Join(t.TempDir(), "missing"),
		lookPath: func(string) (string, error) { return "/usr/bin/resolvectl", nil },
		run: func(_ context.Context, argv []string) ([]byte, error) {
			ran = append(ran, argv)
			return nil, nil
		},
	}
	res, err := env.configure(ctx, "banger0", gw, "banger.internal")
	if err != nil || !res.Skipped() || res.SkipReason == "" || len(ran) != 0 {
		t.Fatalf("without resolved: %+v, %v, ran %q; want skipped and nothing run", res, err, ran)
	}

	env.stubPath = t.TempDir() // exists: resolved is "running"
	res, err = env.configure(ctx, "banger0", gw, "banger.internal")
	if err != nil || !res.Applied || len(ran) != 2 || !slices.Equal(ran[1], []string{"resolvectl", "domain", "banger0", "~banger.internal"}) {
		t.Fatalf("with resolved: %+v, %v, ran %q", res, err, ran)
	}

	env.run = func(context.Context, []string) ([]byte, error) {
		return []byte("Failed to set DNS"), errors.New("exit status 1")
	}
	if _, err := env.configure(ctx, "banger0", gw, "banger.internal"); err == nil {
		t.Fatal("a failing resolvectl was not reported")
	}
}
