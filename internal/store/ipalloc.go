package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/banger-dev/banger/internal/api"
)

// AllocateIP gives VM vmID the lowest free host address of the IPv4 subnet,
// skipping the network and broadcast addresses and every address in
// reserved (the gateway). It is idempotent: a VM that already holds an
// address in the subnet gets the same one back; one it holds outside the
// subnet, or that is now reserved, is replaced. A full subnet is
// ErrExhausted; an unknown VM ErrNotFound.
//
// The whole allocation is one IMMEDIATE transaction, so concurrent callers
// (in this process or another) serialise and never share an address.
func (s *Store) AllocateIP(ctx context.Context, vmID string, subnet netip.Prefix, reserved []netip.Addr) (addr netip.Addr, err error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return netip.Addr{}, api.Errorf(api.KindInvalidInput, "allocate ip: %v is not an IPv4 subnet", subnet)
	}
	subnet = subnet.Masked()
	if subnet.Bits() > 30 {
		return netip.Addr{}, api.Errorf(api.KindInvalidInput,
			"allocate ip: subnet %v has no room for guests; use a /30 or larger", subnet)
	}
	skip := make(map[netip.Addr]bool, len(reserved))
	for _, r := range reserved {
		skip[r.Unmap()] = true
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()

	var held string
	switch err := tx.QueryRowContext(ctx, `SELECT ip FROM ip_allocations WHERE vm_id = ?`, vmID).Scan(&held); {
	case err == nil:
		if a, perr := netip.ParseAddr(held); perr == nil && subnet.Contains(a) && !skip[a] {
			return a, tx.Commit()
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM ip_allocations WHERE vm_id = ?`, vmID); err != nil {
			return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: drop stale allocation %s: %w", vmID, held, err)
		}
	case !errors.Is(err, sql.ErrNoRows):
		return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
	}

	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM vms WHERE id = ?`, vmID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
		return netip.Addr{}, notFound("vm", vmID)
	} else if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
	}

	rows, err := tx.QueryContext(ctx, `SELECT ip FROM ip_allocations`)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
	}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			rows.Close()
			return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
		}
		if a, perr := netip.ParseAddr(ip); perr == nil {
			skip[a] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("allocate ip for vm %s: %w", vmID, err)
	}

	broadcast := lastAddr(subnet)
	for a := subnet.Addr().Next(); a != broadcast; a = a.Next() {
		if skip[a] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ip_allocations(ip, vm_id, allocated_at) VALUES (?, ?, ?)`,
			a.String(), vmID, toNanos(s.nowUTC())); err != nil {
			return netip.Addr{}, fmt.Errorf("allocate ip %s for vm %s: %w", a, vmID, err)
		}
		if err := tx.Commit(); err != nil {
			return netip.Addr{}, fmt.Errorf("allocate ip %s for vm %s: commit: %w", a, vmID, err)
		}
		return a, nil
	}
	return netip.Addr{}, newError(ErrExhausted, api.Errorf(api.KindUnavailable,
		"no free address left in %v for vm %s", subnet, vmID).
		WithHint("delete unused VMs or configure a larger subnet"))
}

// lastAddr returns the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	n := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// ReleaseIP frees VM vmID's address. Releasing when it holds none is not an
// error.
func (s *Store) ReleaseIP(ctx context.Context, vmID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM ip_allocations WHERE vm_id = ?`, vmID); err != nil {
		return fmt.Errorf("release ip of vm %s: %w", vmID, err)
	}
	return nil
}

// ListIPAllocations returns every allocation as ip -> VM ID.
func (s *Store) ListIPAllocations(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ip, vm_id FROM ip_allocations`)
	if err != nil {
		return nil, fmt.Errorf("list ip allocations: %w", err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var ip, vm string
		if err := rows.Scan(&ip, &vm); err != nil {
			return nil, fmt.Errorf("list ip allocations: %w", err)
		}
		m[ip] = vm
	}
	return m, rows.Err()
}
