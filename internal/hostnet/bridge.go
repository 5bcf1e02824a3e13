package hostnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ownerAlias marks a bridge banger created (IFLA_IFALIAS), so a later
// daemon knows it may remove it and a user's own bridge is never deleted.
const ownerAlias = "banger-managed"

// ensureBridge creates or adopts the bridge and gives it the gateway address.
func ensureBridge(cfg Config, log *slog.Logger) (br netlink.Link, created bool, err error) {
	existing, err := netlink.LinkByName(cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		existing = nil
	case err != nil:
		return nil, false, fmt.Errorf("look up bridge %s: %w", cfg.Bridge, err)
	case existing.Type() != "bridge":
		return nil, false, api.Errorf(api.KindConflict, "interface %s exists and is a %s, not a bridge", cfg.Bridge, existing.Type()).
			WithHint("remove it or set `bridge` in the config to another name")
	}

	skipIndex := 0
	if existing != nil {
		skipIndex = existing.Attrs().Index
	}
	if err := checkSubnetFree(cfg.Subnet, skipIndex); err != nil {
		return nil, false, err
	}

	if existing == nil {
		mac, _ := net.ParseMAC(stableMAC("bridge/" + cfg.Bridge))
		attrs := netlink.NewLinkAttrs()
		attrs.Name = cfg.Bridge
		// A fixed MAC stops the bridge from taking a port's address, which
		// would change whenever TAPs come and go and confuse guests' ARP.
		attrs.HardwareAddr = mac
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, false, fmt.Errorf("create bridge %s: %w (is the bridge kernel module available? see `banger doctor`)", cfg.Bridge, err)
		}
		created = true
		log.Info("created bridge", "bridge", cfg.Bridge)
		existing, err = netlink.LinkByName(cfg.Bridge)
		if err == nil {
			err = netlink.LinkSetAlias(existing, ownerAlias)
		}
		if err != nil {
			_ = deleteLink(cfg.Bridge)
			return nil, false, fmt.Errorf("configure new bridge %s: %w", cfg.Bridge, err)
		}
	}
	owned := existing.Attrs().Alias == ownerAlias || created

	if err := ensureGatewayAddr(existing, cfg, owned); err != nil {
		if created {
			_ = deleteLink(cfg.Bridge)
		}
		return nil, false, err
	}
	if err := netlink.LinkSetUp(existing); err != nil {
		if created {
			_ = deleteLink(cfg.Bridge)
		}
		return nil, false, fmt.Errorf("bring bridge %s up: %w", cfg.Bridge, err)
	}
	return existing, created, nil
}

// ensureGatewayAddr puts gateway/bits on the bridge. On a bridge banger owns
// it also drops other IPv4 addresses left by an earlier subnet setting.
func ensureGatewayAddr(br netlink.Link, cfg Config, owned bool) error {
	want := netip.PrefixFrom(cfg.Gateway, cfg.Subnet.Bits())
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", cfg.Bridge, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if owned {
			if err := netlink.AddrDel(br, &a); err != nil {
				return fmt.Errorf("remove stale address %v from %s: %w", a.IPNet, cfg.Bridge, err)
			}
		}
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.Gateway.AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("add address %v to %s: %w", want, cfg.Bridge, err)
	}
	return nil
}

// checkSubnetFree refuses a subnet that overlaps any IPv4 route (in any
// routing table) that is not on the interface with index skipIndex.
// Default routes are ignored: they overlap everything by design.
func checkSubnetFree(subnet netip.Prefix, skipIndex int) error {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes to check subnet %v: %w", subnet, err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixOf(r.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(subnet) {
			continue
		}
		index := r.LinkIndex
		if index == 0 && len(r.MultiPath) > 0 {
			index = r.MultiPath[0].LinkIndex
		}
		if skipIndex != 0 && index == skipIndex {
			continue
		}
		return api.Errorf(api.KindConflict, "subnet %v overlaps the existing route %v on interface %s (%s)",
			subnet, dst.Masked(), linkName(index), tableName(r.Table)).
			WithHint("set `subnet` in the config to a free private range")
	}
	return nil
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "table main"
	case unix.RT_TABLE_LOCAL:
		return "table local"
	}
	return fmt.Sprintf("table %d", t)
}

func linkName(index int) string {
	if index == 0 {
		return "(none)"
	}
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return fmt.Sprintf("#%d", index)
	}
	return l.Attrs().Name
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// ipForwardPath is per network namespace: /proc/sys/net follows the
// namespace of the thread that opens it.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

func enableIPv4Forwarding() error {
	cur, err := os.ReadFile(ipForwardPath)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding via %s: %w (the daemon must run as root)", ipForwardPath, err)
	}
	return nil
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(l)
	}
	if err != nil {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}

// removeBridgeIfOurs deletes the bridge only if banger created it.
func removeBridgeIfOurs(name string, log *slog.Logger) error {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l.Attrs().Alias != ownerAlias {
		log.Info("leaving bridge in place: banger did not create it", "bridge", name)
		return nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}
