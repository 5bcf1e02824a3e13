package store

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

var (
	testSubnet  = netip.MustParsePrefix("172.30.0.0/24")
	testGateway = netip.MustParseAddr("172.30.0.1")
)

func TestAllocateIPLowestFreeAndIdempotent(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a := mustVM(t, s, VM{Name: "a"})
	b := mustVM(t, s, VM{Name: "b"})
	c := mustVM(t, s, VM{Name: "c"})
	reserved := []netip.Addr{testGateway, netip.MustParseAddr("172.30.0.3")}

	alloc := func(v VM) netip.Addr {
		t.Helper()
		ip, err := s.AllocateIP(ctx, v.ID, testSubnet, reserved)
		if err != nil {
			t.Fatalf("AllocateIP(%s): %v", v.Name, err)
		}
		return ip
	}
	// Network .0 and gateway .1 skipped; .3 reserved.
	if got := alloc(a); got.String() != "172.30.0.2" {
		t.Fatalf("first allocation = %v", got)
	}
	if got := alloc(b); got.String() != "172.30.0.4" {
		t.Fatalf("second allocation = %v", got)
	}
	if got := alloc(a); got.String() != "172.30.0.2" {
		t.Fatalf("repeat allocation for a = %v, want its existing address", got)
	}
	if err := s.ReleaseIP(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseIP(ctx, a.ID); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if got := alloc(c); got.String() != "172.30.0.2" {
		t.Fatalf("after release, allocation = %v, want the freed lowest address", got)
	}
	m, err := s.ListIPAllocations(ctx)
	want := map[string]string{"172.30.0.2": c.ID, "172.30.0.4": b.ID}
	if err != nil || fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("ListIPAllocations = %v, %v; want %v", m, err, want)
	}

	// A held address outside a new subnet is replaced.
	other := netip.MustParsePrefix("10.9.0.0/29")
	if got, err := s.AllocateIP(ctx, b.ID, other, nil); err != nil || got.String() != "10.9.0.1" {
		t.Fatalf("reallocation in a new subnet = %v, %v", got, err)
	}
	if m, _ := s.ListIPAllocations(ctx); len(m) != 2 || m["10.9.0.1"] != b.ID {
		t.Fatalf("allocations after subnet change = %v", m)
	}
}

func TestAllocateIPErrors(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	_, err := s.AllocateIP(ctx, "no-such-vm", testSubnet, nil)
	wantErr(t, err, ErrNotFound, api.KindNotFound)
	v := mustVM(t, s, VM{Name: "v"})
	for _, p := range []string{"fd00::/64", "10.0.0.0/31", "10.0.0.1/32"} {
		if _, err := s.AllocateIP(ctx, v.ID, netip.MustParsePrefix(p), nil); !api.IsKind(err, api.KindInvalidInput) {
			t.Errorf("AllocateIP in %s = %v, want invalid input", p, err)
		}
	}
	if m, _ := s.ListIPAllocations(ctx); len(m) != 0 {
		t.Fatalf("failed allocations left rows: %v", m)
	}
}

func TestAllocateIPExhausted(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	subnet := netip.MustParsePrefix("10.1.2.8/29") // hosts .9-.14
	gw := []netip.Addr{netip.MustParseAddr("10.1.2.9")}
	var got []string
	for i := range 5 {
		v := mustVM(t, s, VM{Name: fmt.Sprintf("v%d", i)})
		ip, err := s.AllocateIP(ctx, v.ID, subnet, gw)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, ip.String())
	}
	if fmt.Sprint(got) != "[10.1.2.10 10.1.2.11 10.1.2.12 10.1.2.13 10.1.2.14]" {
		t.Fatalf("allocations = %v", got)
	}
	extra := mustVM(t, s, VM{Name: "extra"})
	_, err := s.AllocateIP(ctx, extra.ID, subnet, gw)
	wantErr(t, err, ErrExhausted, api.KindUnavailable)
}

func TestIPReleasedWhenVMDeleted(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	v := mustVM(t, s, VM{Name: "v"})
	keep := mustVM(t, s, VM{Name: "keep"})
	for _, vm := range []VM{v, keep} {
		if _, err := s.AllocateIP(ctx, vm.ID, testSubnet, []netip.Addr{testGateway}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	m, err := s.ListIPAllocations(ctx)
	if err != nil || len(m) != 1 || m["172.30.0.3"] != keep.ID {
		t.Fatalf("allocations after delete = %v, %v", m, err)
	}
}

func TestAllocateIPConcurrent(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const n = 24
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustVM(t, s, VM{Name: fmt.Sprintf("vm%02d", i)}).ID
	}
	got := make([]netip.Addr, 2*n)
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	// Each VM is allocated twice at once: distinct VMs must get distinct
	// addresses, and both calls for one VM the same address.
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = s.AllocateIP(ctx, ids[i%n], testSubnet, []netip.Addr{testGateway})
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i := range 2 * n {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		id := ids[i%n]
		if prev, ok := seen[got[i]]; ok && prev != id {
			t.Fatalf("%v given to both %s and %s", got[i], prev, id)
		}
		seen[got[i]] = id
	}
	if len(seen) != n {
		t.Fatalf("%d distinct addresses for %d VMs", len(seen), n)
	}
	// The set is exactly the n lowest hosts after the gateway.
	for i := range n {
		want := netip.AddrFrom4([4]byte{172, 30, 0, byte(i + 2)})
		if _, ok := seen[want]; !ok {
			t.Fatalf("address %v not allocated; allocations are not the lowest free ones: %v", want, seen)
		}
	}
}
