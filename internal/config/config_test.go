package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFileOverridesDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("bridge = \"br9\"\nsubnet = \"10.99.0.0/24\"\ndefault_cpus = 4\n"), 0o644)
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "br9" || c.Subnet != "10.99.0.0/24" || c.DefaultCPUs != 4 || c.DNSZone != "banger.internal" {
		t.Fatalf("got %+v", c)
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte("bridgee = \"x\"\n"), 0o644)
	if _, err := Load(p, true); err == nil || !strings.Contains(err.Error(), "bridgee") {
		t.Fatalf("want unknown key error, got %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load("/nonexistent/c.toml", false); err != nil {
		t.Fatalf("optional missing file: %v", err)
	}
	if _, err := Load("/nonexistent/c.toml", true); err == nil {
		t.Fatal("required missing file must fail")
	}
}

func TestValidateRejects(t *testing.T) {
	cases := map[string]func(*Config){
		"bridge":  func(c *Config) { c.Bridge = "this-name-is-far-too-long" },
		"subnet":  func(c *Config) { c.Subnet = "300.1.0.0/24" },
		"hostbit": func(c *Config) { c.Subnet = "172.30.0.5/24" },
		"v6":      func(c *Config) { c.Subnet = "fd00::/64" },
		"vmm":     func(c *Config) { c.DefaultVMM = "xen" },
		"cpus":    func(c *Config) { c.DefaultCPUs = 0 },
		"web":     func(c *Config) { c.WebEnabled = true; c.WebAddr = "0.0.0.0:7777" },
	}
	for name, mut := range cases {
		c := Default()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: expected error", name)
		}
	}
}

func TestAuthFilesValidate(t *testing.T) {
	c := Default()
	c.AuthFiles = []AuthFile{{Src: "~/.config/agent/auth.json", Dst: ".config/agent/auth.json"}, {Src: "/etc/x", Dst: "/home/banger/x"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []AuthFile{{Src: "", Dst: "x"}, {Src: "rel/path", Dst: "x"}, {Src: "/a", Dst: "../etc/passwd"}, {Src: "/a", Dst: "dir/"}} {
		c.AuthFiles = []AuthFile{bad}
		if err := c.Validate(); err == nil {
			t.Errorf("auth file %+v accepted", bad)
		}
	}
}
