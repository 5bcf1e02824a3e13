package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeQMP is an in-test QMP server. handle decides the lines sent in reply
// to each command (after the greeting); it sees the decoded request.
type fakeQMP struct {
	path     string
	greeting string
	handle   func(req map[string]any) []string

	mu       sync.Mutex
	commands []string
}

const qemuGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`

func startFakeQMP(t *testing.T, handle func(req map[string]any) []string) *fakeQMP {
	return startFakeQMPWithGreeting(t, qemuGreeting, handle)
}

func startFakeQMPWithGreeting(t *testing.T, greeting string, handle func(req map[string]any) []string) *fakeQMP {
	t.Helper()
	f := &fakeQMP{
		path:     filepath.Join(t.TempDir(), "qmp.sock"),
		greeting: greeting,
		handle:   handle,
	}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(conn)
		}
	}()
	return f
}

func (f *fakeQMP) serve(conn net.Conn) {
	defer conn.Close()
	fmt.Fprintln(conn, f.greeting)
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var req map[string]any
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintf(conn, `{"error": {"class": "GenericError", "desc": "JSON parse error"}}`+"\n")
			continue
		}
		cmd, _ := req["execute"].(string)
		f.mu.Lock()
		f.commands = append(f.commands, cmd)
		f.mu.Unlock()
		for _, line := range f.handle(req) {
			fmt.Fprintln(conn, line)
		}
	}
}

func idOf(req map[string]any) string {
	b, _ := json.Marshal(req["id"])
	return string(b)
}

func TestQMPClientHandshakeEventsAndErrors(t *testing.T) {
	f := startFakeQMP(t, func(req map[string]any) []string {
		id := idOf(req)
		switch req["execute"] {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": ` + id + `}`}
		case "query-status":
			// Events may arrive before the reply; a reply with a
			// foreign id must not be taken for ours.
			return []string{
				`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`,
				`{"return": {"status": "paused", "running": false}, "id": 9999}`,
				`{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "STOP", "data": {}}`,
				`{"return": {"status": "running", "singlestep": false, "running": true}, "id": ` + id + `}`,
			}
		case "stop":
			return []string{`{"error": {"class": "GenericError", "desc": "cannot stop now"}, "id": ` + id + `}`}
		}
		return []string{`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": ` + id + `}`}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialQMP(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	raw, err := c.execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("query-status = %s (%v)", raw, err)
	}
	if len(c.events) != 2 || c.events[0].Event != "RESUME" || c.events[1].Event != "STOP" {
		t.Fatalf("events = %+v, want RESUME, STOP", c.events)
	}

	_, err = c.execute(ctx, "stop", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "cannot stop now" || qe.Command != "stop" {
		t.Fatalf("stop err = %#v", err)
	}
	// The session stays usable after an error reply.
	if _, err := c.execute(ctx, "nope", map[string]any{"x": 1}); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("nope err = %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{"qmp_capabilities", "query-status", "stop", "nope"}
	if fmt.Sprint(f.commands) != fmt.Sprint(want) {
		t.Fatalf("server saw %q, want %q", f.commands, want)
	}
}

func TestQMPClientHonoursContext(t *testing.T) {
	// The server never answers query-status.
	f := startFakeQMP(t, func(req map[string]any) []string {
		if req["execute"] == "qmp_capabilities" {
			return []string{`{"return": {}, "id": ` + idOf(req) + `}`}
		}
		return nil
	})
	c, err := dialQMP(context.Background(), f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.execute(ctx, "query-status", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("execute ignored the context deadline")
	}

	// Cancellation without a deadline also unblocks.
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := c.execute(ctx2, "query-status", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
}

func TestQMPClientRejectsBadPeers(t *testing.T) {
	// Capabilities refused: the handshake must fail.
	f := startFakeQMP(t, func(req map[string]any) []string {
		return []string{`{"error": {"class": "GenericError", "desc": "no"}, "id": ` + idOf(req) + `}`}
	})
	if _, err := dialQMP(t.Context(), f.path); err == nil {
		t.Fatal("handshake succeeded although qmp_capabilities failed")
	}
	// Not JSON at all.
	g := startFakeQMPWithGreeting(t, "hello", nil)
	if _, err := dialQMP(t.Context(), g.path); err == nil {
		t.Fatal("handshake succeeded on a non-JSON greeting")
	}
	// Nobody listening.
	if _, err := dialQMP(t.Context(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("dial succeeded without a server")
	}
}
