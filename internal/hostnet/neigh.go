package hostnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ForgetNeighbor drops the host's ARP entry for addr on the bridge. An
// address goes to a new VM (new MAC) when the old one was deleted; a stale
// entry would send its packets to the old MAC until the kernel gives up on
// it, which delays the new guest's first SSH connection by ~30 s. Nothing
// to forget is not an error.
func (n *Network) ForgetNeighbor(addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("forget neighbor %s: not an IPv4 address", addr)
	}
	n.mu.Lock()
	idx := n.bridgeIndex
	n.mu.Unlock()
	neighs, err := netlink.NeighList(idx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list neighbors of bridge: %w", err)
	}
	for _, ne := range neighs {
		ip, ok := netip.AddrFromSlice(ne.IP)
		if !ok || ip.Unmap() != addr {
			continue
		}
		if err := netlink.NeighDel(&ne); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete neighbor %s: %w", addr, err)
		}
	}
	return nil
}
