package hostnet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tapFlags match what QEMU's `-netdev tap,ifname=X` asks for when it
// attaches (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, single queue). The kernel
// rejects an attach whose multi-queue setting differs from the persistent
// device's with EINVAL, so never create multi-queue TAPs.
const tapFlags = netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR

// AcquireTAP hands out a free TAP attached to the bridge and up, creating
// one if the pool is empty. The pool is refilled in the background.
func (n *Network) AcquireTAP(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return "", api.Errorf(api.KindUnavailable, "host network is shut down; cannot hand out a TAP")
	}
	for len(n.free) > 0 {
		name := n.free[0]
		n.free = n.free[1:]
		if _, err := netlink.LinkByName(name); err != nil {
			n.log.Warn("spare TAP vanished; skipping it", "tap", name, "err", err)
			continue
		}
		n.assigned[name] = true
		n.kickRefillLocked()
		return name, nil
	}
	name, err := n.createNextLocked()
	if err != nil {
		return "", err
	}
	n.assigned[name] = true
	n.kickRefillLocked()
	return name, nil
}

// ReleaseTAP returns a TAP to the pool after resetting it (down, up, still
// on the bridge); Reconcile trims spares beyond the configured count. A TAP some process still holds open is refused as busy;
// releasing an unknown or vanished TAP is not an error.
func (n *Network) ReleaseTAP(ctx context.Context, name string) error {
	if _, ok := tapIndex(n.cfg.TAPPrefix, name); !ok {
		return api.Errorf(api.KindInvalidInput, "%q is not a banger TAP (want %s<number>)", name, n.cfg.TAPPrefix)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Contains(n.free, name) {
		return nil
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		delete(n.assigned, name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("release TAP %s: %w", name, err)
	}
	if tapHeldOpen(link) {
		return api.Errorf(api.KindBusy, "TAP %s is still held open by a process", name).
			WithHint("wait for the VM's VMM process to exit before releasing its TAP")
	}
	delete(n.assigned, name)
	if n.closed {
		return deleteLink(name)
	}
	if err := resetTAP(link, n.bridgeIndex); err != nil {
		_ = deleteLink(name)
		return fmt.Errorf("reset TAP %s for reuse (deleted it instead): %w", name, err)
	}
	n.free = append(n.free, name)
	n.sortFreeLocked()
	return nil
}

// Reconcile rebuilds the pool after a daemon restart from the TAPs that
// exist and the set the store says VMs use: in-use TAPs stay assigned (and
// are recreated if missing, e.g. after a reboot), leaked ones return to the
// pool, spares beyond the configured count are deleted, and the pool is
// topped up.
func (n *Network) Reconcile(ctx context.Context, inUse map[string]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return api.Errorf(api.KindUnavailable, "host network is shut down; cannot reconcile TAPs")
	}
	existing, err := listTAPs(n.cfg.TAPPrefix)
	if err != nil {
		return err
	}
	var errs []error
	assigned := map[string]bool{}
	var free []string
	for _, name := range existing {
		link, err := netlink.LinkByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("inspect TAP %s: %w", name, err))
			continue
		}
		switch {
		case inUse[name]:
			assigned[name] = true
			if err := attachTAP(link, n.bridgeIndex); err != nil {
				errs = append(errs, err)
			}
		case tapHeldOpen(link):
			// Not ours per the store, yet a process has it open: an orphaned
			// VMM. Keep it out of the pool until that process is gone.
			n.log.Warn("TAP not used by any VM is held open by a process; keeping it out of the pool", "tap", name)
			assigned[name] = true
		default:
			free = append(free, name)
		}
	}
	for name := range inUse {
		if _, ok := tapIndex(n.cfg.TAPPrefix, name); !ok || slices.Contains(existing, name) {
			continue
		}
		if err := createTAP(name, n.bridgeIndex); err != nil {
			errs = append(errs, err)
			continue
		}
		n.log.Info("recreated missing TAP of a VM", "tap", name)
		assigned[name] = true
	}
	n.assigned = assigned
	n.free = nil
	for _, name := range free {
		if len(n.free) >= n.cfg.SpareTAPs {
			if err := deleteLink(name); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := n.readyFreeTAP(name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.free = append(n.free, name)
	}
	if err := n.fillLocked(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TAPs reports the pool: spare TAPs and TAPs assigned to VMs, sorted.
func (n *Network) TAPs() (free, assigned []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	free = slices.Clone(n.free)
	assigned = slices.Collect(maps.Keys(n.assigned))
	n.sortNames(assigned)
	return free, assigned
}

// loadPool adopts existing TAPs at Setup: idle ones become spares, ones a
// process holds open count as assigned until Reconcile says otherwise.
func (n *Network) loadPool(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	existing, err := listTAPs(n.cfg.TAPPrefix)
	if err != nil {
		return err
	}
	for _, name := range existing {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("inspect TAP %s: %w", name, err)
		}
		if tapHeldOpen(link) {
			n.assigned[name] = true
			if err := attachTAP(link, n.bridgeIndex); err != nil {
				return err
			}
			continue
		}
		if err := n.readyFreeTAP(name); err != nil {
			return err
		}
		n.free = append(n.free, name)
	}
	return n.fillLocked(ctx)
}

// readyFreeTAP makes an idle TAP fit for QEMU: recreated if its flags are
// wrong, on the bridge and up.
func (n *Network) readyFreeTAP(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("inspect TAP %s: %w", name, err)
	}
	if t, ok := link.(*netlink.Tuntap); ok && (t.Mode != netlink.TUNTAP_MODE_TAP || t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0) {
		n.log.Info("recreating TAP with flags QEMU cannot attach to", "tap", name)
		if err := deleteLink(name); err != nil {
			return err
		}
		return createTAP(name, n.bridgeIndex)
	}
	return attachTAP(link, n.bridgeIndex)
}

// fillLocked creates spares until the pool holds SpareTAPs.
func (n *Network) fillLocked(ctx context.Context) error {
	for len(n.free) < n.cfg.SpareTAPs {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, err := n.createNextLocked()
		if err != nil {
			return err
		}
		n.free = append(n.free, name)
	}
	n.sortFreeLocked()
	return nil
}

// kickRefillLocked tops the pool up in the background so the next
// AcquireTAP finds a spare. The worker runs on its own OS thread inside
// the namespace Setup ran in.
func (n *Network) kickRefillLocked() {
	if n.filling || n.closed || len(n.free) >= n.cfg.SpareTAPs {
		return
	}
	n.filling = true
	n.refill.Add(1)
	go func() {
		defer n.refill.Done()
		// Never unlocked: the thread dies with the goroutine, so its
		// namespace switch cannot leak to other goroutines.
		runtime.LockOSThread()
		if err := netns.Set(n.ns); err != nil {
			n.log.Warn("TAP refill: cannot enter the network namespace", "err", err)
			n.mu.Lock()
			n.filling = false
			n.mu.Unlock()
			return
		}
		for {
			n.mu.Lock()
			if n.closed || len(n.free) >= n.cfg.SpareTAPs {
				n.filling = false
				n.mu.Unlock()
				return
			}
			name, err := n.createNextLocked()
			if err != nil {
				n.log.Warn("TAP refill failed", "err", err)
				n.filling = false
				n.mu.Unlock()
				return
			}
			n.free = append(n.free, name)
			n.sortFreeLocked()
			n.mu.Unlock()
		}
	}()
}

// waitRefill waits for a background refill to finish (tests).
func (n *Network) waitRefill() { n.refill.Wait() }

// createNextLocked creates the TAP with the lowest free index.
func (n *Network) createNextLocked() (string, error) {
	limit := 1
	for range maxTAPIndexDigits {
		limit *= 10
	}
	for i := range limit {
		name := n.cfg.TAPPrefix + strconv.Itoa(i)
		if n.assigned[name] || slices.Contains(n.free, name) {
			continue
		}
		if _, err := netlink.LinkByName(name); err == nil {
			continue // exists but not tracked; leave it for Reconcile
		}
		if err := createTAP(name, n.bridgeIndex); err != nil {
			return "", err
		}
		return name, nil
	}
	return "", api.Errorf(api.KindUnavailable, "no free TAP name left with prefix %q", n.cfg.TAPPrefix)
}

func (n *Network) deleteFreeTAPs() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range n.free {
		_ = deleteLink(name)
	}
	n.free = nil
}

func (n *Network) sortFreeLocked() { n.sortNames(n.free) }

// sortNames orders TAP names by index so the pool hands out low numbers.
func (n *Network) sortNames(names []string) {
	slices.SortFunc(names, func(a, b string) int {
		ia, _ := tapIndex(n.cfg.TAPPrefix, a)
		ib, _ := tapIndex(n.cfg.TAPPrefix, b)
		return cmp.Compare(ia, ib)
	})
}

// createTAP creates a persistent TAP on the bridge and brings it up.
func createTAP(name string, bridgeIndex int) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MasterIndex = bridgeIndex
	tap := &netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP, Flags: tapFlags}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create TAP %s: %w (check /dev/net/tun with `banger doctor`)", name, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		_ = deleteLink(name)
		return fmt.Errorf("bring TAP %s up: %w", name, err)
	}
	return nil
}

// attachTAP puts a TAP on the bridge and up, without disturbing a running
// guest if it already is.
func attachTAP(link netlink.Link, bridgeIndex int) error {
	name := link.Attrs().Name
	if link.Attrs().MasterIndex != bridgeIndex {
		if err := netlink.LinkSetMasterByIndex(link, bridgeIndex); err != nil {
			return fmt.Errorf("attach TAP %s to the bridge: %w", name, err)
		}
	}
	if link.Attrs().Flags&unix.IFF_UP == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring TAP %s up: %w", name, err)
		}
	}
	return nil
}

// resetTAP cycles a released TAP down and up (dropping learned state) and
// makes sure it is still on the bridge.
func resetTAP(link netlink.Link, bridgeIndex int) error {
	if err := netlink.LinkSetDown(link); err != nil {
		return err
	}
	if link.Attrs().MasterIndex != bridgeIndex {
		if err := netlink.LinkSetMasterByIndex(link, bridgeIndex); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(link)
}

// tapHeldOpen reports whether a process has the TAP open: the kernel
// turns a TAP's carrier on while a file descriptor is attached.
func tapHeldOpen(link netlink.Link) bool {
	return link.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}

// listTAPs returns the TUN/TAP devices named prefix<number>, by index.
func listTAPs(prefix string) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	type tap struct {
		name  string
		index int
	}
	var taps []tap
	for _, l := range links {
		if l.Type() != "tuntap" {
			continue
		}
		if i, ok := tapIndex(prefix, l.Attrs().Name); ok {
			taps = append(taps, tap{l.Attrs().Name, i})
		}
	}
	slices.SortFunc(taps, func(a, b tap) int { return cmp.Compare(a.index, b.index) })
	names := make([]string, len(taps))
	for i, t := range taps {
		names[i] = t.name
	}
	return names, nil
}

// tapIndex parses prefix<number> (no sign, no leading zeros).
func tapIndex(prefix, name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || digits == "" || len(digits) > maxTAPIndexDigits || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i < 0 || strings.ContainsAny(digits, "+-") {
		return 0, false
	}
	return i, true
}
