package hostnet

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NFTTable is banger's own nftables table (family ip). banger never lists,
// flushes or changes any other table.
const NFTTable = "banger"

var bangerTable = &nftables.Table{Name: NFTTable, Family: nftables.TableFamilyIPv4}

// applyNAT replaces the contents of banger's table in one atomic batch:
//
//	table ip banger {
//	  chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr SUBNET oifname != BRIDGE counter masquerade }
//	  chain forward { type filter hook forward priority filter; policy accept;
//	    iifname BRIDGE counter accept
//	    oifname BRIDGE ct state established,related counter accept }
//	}
//
// The leading add makes the delete valid when the table does not exist yet.
func applyNAT(cfg Config) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink connection: %w", err)
	}
	c.AddTable(bangerTable)
	c.DelTable(bangerTable)
	t := c.AddTable(bangerTable)

	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: masqueradeExprs(cfg)})

	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(cfg.Bridge)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	established := expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(cfg.Bridge)},
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: nativeUint32(established), Xor: nativeUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeUint32(0)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table ip %s (NAT for guests): %w%s", NFTTable, err, nftHint(err))
	}
	return nil
}

func masqueradeExprs(cfg Config) []expr.Any {
	mask := make([]byte, 4)
	for i := range cfg.Subnet.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	network := cfg.Subnet.Addr().As4()
	return []expr.Any{
		// ip saddr SUBNET
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network[:]},
		// oifname != BRIDGE
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(cfg.Bridge)},
		&expr.Counter{},
		&expr.Masq{},
	}
}

// deleteNAT removes banger's table; a missing table is fine.
func deleteNAT() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink connection: %w", err)
	}
	// Add first so the delete never fails on a missing table.
	c.AddTable(bangerTable)
	c.DelTable(bangerTable)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table ip %s: %w%s", NFTTable, err, nftHint(err))
	}
	return nil
}

// ifname is an interface name as nftables compares it (NUL-padded to IFNAMSIZ).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// nativeUint32 encodes ct state bits, which nftables keeps in host order.
func nativeUint32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func nftHint(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM):
		return " (the daemon must run as root)"
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EPROTONOSUPPORT):
		return " (is the kernel's nf_tables NAT support loaded? try `modprobe nft_chain_nat nft_masq`)"
	}
	return ""
}
