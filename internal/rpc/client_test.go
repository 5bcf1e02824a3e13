package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

func (env *testEnv) dial(t testing.TB) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, env.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientCallRoundTrip(t *testing.T) {
	c := startServer(t, ServerOptions{}).dial(t)
	ctx := context.Background()

	var diff int
	if err := c.Call(ctx, "subtract", subtractParams{Minuend: 42, Subtrahend: 23}, &diff); err != nil || diff != 19 {
		t.Fatalf("subtract = %d, %v", diff, err)
	}
	var pong string
	if err := c.Call(ctx, "ping", nil, &pong); err != nil || pong != "pong" {
		t.Fatalf("ping = %q, %v", pong, err)
	}
	if err := c.Call(ctx, "ping", nil, nil); err != nil {
		t.Fatalf("ping discarding the result: %v", err)
	}

	// Many concurrent calls on one connection each get their own answer.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			text := fmt.Sprintf("call-%d", i)
			var got string
			if err := c.Call(ctx, "echo", echoParams{Text: text}, &got); err != nil || got != text {
				errs <- fmt.Errorf("echo %q = %q, %v", text, got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClientNotify(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t)
	if err := c.Notify(context.Background(), "record", echoParams{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-env.notified:
		if got != "hello" {
			t.Errorf("notification carried %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notification never reached its handler")
	}
	// The failing handler's error is not sent back; the next call still works.
	var pong string
	if err := c.Call(context.Background(), "ping", nil, &pong); err != nil || pong != "pong" {
		t.Fatalf("ping after notify = %q, %v", pong, err)
	}
}

func TestClientReturnsAPIErrors(t *testing.T) {
	c := startServer(t, ServerOptions{}).dial(t)
	err := c.Call(context.Background(), "fail_api", nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want *api.Error, got %T %v", err, err)
	}
	want := api.NotFound("vm", "web1").WithHint("list VMs with: banger vm list")
	if ae.Code != want.Code || ae.Message != want.Message || ae.Data == nil || *ae.Data != *want.Data {
		t.Errorf("got %+v %+v, want %+v %+v", ae, ae.Data, want, want.Data)
	}

	err = c.Call(context.Background(), "subtract", map[string]any{"bogus": 1}, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalidParams || ae.Kind() != api.KindInvalidInput {
		t.Errorf("invalid params: %v", err)
	}
	err = c.Call(context.Background(), "nope", nil, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeMethodNotFound {
		t.Errorf("unknown method: %v", err)
	}
}

func TestClientCallCancelled(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Call(ctx, "block", labelParams{Label: "x"}, nil) }()
	<-env.started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Call returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Call did not return promptly after its context ended")
	}
	// The client asked the server to cancel the call too.
	select {
	case err := <-env.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server-side call was not cancelled")
	}
	// The connection is still good.
	if err := c.Call(context.Background(), "ping", nil, nil); err != nil {
		t.Fatal(err)
	}

	// A context that has already ended fails before anything is sent.
	if err := c.Call(ctx, "ping", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with a dead ctx = %v", err)
	}
}

// fakePeer accepts one connection, hands each request line to onLine and
// stops when onLine returns false.
func fakePeer(t *testing.T, onLine func(c net.Conn, line string) bool) string {
	t.Helper()
	socket := filepath.Join(shortSocketDir(t), "p.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || !onLine(c, strings.TrimSuffix(line, "\n")) {
				return
			}
		}
	}()
	return socket
}

func TestClientWireFormat(t *testing.T) {
	lines := make(chan string, 2)
	socket := fakePeer(t, func(c net.Conn, line string) bool {
		lines <- line
		var req struct {
			ID json.RawMessage `json:"id"`
		}
		json.Unmarshal([]byte(line), &req)
		if req.ID != nil {
			fmt.Fprintf(c, `{"jsonrpc":"2.0","id":%s,"result":{"ok":true}}`+"\n", req.ID)
		}
		return true
	})
	c, err := Dial(context.Background(), socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var res struct{ OK bool }
	if err := c.Call(context.Background(), "a.b", nil, &res); err != nil || !res.OK {
		t.Fatalf("call = %+v, %v", res, err)
	}
	var call map[string]json.RawMessage
	json.Unmarshal([]byte(<-lines), &call)
	if _, has := call["params"]; has || string(call["jsonrpc"]) != `"2.0"` || string(call["method"]) != `"a.b"` || call["id"] == nil {
		t.Errorf("call without params sent %v", call)
	}

	if err := c.Notify(context.Background(), "c.d", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	var note map[string]json.RawMessage
	json.Unmarshal([]byte(<-lines), &note)
	if _, has := note["id"]; has || string(note["params"]) != `{"n":1}` {
		t.Errorf("notification sent %v", note)
	}
}

func TestClientConnectionDrop(t *testing.T) {
	socket := fakePeer(t, func(net.Conn, string) bool { return false }) // hang up on the first request
	c, err := Dial(context.Background(), socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Call(context.Background(), "a.b", nil, nil)
	if !api.IsKind(err, api.KindUnavailable) || !strings.Contains(err.Error(), "daemon connection closed") {
		t.Fatalf("call on a dropped connection = %v", err)
	}
	// Later calls fail the same way, at once.
	if err := c.Call(context.Background(), "a.b", nil, nil); !api.IsKind(err, api.KindUnavailable) {
		t.Errorf("second call = %v", err)
	}
}

func TestClientClose(t *testing.T) {
	env := startServer(t, ServerOptions{})
	c := env.dial(t)
	done := make(chan error, 1)
	go func() { done <- c.Call(context.Background(), "block", labelParams{Label: "z"}, nil) }()
	<-env.started
	c.Close()
	select {
	case err := <-done:
		if !api.IsKind(err, api.KindUnavailable) {
			t.Errorf("pending call after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending call not released by Close")
	}
	if err := c.Call(context.Background(), "ping", nil, nil); !api.IsKind(err, api.KindUnavailable) {
		t.Errorf("call after Close = %v", err)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	s := NewServer(ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	RegisterNoParams(s, "ping", func(context.Context) (string, error) { return "pong", nil })
	socket := filepath.Join(shortSocketDir(b), "b.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	defer func() { cancel(); <-served }()

	c, err := Dial(ctx, socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var pong string
	for b.Loop() {
		if err := c.Call(ctx, "ping", nil, &pong); err != nil {
			b.Fatal(err)
		}
	}
}

func TestClientRefusesOversizedRequest(t *testing.T) {
	c := startServer(t, ServerOptions{}).dial(t)
	err := c.Call(context.Background(), "echo", echoParams{Text: strings.Repeat("x", DefaultMaxMessageBytes)}, nil)
	if !api.IsKind(err, api.KindInvalidInput) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized call = %v", err)
	}
	if err := c.Call(context.Background(), "ping", nil, nil); err != nil {
		t.Fatalf("connection unusable after a refused call: %v", err)
	}
}
