package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// ResolvedResult says what ConfigureResolved did; the daemon reports it.
type ResolvedResult struct {
	Applied    bool       // the resolvectl commands ran and succeeded
	SkipReason string     // why nothing was done, when Applied is false
	Commands   [][]string // the commands run (or that would have run)
}

// Skipped reports whether systemd-resolved integration was skipped.
func (r ResolvedResult) Skipped() bool { return !r.Applied }

func (r ResolvedResult) String() string {
	if r.Applied {
		return "systemd-resolved: routing the zone to banger's DNS server"
	}
	return "systemd-resolved: skipped: " + r.SkipReason
}

// resolvedEnv is what ConfigureResolved touches on the host; tests swap it.
type resolvedEnv struct {
	stubPath string
	lookPath func(string) (string, error)
	run      func(ctx context.Context, argv []string) ([]byte, error)
}

var hostResolved = resolvedEnv{
	stubPath: "/run/systemd/resolve/stub-resolv.conf",
	lookPath: exec.LookPath,
	run: func(ctx context.Context, argv []string) ([]byte, error) {
		return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	},
}

// ConfigureResolved makes systemd-resolved send queries for zone to dns
// via the bridge link, so the host resolves <vm>.<zone>. When resolved is
// not running it does nothing and says why in the result.
func ConfigureResolved(ctx context.Context, bridge string, dns netip.Addr, zone string) (ResolvedResult, error) {
	return hostResolved.configure(ctx, bridge, dns, zone)
}

func (env resolvedEnv) configure(ctx context.Context, bridge string, dns netip.Addr, zone string) (ResolvedResult, error) {
	cmds, err := resolvedCommands(bridge, dns, zone)
	if err != nil {
		return ResolvedResult{}, err
	}
	res := ResolvedResult{Commands: cmds}
	if _, err := os.Stat(env.stubPath); err != nil {
		res.SkipReason = "systemd-resolved not running (no " + env.stubPath + ")"
		return res, nil
	}
	if _, err := env.lookPath("resolvectl"); err != nil {
		res.SkipReason = "systemd-resolved not usable: resolvectl not found in PATH"
		return res, nil
	}
	for _, argv := range cmds {
		if out, err := env.run(ctx, argv); err != nil {
			return res, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
		}
	}
	res.Applied = true
	return res, nil
}

// resolvedCommands are the resolvectl calls for per-link DNS routing: the
// "~" makes zone a routing-only domain, so only its names go to dns.
func resolvedCommands(bridge string, dns netip.Addr, zone string) ([][]string, error) {
	z, err := canonicalZone(zone)
	if err != nil {
		return nil, err
	}
	if !ifaceNameRE.MatchString(bridge) {
		return nil, fmt.Errorf("bridge %q is not a valid interface name", bridge)
	}
	if !dns.IsValid() {
		return nil, errors.New("DNS server address is not set")
	}
	return [][]string{
		{"resolvectl", "dns", bridge, dns.String()},
		{"resolvectl", "domain", bridge, "~" + strings.TrimSuffix(z, ".")},
	}, nil
}
