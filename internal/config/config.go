// Package config holds the daemon's settings: defaults, an optional TOML
// file, and command-line overrides, applied in that order. Validation
// happens once here so the rest of the daemon can trust the values.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the daemon configuration. TOML keys are the snake_case names.
type Config struct {
	StateDir    string `toml:"state_dir"`
	RunDir      string `toml:"run_dir"`
	Socket      string `toml:"socket"`
	SocketGroup string `toml:"socket_group"`
	LogLevel    string `toml:"log_level"`

	Bridge     string `toml:"bridge"`
	Subnet     string `toml:"subnet"`
	TAPPrefix  string `toml:"tap_prefix"`
	SpareTAPs  int    `toml:"spare_taps"`
	DNSZone    string `toml:"dns_zone"`
	DNSListen  string `toml:"dns_listen"`
	NoNetwork  bool   `toml:"no_network"`
	WebAddr    string `toml:"web_addr"`
	WebEnabled bool   `toml:"web_enabled"`

	DefaultImage     string `toml:"default_image"`
	DefaultVMM       string `toml:"default_vmm"`
	DefaultCPUs      int    `toml:"default_cpus"`
	DefaultMemoryMiB int    `toml:"default_memory_mib"`
	DefaultDiskMiB   int    `toml:"default_disk_mib"`
	OverlayStrategy  string `toml:"overlay_strategy"`
	// ImageCache holds built images keyed by recipe (default <state>/cache/images).
	ImageCache string `toml:"image_cache"`

	QEMUBinary        string `toml:"qemu_binary"`
	FirecrackerBinary string `toml:"firecracker_binary"`
	// Jailer runs Firecracker under its jailer (chroot, uid/gid, cgroup v2).
	Jailer           bool   `toml:"jailer"`
	JailerBinary     string `toml:"jailer_binary"`
	JailerChrootBase string `toml:"jailer_chroot_base"`
	JailerUID        int    `toml:"jailer_uid"`
	JailerGID        int    `toml:"jailer_gid"`
	JailerCgroup     string `toml:"jailer_parent_cgroup"`

	// StopTimeoutSeconds bounds a graceful stop before the VM is killed.
	StopTimeoutSeconds int `toml:"stop_timeout_seconds"`
	// BootTimeoutSeconds bounds boot-to-SSH; a hung guest fails fast.
	BootTimeoutSeconds int `toml:"boot_timeout_seconds"`
	// ReapIntervalSeconds is how often the stale reaper runs.
	ReapIntervalSeconds int `toml:"reap_interval_seconds"`

	// AuthFiles are host files auth sync copies into every guest that has
	// it enabled, as [[auth_file]] tables.
	AuthFiles []AuthFile `toml:"auth_file"`
}

// AuthFile is one credentials file for guests, e.g.
//
//	[[auth_file]]
//	src = "~/.local/share/opencode/auth.json"
//	dst = ".local/share/opencode/auth.json"
//
// src is a host path (~/ is the home of the user who started the daemon,
// SUDO_USER under sudo); dst is a guest path, relative to the guest
// user's home unless absolute. The guest copy is owned by the guest user
// with mode 0600. Contents are never logged.
type AuthFile struct {
	Src string `toml:"src"`
	Dst string `toml:"dst"`
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		LogLevel:            "info",
		Bridge:              "banger0",
		Subnet:              "172.30.0.0/24",
		TAPPrefix:           "bgtap",
		SpareTAPs:           2,
		DNSZone:             "banger.internal",
		WebAddr:             "127.0.0.1:7777",
		WebEnabled:          true,
		DefaultImage:        "default",
		DefaultVMM:          "qemu",
		DefaultCPUs:         2,
		DefaultMemoryMiB:    1024,
		DefaultDiskMiB:      4096,
		QEMUBinary:          "qemu-system-x86_64",
		JailerChrootBase:    "/srv/jailer",
		JailerUID:           10000,
		JailerGID:           10000,
		JailerCgroup:        "banger",
		StopTimeoutSeconds:  30,
		BootTimeoutSeconds:  120,
		ReapIntervalSeconds: 30,
	}
}

// Load reads a TOML file over the defaults. A missing file is fine when
// it is the implicit default path (required=false).
func Load(path string, required bool) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !required {
			return c, nil
		}
		return c, fmt.Errorf("read config: %w", err)
	}
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}

var ifaceName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

// Validate checks every value and returns the first problem.
func (c Config) Validate() error {
	if !ifaceName.MatchString(c.Bridge) {
		return fmt.Errorf("bridge %q: not a valid interface name (max 15 chars, letters, digits, _ . -)", c.Bridge)
	}
	if !ifaceName.MatchString(c.TAPPrefix) || len(c.TAPPrefix) > 10 {
		return fmt.Errorf("tap_prefix %q: must be a short interface name prefix (max 10 chars)", c.TAPPrefix)
	}
	p, err := netip.ParsePrefix(c.Subnet)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("subnet %q: want an IPv4 CIDR such as 172.30.0.0/24", c.Subnet)
	}
	if p.Bits() > 29 || p.Bits() < 16 {
		return fmt.Errorf("subnet %q: prefix length must be between /16 and /29", c.Subnet)
	}
	if p.Masked() != p {
		return fmt.Errorf("subnet %q: host bits set; did you mean %s?", c.Subnet, p.Masked())
	}
	switch c.DefaultVMM {
	case "qemu", "firecracker":
	default:
		return fmt.Errorf("default_vmm %q: want qemu or firecracker", c.DefaultVMM)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.DefaultCPUs < 1 || c.DefaultCPUs > 64 {
		return fmt.Errorf("default_cpus %d: want 1..64", c.DefaultCPUs)
	}
	if c.DefaultMemoryMiB < 128 {
		return fmt.Errorf("default_memory_mib %d: want at least 128", c.DefaultMemoryMiB)
	}
	if c.DefaultDiskMiB < 64 {
		return fmt.Errorf("default_disk_mib %d: want at least 64", c.DefaultDiskMiB)
	}
	if c.SpareTAPs < 0 || c.SpareTAPs > 64 {
		return fmt.Errorf("spare_taps %d: want 0..64", c.SpareTAPs)
	}
	if c.StopTimeoutSeconds < 1 || c.BootTimeoutSeconds < 5 {
		return errors.New("stop_timeout_seconds must be >= 1 and boot_timeout_seconds >= 5")
	}
	for i, f := range c.AuthFiles {
		if f.Src == "" || f.Dst == "" {
			return fmt.Errorf("auth_file %d: both src and dst are required", i+1)
		}
		if !strings.HasPrefix(f.Src, "/") && !strings.HasPrefix(f.Src, "~/") {
			return fmt.Errorf("auth_file %d: src %q must be absolute or start with ~/", i+1, f.Src)
		}
		if slices.Contains(strings.Split(f.Dst, "/"), "..") || strings.HasSuffix(f.Dst, "/") {
			return fmt.Errorf("auth_file %d: dst %q must name a file without '..'", i+1, f.Dst)
		}
	}
	if ap, err := netip.ParseAddrPort(c.WebAddr); c.WebEnabled && (err != nil || !ap.Addr().IsLoopback()) {
		return fmt.Errorf("web_addr %q: the web UI only binds to a loopback address", c.WebAddr)
	}
	return nil
}

// SubnetPrefix returns the parsed subnet; call after Validate.
func (c Config) SubnetPrefix() netip.Prefix { return netip.MustParsePrefix(c.Subnet) }
