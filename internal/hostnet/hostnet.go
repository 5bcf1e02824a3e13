// Package hostnet sets up banger's host networking: a bridge with the
// guests' gateway address, a pool of persistent TAP devices attached to it,
// IPv4 forwarding and NAT for guest egress (in banger's own nftables table
// only), a small authoritative DNS server for VM names, and per-interface
// DNS routing through systemd-resolved when it runs.
//
// Everything happens in the network namespace the caller runs in; Setup is
// idempotent so the daemon can run it at every start.
package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/banger-dev/banger/internal/api"
	"github.com/vishvananda/netns"
)

// Config describes the host network banger manages.
type Config struct {
	Bridge    string       // bridge interface name
	Subnet    netip.Prefix // guest subnet, IPv4
	Gateway   netip.Addr   // bridge address; zero means the subnet's first host
	TAPPrefix string       // TAP names are TAPPrefix + index
	SpareTAPs int          // free TAPs kept ready so a VM start does not wait
	DNSZone   string       // VM names resolve as <name>.<DNSZone>
	DNSListen string       // host:port of the DNS server; empty means Gateway:53
}

// DefaultConfig returns banger's default network.
func DefaultConfig() Config {
	return Config{
		Bridge:    "banger0",
		Subnet:    netip.MustParsePrefix("172.30.0.0/24"),
		Gateway:   netip.MustParseAddr("172.30.0.1"),
		TAPPrefix: "bgtap",
		SpareTAPs: 4,
		DNSZone:   "banger.internal",
	}
}

var ifaceNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// maxTAPIndexDigits bounds TAP names to IFNAMSIZ-1 characters.
const maxTAPIndexDigits = 4

// normalize validates cfg and fills the derived gateway.
func (cfg Config) normalize() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return cfg, api.Errorf(api.KindInvalidInput, "network config: "+format, args...)
	}
	if !ifaceNameRE.MatchString(cfg.Bridge) {
		return bad("bridge %q is not a valid interface name (max 15 chars of letters, digits, _ . -)", cfg.Bridge)
	}
	if !ifaceNameRE.MatchString(cfg.TAPPrefix) || len(cfg.TAPPrefix) > 15-maxTAPIndexDigits {
		return bad("tap prefix %q must be an interface name prefix of at most %d chars", cfg.TAPPrefix, 15-maxTAPIndexDigits)
	}
	if strings.HasPrefix(cfg.Bridge, cfg.TAPPrefix) {
		return bad("bridge %q must not start with the tap prefix %q", cfg.Bridge, cfg.TAPPrefix)
	}
	if !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4() {
		return bad("subnet %v must be an IPv4 prefix such as 172.30.0.0/24", cfg.Subnet)
	}
	if cfg.Subnet != cfg.Subnet.Masked() {
		return bad("subnet %v has host bits set; did you mean %v?", cfg.Subnet, cfg.Subnet.Masked())
	}
	if cfg.Subnet.Bits() < 8 || cfg.Subnet.Bits() > 30 {
		return bad("subnet %v: prefix length must be between /8 and /30", cfg.Subnet)
	}
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = cfg.Subnet.Addr().Next()
	}
	if !cfg.Subnet.Contains(cfg.Gateway) || cfg.Gateway == cfg.Subnet.Addr() {
		return bad("gateway %v is not a host address in subnet %v", cfg.Gateway, cfg.Subnet)
	}
	if cfg.DNSListen == "" {
		cfg.DNSListen = netip.AddrPortFrom(cfg.Gateway, 53).String()
	}
	if cfg.SpareTAPs < 0 {
		return bad("spare TAP count %d must not be negative", cfg.SpareTAPs)
	}
	if _, err := canonicalZone(cfg.DNSZone); err != nil {
		return bad("%v", err)
	}
	return cfg, nil
}

// Network is banger's host network as set up by Setup. Its methods are safe
// for concurrent use.
type Network struct {
	cfg         Config
	log         *slog.Logger
	bridgeIndex int
	// ns is the namespace Setup ran in; background refills enter it so
	// they never act on another namespace's devices.
	ns netns.NsHandle

	mu       sync.Mutex
	free     []string        // spare TAPs, ready to hand out
	assigned map[string]bool // TAPs handed out (or found busy)
	closed   bool
	nsClose  sync.Once
	refill   sync.WaitGroup
	filling  bool
}

// Setup makes the host network match cfg: bridge with the gateway address,
// IPv4 forwarding, banger's nftables table and a topped-up TAP pool. It is
// idempotent. Existing TAPs with our prefix count as free unless a process
// holds them open; call Reconcile with the store's view right after Setup.
func Setup(ctx context.Context, cfg Config, log *slog.Logger) (_ *Network, err error) {
	cfg, err = cfg.normalize()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("network setup: get current network namespace: %w", err)
	}
	n := &Network{cfg: cfg, log: log, ns: ns, assigned: map[string]bool{}}
	defer func() {
		if err != nil {
			ns.Close()
		}
	}()

	br, created, err := ensureBridge(cfg, log)
	if err != nil {
		return nil, err
	}
	n.bridgeIndex = br.Attrs().Index
	undoBridge := func() {
		if created {
			if derr := deleteLink(cfg.Bridge); derr != nil {
				log.Warn("network setup failed; could not remove the bridge it created", "bridge", cfg.Bridge, "err", derr)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		undoBridge()
		return nil, err
	}
	if err := enableIPv4Forwarding(); err != nil {
		undoBridge()
		return nil, err
	}
	if err := applyNAT(cfg); err != nil {
		undoBridge()
		return nil, err
	}
	if err := n.loadPool(ctx); err != nil {
		if created {
			_ = deleteNAT()
			n.deleteFreeTAPs()
		}
		undoBridge()
		return nil, err
	}
	log.Info("host network ready", "bridge", cfg.Bridge, "subnet", cfg.Subnet, "gateway", cfg.Gateway,
		"spare_taps", len(n.free), "busy_taps", len(n.assigned))
	return n, nil
}

// Gateway is the bridge address guests route through.
func (n *Network) Gateway() netip.Addr { return n.cfg.Gateway }

// Subnet is the guest subnet.
func (n *Network) Subnet() netip.Prefix { return n.cfg.Subnet }

// Config is the effective configuration (gateway and DNS address filled in).
func (n *Network) Config() Config { return n.cfg }

// Bridge is the bridge interface name.
func (n *Network) Bridge() string { return n.cfg.Bridge }

// Close stops background work; the host network stays as it is. It is
// safe to call more than once.
func (n *Network) Close() error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.refill.Wait()
	n.closeNS()
	return nil
}

func (n *Network) closeNS() { n.nsClose.Do(func() { _ = n.ns.Close() }) }

// Teardown removes what banger owns and no VM uses: free TAPs, banger's
// nftables table and the bridge if banger created it. While TAPs are still
// assigned to VMs the bridge and NAT stay, and a busy error names them.
// The Network is closed afterwards either way.
func (n *Network) Teardown(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.refill.Wait()
	defer n.closeNS()

	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	// Also removes leaked TAPs that were never put in the pool.
	taps, err := listTAPs(n.cfg.TAPPrefix)
	if err != nil {
		return err
	}
	for _, name := range taps {
		if n.assigned[name] {
			continue
		}
		if err := deleteLink(name); err != nil {
			errs = append(errs, err)
		}
	}
	n.free = nil
	if err := ctx.Err(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if len(n.assigned) > 0 {
		busy := slices.Sorted(maps.Keys(n.assigned))
		errs = append(errs, api.Errorf(api.KindBusy, "network teardown: TAPs %s are still assigned to VMs; kept bridge %s and NAT",
			strings.Join(busy, ", "), n.cfg.Bridge).WithHint("stop or delete those VMs first"))
		return errors.Join(errs...)
	}
	if err := deleteNAT(); err != nil {
		errs = append(errs, err)
	}
	if err := removeBridgeIfOurs(n.cfg.Bridge, n.log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
