package guest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// fixture is a client key, an in-process sshd with a pinned host key, and
// a pool and target pointing at it.
type fixture struct {
	key    ClientKey
	host   HostKey
	server *testServer
	pool   *Pool
	target Target
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key, err := EnsureClientKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	host, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	hostSigner := parseHostSigner(t, host)
	srv := startTestServer(t, "127.0.0.1:0", hostSigner, key.Signer.PublicKey())
	pool := NewPool(key, nil)
	t.Cleanup(pool.Close)
	return &fixture{
		key: key, host: host, server: srv, pool: pool,
		target: Target{VMID: "vm1", Addr: srv.addr(), User: "root", HostKey: host.Public},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestExecExitCodesAndStreams(t *testing.T) {
	f := newFixture(t)
	var stdout, stderr bytes.Buffer
	code, err := f.pool.Exec(ctxT(t), f.target, []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if code != 7 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("got code %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}

	code, err = f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, &stdout, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("true: code %d err %v", code, err)
	}
}

func TestExecStdin(t *testing.T) {
	f := newFixture(t)
	out, _, code, err := f.pool.ExecOutput(ctxT(t), f.target, []string{"tr", "a-z", "A-Z"}, strings.NewReader("hello\nworld\n"))
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	if out != "HELLO\nWORLD\n" {
		t.Fatalf("stdout %q", out)
	}
}

// Every argument must reach the remote program byte for byte, whatever
// shell syntax it contains.
func TestExecQuotesArguments(t *testing.T) {
	f := newFixture(t)
	args := []string{"a b", "$(x)", "'", "it's", "new\nline", "`id`", "*", "", "\\", "$HOME", ";", "-n", "\"q\""}
	argv := append([]string{"printf", `%s\0`}, args...)
	out, stderr, code, err := f.pool.ExecOutput(ctxT(t), f.target, argv, nil)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v stderr %q", code, err, stderr)
	}
	got := strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(args, "|") || len(got) != len(args) {
		t.Fatalf("arguments changed on the way:\n got %q\nwant %q", got, args)
	}
}

func TestExecEmptyArgvRejected(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.Exec(ctxT(t), f.target, nil, nil, nil, nil)
	if !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("want invalid_input, got %v", err)
	}
}

func TestPoolReusesOneConnection(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		if code, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil || code != 0 {
			t.Fatalf("exec %d: code %d err %v", i, code, err)
		}
	}
	if n := f.server.accepts.Load(); n != 1 {
		t.Fatalf("want 1 TCP connection for 5 commands, got %d", n)
	}
}

func TestPoolProbesIdleConnection(t *testing.T) {
	f := newFixture(t)
	f.pool.idleCheck = 0 // every reuse counts as idle
	for range 3 {
		if _, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.server.keepalives.Load(); n != 2 {
		t.Fatalf("want a keepalive before each of the 2 reuses, got %d", n)
	}
	if n := f.server.accepts.Load(); n != 1 {
		t.Fatalf("want 1 connection, got %d", n)
	}
}

func TestPoolRedialsAfterServerDrops(t *testing.T) {
	f := newFixture(t)
	if _, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	f.server.dropAll()
	out, _, code, err := f.pool.ExecOutput(ctxT(t), f.target, []string{"echo", "again"}, nil)
	if err != nil || code != 0 || out != "again\n" {
		t.Fatalf("after drop: out %q code %d err %v", out, code, err)
	}
	if n := f.server.accepts.Load(); n != 2 {
		t.Fatalf("want a second connection after the drop, got %d connections", n)
	}
}

func TestPoolForgetCloses(t *testing.T) {
	f := newFixture(t)
	c1, err := f.pool.Client(ctxT(t), f.target)
	if err != nil {
		t.Fatal(err)
	}
	f.pool.Forget(f.target.VMID)
	if _, _, err := c1.SendRequest("x", true, nil); err == nil {
		t.Fatal("connection still open after Forget")
	}
	if _, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.server.accepts.Load(); n != 2 {
		t.Fatalf("want a redial after Forget, got %d connections", n)
	}
	f.pool.Close()
	if _, err := f.pool.Client(ctxT(t), f.target); err == nil {
		t.Fatal("Client works after Close")
	}
}

func TestHostKeyMismatchRefused(t *testing.T) {
	f := newFixture(t)
	other, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	target := f.target
	target.HostKey = other.Public
	_, err = f.pool.Exec(ctxT(t), target, []string{"true"}, nil, nil, nil)
	var mismatch *HostKeyMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("want HostKeyMismatchError, got %v", err)
	}
	want := "host key mismatch for VM vm1: expected " + fingerprint(other.Public) + ", got " + fingerprint(f.host.Public)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if !api.IsKind(err, api.KindGuest) {
		t.Fatalf("want kind guest_error, got %v", err)
	}
	if _, _, cmds := recordedCommands(f.server); len(cmds) != 0 {
		t.Fatalf("a command ran despite the mismatch: %q", cmds)
	}
	// WaitReady must not keep retrying a mismatch.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := WaitReady(ctx, f.pool, target, 50*time.Millisecond); !errors.As(err, &mismatch) {
		t.Fatalf("WaitReady: want mismatch, got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("WaitReady retried a host key mismatch")
	}
}

func TestNoPinnedHostKeyRefused(t *testing.T) {
	f := newFixture(t)
	target := f.target
	target.HostKey = nil
	if _, err := f.pool.Exec(ctxT(t), target, []string{"true"}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no pinned SSH host key") {
		t.Fatalf("want refusal without a pinned key, got %v", err)
	}
	if n := f.server.accepts.Load(); n != 0 {
		t.Fatalf("dialled without a pinned key (%d connections)", n)
	}
}

func recordedCommands(s *testServer) (ptys, wins int, cmds []string) {
	p, w, _, c := s.recorded()
	return len(p), len(w), c
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestWaitReadyTimesOutWithLastError(t *testing.T) {
	f := newFixture(t)
	target := f.target
	target.Addr = closedPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := WaitReady(ctx, f.pool, target, 50*time.Millisecond)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("WaitReady succeeded against a closed port")
	}
	if elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("WaitReady returned after %s, want about 300ms", elapsed)
	}
	if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "last error") {
		t.Fatalf("error does not carry the last dial error: %v", err)
	}
	if !api.IsKind(err, api.KindUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want unavailable wrapping DeadlineExceeded, got %v", err)
	}
}

func TestWaitReadySucceedsOnceServerStarts(t *testing.T) {
	key, err := EnsureClientKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	host, err := NewHostKey()
	if err != nil {
		t.Fatal(err)
	}
	addr := closedPort(t)
	pool := NewPool(key, nil)
	defer pool.Close()
	target := Target{VMID: "late", Addr: addr, User: "root", HostKey: host.Public}

	started := make(chan *testServer, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		started <- startTestServer(t, addr, parseHostSigner(t, host), key.Signer.PublicKey())
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitReady(ctx, pool, target, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	srv := <-started
	if _, _, cmds := recordedCommands(srv); len(cmds) == 0 || cmds[len(cmds)-1] != "'true'" {
		t.Fatalf("WaitReady did not run true: %q", cmds)
	}
}

func TestExecCancelKillsCommand(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.pool.Exec(ctx, f.target, []string{"sleep", "30"}, nil, nil, nil)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a cancellation error, got %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("Exec took %s after cancel", time.Since(start))
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, _, sigs, _ := f.server.recorded()
		if len(sigs) == 1 && sigs[0] == "KILL" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want one KILL signal, got %q", sigs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The pooled connection stays usable.
	if code, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil || code != 0 {
		t.Fatalf("after cancel: code %d err %v", code, err)
	}
}

func TestPing(t *testing.T) {
	f := newFixture(t)
	rtt, err := Ping(ctxT(t), f.pool, f.target)
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("implausible round trip %s", rtt)
	}
	if f.server.keepalives.Load() != 1 {
		t.Fatalf("want one keepalive, got %d", f.server.keepalives.Load())
	}
	target := f.target
	target.VMID, target.Addr = "gone", closedPort(t)
	if _, err := Ping(ctxT(t), f.pool, target); !api.IsKind(err, api.KindUnavailable) {
		t.Fatalf("want unavailable for a dead VM, got %v", err)
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{max: 5}
	for _, w := range []string{"abc", "defg", "hi"} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	want := "abcde\n[banger: output truncated, 4 more bytes dropped]\n"
	if got := b.String(); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	small := &cappedBuffer{max: 5}
	small.Write([]byte("abcde"))
	if small.String() != "abcde" {
		t.Fatalf("exactly full buffer got a marker: %q", small.String())
	}
}

func TestPoolConcurrentCallersShareOneDial(t *testing.T) {
	f := newFixture(t)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil)
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := f.server.accepts.Load(); n != 1 {
		t.Fatalf("8 concurrent commands opened %d connections, want 1", n)
	}
}

func TestPoolRedialsWhenTargetMoves(t *testing.T) {
	f := newFixture(t)
	if _, err := f.pool.Exec(ctxT(t), f.target, []string{"true"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Same VM, restarted with a new address: the old connection must not be used.
	moved := startTestServer(t, "127.0.0.1:0", parseHostSigner(t, f.host), f.key.Signer.PublicKey())
	target := f.target
	target.Addr = moved.addr()
	if _, err := f.pool.Exec(ctxT(t), target, []string{"true"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if moved.accepts.Load() != 1 || f.server.accepts.Load() != 1 {
		t.Fatalf("connections: old %d new %d, want 1 each", f.server.accepts.Load(), moved.accepts.Load())
	}
	if _, _, cmds := recordedCommands(moved); len(cmds) != 1 {
		t.Fatalf("command did not run on the new address: %q", cmds)
	}
}
