package hostnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS is a named network namespace the test created and now runs in.
type testNS struct {
	name string
	h    netns.NsHandle
}

// enterNewNetns locks the test goroutine to its OS thread and moves that
// thread into a fresh named network namespace. Cleanup (registered first,
// so it runs last) returns the thread to the original namespace and deletes
// the new one, which destroys every device created inside it.
func enterNewNetns(t *testing.T) *testNS {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "root (network namespaces, bridges and TAPs need CAP_NET_ADMIN)")
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	name := newNetnsName(t)
	h, err := netns.NewNamed(name)
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		testenv.Require(t, false, "network namespaces (netns.NewNamed: "+err.Error()+")")
	}
	t.Cleanup(func() {
		restored := netns.Set(orig) == nil
		if !restored {
			t.Errorf("could not return to the original netns; this thread stays locked and is discarded")
		}
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
		h.Close()
		orig.Close()
		if restored {
			runtime.UnlockOSThread()
		}
	})
	// A fresh namespace has lo down; DNS tests on loopback need it.
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	return &testNS{name: name, h: h}
}

// newNamedPeerNetns creates another named namespace (for a fake guest)
// without leaving the current one.
func newNamedPeerNetns(t *testing.T, back *testNS) *testNS {
	t.Helper()
	name := newNetnsName(t)
	h, err := netns.NewNamed(name) // switches this thread into it
	if err != nil {
		t.Fatalf("create peer netns: %v", err)
	}
	if err := netns.Set(back.h); err != nil {
		t.Fatalf("return to test netns: %v", err)
	}
	t.Cleanup(func() {
		_ = netns.DeleteNamed(name)
		h.Close()
	})
	return &testNS{name: name, h: h}
}

func newNetnsName(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "bgtest-" + hex.EncodeToString(b)
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// linkNames lists the namespace's interfaces as name -> index.
func linkNames(t *testing.T) map[string]int {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, l := range links {
		m[l.Attrs().Name] = l.Attrs().Index
	}
	return m
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	return !errors.As(err, &nf)
}

func withPrefix(m map[string]int, prefix string) []string {
	var out []string
	for name := range m {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}
