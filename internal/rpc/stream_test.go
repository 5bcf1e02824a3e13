package rpc

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

type streamParams struct {
	Prefix string `json:"prefix"`
	Fail   bool   `json:"fail"`
}

// registerStreams adds an "upper" stream: it accepts with the prefix,
// writes the prefix, then echoes what the client sends in upper case
// until the client half-closes.
func registerStreams(env *testEnv) {
	RegisterStream(env.server, "upper", func(_ context.Context, p streamParams, st *Stream) error {
		if p.Fail {
			return api.NotFound("session", p.Prefix)
		}
		if err := st.Accept(map[string]string{"prefix": p.Prefix}); err != nil {
			return err
		}
		if _, err := io.WriteString(st, p.Prefix); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		for {
			n, err := st.Read(buf)
			if n > 0 {
				if _, werr := st.Write([]byte(strings.ToUpper(string(buf[:n])))); werr != nil {
					return werr
				}
			}
			if err != nil {
				return st.CloseWrite()
			}
		}
	})
}

func startStreamServer(t *testing.T) *testEnv {
	t.Helper()
	env := startServerWith(t, ServerOptions{}, registerStreams)
	return env
}

func TestStreamRoundTrip(t *testing.T) {
	env := startStreamServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var res map[string]string
	conn, err := OpenStream(ctx, env.socket, "upper", streamParams{Prefix: "> "}, &res)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if res["prefix"] != "> " {
		t.Fatalf("result = %v, want prefix %q", res, "> ")
	}
	if _, err := io.WriteString(conn, "hello\nworld"); err != nil {
		t.Fatal(err)
	}
	conn.(interface{ CloseWrite() error }).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "> HELLO\nWORLD" {
		t.Fatalf("stream = %q, want %q", got, "> HELLO\nWORLD")
	}
}

func TestStreamErrorBeforeAccept(t *testing.T) {
	env := startStreamServer(t)
	_, err := OpenStream(context.Background(), env.socket, "upper", streamParams{Prefix: "s1", Fail: true}, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind() != api.KindNotFound {
		t.Fatalf("err = %v, want a not_found *api.Error", err)
	}
	_, err = OpenStream(context.Background(), env.socket, "upper", map[string]any{"bogus": 1}, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalidParams {
		t.Fatalf("err = %v, want invalid params", err)
	}
}

// Bytes pipelined right behind the request line belong to the stream,
// even though the server's line reader has already buffered them.
func TestStreamKeepsPipelinedBytes(t *testing.T) {
	env := startStreamServer(t)
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","id":7,"method":"upper","params":{"prefix":"p:"}}` + "\nabc")
	resp := parseResponse(t, rc.readLine())
	if resp.Error != nil || string(resp.ID) != "7" {
		t.Fatalf("response = %+v", resp)
	}
	rc.c.CloseWrite()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(rc.r)
	if string(got) != "p:ABC\n" {
		t.Fatalf("stream = %q, want %q", got, "p:ABC\n")
	}
}

// A stream method is refused where it cannot own the connection.
func TestStreamMisuseIsInvalidRequest(t *testing.T) {
	env := startStreamServer(t)
	rc := env.dialRaw(t)
	if r := parseResponse(t, rc.roundTrip(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)); r.Error != nil {
		t.Fatalf("ping: %+v", r.Error)
	}
	r := parseResponse(t, rc.roundTrip(`{"jsonrpc":"2.0","id":2,"method":"upper","params":{}}`))
	if r.Error == nil || r.Error.Code != api.CodeInvalidRequest {
		t.Fatalf("stream after a call: %+v, want -32600", r)
	}
	rc2 := env.dialRaw(t)
	line := rc2.roundTrip(`[{"jsonrpc":"2.0","id":1,"method":"upper","params":{}}]`)
	if !strings.Contains(line, `"code":-32600`) {
		t.Fatalf("stream in a batch: %s, want -32600", line)
	}
	// The connection still serves calls.
	if r := parseResponse(t, rc2.roundTrip(`{"jsonrpc":"2.0","id":3,"method":"ping"}`)); r.Error != nil {
		t.Fatalf("ping after refused stream: %+v", r.Error)
	}
}

// The server stopping closes an open stream.
func TestStreamEndsWhenServerStops(t *testing.T) {
	env := startStreamServer(t)
	conn, err := OpenStream(context.Background(), env.socket, "upper", streamParams{Prefix: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	env.stop()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("stream still open after the server stopped (read %q)", got)
	}
}

func TestOpenStreamHonoursContext(t *testing.T) {
	dir := shortSocketDir(t)
	l, err := net.Listen("unix", dir+"/silent.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c) // never answers
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := OpenStream(ctx, dir+"/silent.sock", "upper", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("OpenStream ignored its context")
	}
}
