package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// testEnv is a Server on a real Unix socket plus the probes its test
// handlers report to.
type testEnv struct {
	socket   string
	server   *Server
	gate     chan struct{} // "gate" calls return once this is closed
	started  chan string   // "block"/"gate" calls send their label when running
	ended    chan error    // "block" calls send their ctx error when they return
	notified chan string   // "record" calls send their text
	serveErr chan error
	stop     context.CancelFunc
}

type echoParams struct {
	Text string `json:"text"`
}

type subtractParams struct {
	Minuend    int `json:"minuend"`
	Subtrahend int `json:"subtrahend"`
}

type labelParams struct {
	Label string `json:"label"`
}

func shortSocketDir(t testing.TB) string {
	// Unix socket paths are limited to 108 bytes; t.TempDir can exceed it.
	dir, err := os.MkdirTemp("", "bgrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startServer(t testing.TB, opts ServerOptions) *testEnv {
	t.Helper()
	return startServerWith(t, opts, nil)
}

// startServerWith is startServer with extra registrations made before
// serving starts.
func startServerWith(t testing.TB, opts ServerOptions, register func(*testEnv)) *testEnv {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	env := &testEnv{
		socket:   filepath.Join(shortSocketDir(t), "s.sock"),
		server:   NewServer(opts),
		gate:     make(chan struct{}),
		started:  make(chan string, 100),
		ended:    make(chan error, 100),
		notified: make(chan string, 100),
		serveErr: make(chan error, 1),
	}
	s := env.server
	Register(s, "subtract", func(_ context.Context, p subtractParams) (int, error) {
		return p.Minuend - p.Subtrahend, nil
	})
	Register(s, "sum", func(_ context.Context, p []int) (int, error) {
		total := 0
		for _, n := range p {
			total += n
		}
		return total, nil
	})
	Register(s, "echo", func(_ context.Context, p echoParams) (string, error) { return p.Text, nil })
	Register(s, "record", func(_ context.Context, p echoParams) (api.Empty, error) {
		env.notified <- p.Text
		return api.Empty{}, errors.New("record always fails, to prove notifications stay silent")
	})
	RegisterNoParams(s, "ping", func(context.Context) (string, error) { return "pong", nil })
	RegisterNoParams(s, "fail_api", func(context.Context) (any, error) {
		return nil, fmt.Errorf("wrapped: %w", api.NotFound("vm", "web1").WithHint("list VMs with: banger vm list"))
	})
	RegisterNoParams(s, "fail_plain", func(context.Context) (any, error) { return nil, errors.New("boom") })
	RegisterNoParams(s, "fail_cancel", func(context.Context) (any, error) {
		return nil, fmt.Errorf("stopping: %w", context.Canceled)
	})
	RegisterNoParams(s, "panic", func(context.Context) (any, error) { panic("handler bug") })
	RegisterNoParams(s, "bad_result", func(context.Context) (any, error) { return func() {}, nil })
	Register(s, "block", func(ctx context.Context, p labelParams) (any, error) {
		env.started <- p.Label
		<-ctx.Done()
		env.ended <- ctx.Err()
		return nil, ctx.Err()
	})
	Register(s, "gate", func(ctx context.Context, p labelParams) (string, error) {
		env.started <- p.Label
		select {
		case <-env.gate:
			return p.Label, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})

	if register != nil {
		register(env)
	}
	l, err := net.Listen("unix", env.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	env.stop = cancel
	go func() { env.serveErr <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-env.serveErr:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	})
	return env
}

// rawConn speaks bytes to the server, as a foreign client would.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
	r *bufio.Reader
}

func (env *testEnv) dialRaw(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", env.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c.(*net.UnixConn), r: bufio.NewReaderSize(c, 1<<20)}
}

func (rc *rawConn) send(line string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(line + "\n")); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) readLine() string {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("reading a response: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// roundTrip sends one line and reads the next response line.
func (rc *rawConn) roundTrip(line string) string {
	rc.t.Helper()
	rc.send(line)
	return rc.readLine()
}

// wireResponse keeps id raw so tests can check it byte for byte.
type wireResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

func parseResponse(t *testing.T, line string) wireResponse {
	t.Helper()
	var members map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &members); err != nil {
		t.Fatalf("response is not a JSON object: %q", line)
	}
	_, hasResult := members["result"]
	_, hasError := members["error"]
	if _, hasID := members["id"]; !hasID || hasResult == hasError {
		t.Fatalf("response needs an id and exactly one of result/error: %q", line)
	}
	var r wireResponse
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatal(err)
	}
	if r.JSONRPC != "2.0" {
		t.Fatalf("response jsonrpc = %q in %q", r.JSONRPC, line)
	}
	return r
}

func expectResult(t *testing.T, line, wantID, wantResult string) {
	t.Helper()
	r := parseResponse(t, line)
	if string(r.ID) != wantID {
		t.Errorf("id = %s, want %s (response %q)", r.ID, wantID, line)
	}
	if r.Error != nil {
		t.Fatalf("unexpected error response %q", line)
	}
	if string(r.Result) != wantResult {
		t.Errorf("result = %s, want %s", r.Result, wantResult)
	}
}

func expectError(t *testing.T, line, wantID string, wantCode int) wireResponse {
	t.Helper()
	r := parseResponse(t, line)
	if string(r.ID) != wantID {
		t.Errorf("id = %s, want %s (response %q)", r.ID, wantID, line)
	}
	if r.Error == nil {
		t.Fatalf("want error %d, got result in %q", wantCode, line)
	}
	if r.Error.Code != wantCode {
		t.Errorf("code = %d, want %d (response %q)", r.Error.Code, wantCode, line)
	}
	if r.Error.Message == "" {
		t.Errorf("error without message: %q", line)
	}
	return r
}

// expectPing proves that nothing was written between the previous
// response and this one: the next line on the wire must be ping's answer.
func (rc *rawConn) expectPing(id string) {
	rc.t.Helper()
	expectResult(rc.t, rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","id":`+id+`}`), id, `"pong"`)
}

func TestRequestWithObjectAndArrayParams(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"subtract","params":{"subtrahend":23,"minuend":42},"id":3}`), "3", "19")
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"s"}`), `"s"`, "7")
	expectResult(t, rc.roundTrip(`  {"id":4, "method":"ping", "jsonrpc":"2.0"}  `), "4", `"pong"`)
	// Null and empty params mean "no params".
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","params":null,"id":5}`), "5", `"pong"`)
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","params":{},"id":6}`), "6", `"pong"`)
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"echo","params":[],"id":7}`), "7", `""`)
	// Strings come back unmangled (no HTML escaping).
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"echo","params":{"text":"<a&b>"},"id":8}`), "8", `"<a&b>"`)
}

func TestIDsAreEchoedByteForByte(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	for _, id := range []string{
		`"abc"`, `""`, `"<&>"`, `"\u00e9\n"`, `"é"`, `0`, `-0`, `-7`, `1.5`, `1.50`, `1e3`, `2E-2`,
		`123456789012345678901234567890`, `9007199254740993`, `null`,
	} {
		line := rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","id":` + id + `}`)
		if want := `"id":` + id + `,`; !strings.Contains(line, want) {
			t.Errorf("id %s not echoed exactly: %q", id, line)
		}
		expectResult(t, line, id, `"pong"`)
	}
}

func TestIDOfWrongTypeIsInvalidRequest(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	for _, id := range []string{`{}`, `{"a":1}`, `[]`, `[1]`, `true`, `false`} {
		expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","id":`+id+`}`), "null", api.CodeInvalidRequest)
	}
	rc.expectPing("1")
}

func TestParseErrorKeepsConnectionUsable(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	for _, bad := range []string{
		`{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]`,
		`{"jsonrpc":"2.0","method":"ping","id":1} {"jsonrpc":"2.0"}`, // two values on one line
		`[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method"]`,
		`nul`,
		"\xff\xfe",
	} {
		expectError(t, rc.roundTrip(bad), "null", api.CodeParseError)
	}
	rc.expectPing("2")
}

func TestInvalidRequests(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	cases := []struct{ name, line, id string }{
		{"missing jsonrpc", `{"method":"ping","id":1}`, "1"},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","method":"ping","id":1}`, "1"},
		{"jsonrpc as number", `{"jsonrpc":2.0,"method":"ping","id":1}`, "1"},
		{"method number", `{"jsonrpc":"2.0","method":1,"params":"bar"}`, "null"},
		{"method null", `{"jsonrpc":"2.0","method":null,"id":2}`, "2"},
		{"method missing", `{"jsonrpc":"2.0","id":3}`, "3"},
		{"params string", `{"jsonrpc":"2.0","method":"ping","params":"bar","id":4}`, "4"},
		{"params number", `{"jsonrpc":"2.0","method":"ping","params":1,"id":5}`, "5"},
		{"params bool", `{"jsonrpc":"2.0","method":"ping","params":true,"id":6}`, "6"},
		{"top-level number", `1`, "null"},
		{"top-level string", `"x"`, "null"},
		{"top-level null", `null`, "null"},
		{"unrelated object", `{"foo":"bar"}`, "null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, rc.roundTrip(tc.line), tc.id, api.CodeInvalidRequest)
		})
	}
	rc.expectPing("9")
}

func TestMethodNotFound(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"foobar","id":"1"}`), `"1"`, api.CodeMethodNotFound)
	expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"rpc.other","id":2}`), "2", api.CodeMethodNotFound)
}

func TestInvalidParams(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)
	cases := []struct{ name, line string }{
		{"wrong type", `{"jsonrpc":"2.0","method":"subtract","params":{"minuend":"42"},"id":1}`},
		{"unknown field", `{"jsonrpc":"2.0","method":"subtract","params":{"minuend":1,"subtrahend":2,"extra":3},"id":1}`},
		{"array for struct", `{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}`},
		{"object for array", `{"jsonrpc":"2.0","method":"sum","params":{"a":1},"id":1}`},
		{"array element type", `{"jsonrpc":"2.0","method":"sum","params":[1,"2"],"id":1}`},
		{"params to no-param method", `{"jsonrpc":"2.0","method":"ping","params":{"a":1},"id":1}`},
		{"array to no-param method", `{"jsonrpc":"2.0","method":"ping","params":[1],"id":1}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := expectError(t, rc.roundTrip(tc.line), "1", api.CodeInvalidParams)
			var data api.ErrorData
			if err := json.Unmarshal(r.Error.Data, &data); err != nil || data.Kind != api.KindInvalidInput {
				t.Errorf("data = %s, want kind %s", r.Error.Data, api.KindInvalidInput)
			}
		})
	}
}

func TestHandlerErrors(t *testing.T) {
	rc := startServer(t, ServerOptions{}).dialRaw(t)

	r := expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"fail_api","id":1}`), "1", api.CodeNotFound)
	var data api.ErrorData
	if err := json.Unmarshal(r.Error.Data, &data); err != nil {
		t.Fatal(err)
	}
	want := api.ErrorData{Kind: api.KindNotFound, Resource: "vm", ID: "web1", Hint: "list VMs with: banger vm list"}
	if data != want || r.Error.Message != `vm "web1" not found` {
		t.Errorf("got %q %+v, want the api.Error as returned", r.Error.Message, data)
	}

	r = expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"fail_plain","id":2}`), "2", api.CodeInternal)
	if r.Error.Message != "boom" || string(r.Error.Data) != `{"kind":"internal"}` {
		t.Errorf("plain error = %q %s", r.Error.Message, r.Error.Data)
	}

	r = expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"fail_cancel","id":3}`), "3", api.CodeCancelled)
	if !strings.Contains(string(r.Error.Data), `"kind":"cancelled"`) {
		t.Errorf("cancel error data = %s", r.Error.Data)
	}

	expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"panic","id":4}`), "4", api.CodeInternal)
	expectError(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"bad_result","id":5}`), "5", api.CodeInternal)
	rc.expectPing("6")
}

func TestNotificationsAreNeverAnswered(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	// "record" fails: even its error must not be sent.
	rc.send(`{"jsonrpc":"2.0","method":"record","params":{"text":"n1"}}`)
	select {
	case got := <-env.notified:
		if got != "n1" {
			t.Fatalf("handler got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notification handler never ran")
	}
	rc.send(`{"jsonrpc":"2.0","method":"no_such_method"}`)
	rc.send(`{"jsonrpc":"2.0","method":"subtract","params":{"bogus":1}}`)
	rc.send(`{"jsonrpc":"2.0","method":"panic"}`)
	rc.expectPing("1")
}

func TestBatches(t *testing.T) {
	env := startServer(t, ServerOptions{})

	t.Run("empty", func(t *testing.T) {
		rc := env.dialRaw(t)
		line := rc.roundTrip(`[]`)
		if strings.HasPrefix(line, "[") {
			t.Fatalf("empty batch must get a single response object, got %q", line)
		}
		expectError(t, line, "null", api.CodeInvalidRequest)
	})

	t.Run("invalid entries", func(t *testing.T) {
		rc := env.dialRaw(t)
		var responses []json.RawMessage
		if err := json.Unmarshal([]byte(rc.roundTrip(`[1,2,3]`)), &responses); err != nil || len(responses) != 3 {
			t.Fatalf("want an array of 3 responses: %v %d", err, len(responses))
		}
		for _, r := range responses {
			expectError(t, string(r), "null", api.CodeInvalidRequest)
		}
	})

	t.Run("mixed", func(t *testing.T) {
		rc := env.dialRaw(t)
		line := rc.roundTrip("[" + strings.Join([]string{
			`{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"}`,
			`{"jsonrpc":"2.0","method":"record","params":{"text":"batched"}}`,
			`{"jsonrpc":"2.0","method":"subtract","params":{"minuend":42,"subtrahend":23},"id":"2"}`,
			`{"foo":"boo"}`,
			`1`,
			`{"jsonrpc":"2.0","method":"foo.get","params":{"name":"myself"},"id":"5"}`,
			`{"jsonrpc":"2.0","method":"ping","id":9.0}`,
		}, ", ") + "]")
		var responses []json.RawMessage
		if err := json.Unmarshal([]byte(line), &responses); err != nil {
			t.Fatalf("batch response is not an array: %q", line)
		}
		if len(responses) != 6 {
			t.Fatalf("want 6 responses (one per non-notification), got %d: %q", len(responses), line)
		}
		byID := map[string]wireResponse{}
		invalid := 0
		for _, raw := range responses {
			r := parseResponse(t, string(raw))
			if string(r.ID) == "null" {
				if r.Error == nil || r.Error.Code != api.CodeInvalidRequest {
					t.Errorf("null-id response should be invalid request: %s", raw)
				}
				invalid++
				continue
			}
			byID[string(r.ID)] = r
		}
		if invalid != 2 {
			t.Errorf("want 2 invalid-request responses, got %d", invalid)
		}
		if r := byID[`"1"`]; string(r.Result) != "7" {
			t.Errorf("sum: %+v", r)
		}
		if r := byID[`"2"`]; string(r.Result) != "19" {
			t.Errorf("subtract: %+v", r)
		}
		if r := byID[`"5"`]; r.Error == nil || r.Error.Code != api.CodeMethodNotFound {
			t.Errorf("foo.get: %+v", r)
		}
		if r := byID[`9.0`]; string(r.Result) != `"pong"` {
			t.Errorf("ping with id 9.0: %+v", r)
		}
		if got := <-env.notified; got != "batched" {
			t.Errorf("notification in batch ran with %q", got)
		}
	})

	t.Run("only notifications", func(t *testing.T) {
		rc := env.dialRaw(t)
		rc.send(`[{"jsonrpc":"2.0","method":"record","params":{"text":"a"}},{"jsonrpc":"2.0","method":"record","params":{"text":"b"}}]`)
		got := map[string]bool{<-env.notified: true, <-env.notified: true}
		if !got["a"] || !got["b"] {
			t.Errorf("notifications ran with %v", got)
		}
		rc.expectPing("10")
	})
}

func TestOversizedMessage(t *testing.T) {
	const limit = 1024
	rc := startServer(t, ServerOptions{MaxMessageBytes: limit}).dialRaw(t)
	echo := func(text string) string {
		return `{"jsonrpc":"2.0","method":"echo","params":{"text":"` + text + `"},"id":1}`
	}
	overhead := len(echo(""))

	exact := strings.Repeat("x", limit-overhead)
	expectResult(t, rc.roundTrip(echo(exact)), "1", `"`+exact+`"`)

	for _, size := range []int{limit + 1, 10 * limit, 300 << 10} {
		r := expectError(t, rc.roundTrip(echo(strings.Repeat("y", size-overhead))), "null", api.CodeInvalidRequest)
		if !strings.Contains(r.Error.Message, "1024") {
			t.Errorf("message should state the limit: %q", r.Error.Message)
		}
		rc.expectPing("2")
	}
}

func TestConcurrentCallsAnswerOutOfOrder(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","method":"gate","params":{"label":"slow"},"id":1}`)
	if got := <-env.started; got != "slow" {
		t.Fatalf("started %q", got)
	}
	// The slow call is still running; the fast one must not wait for it.
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"ping","id":2}`), "2", `"pong"`)
	close(env.gate)
	expectResult(t, rc.readLine(), "1", `"slow"`)
}

func TestInFlightCallsAreBounded(t *testing.T) {
	env := startServer(t, ServerOptions{MaxInFlight: 2})
	rc := env.dialRaw(t)
	for i := range 3 {
		rc.send(fmt.Sprintf(`{"jsonrpc":"2.0","method":"gate","params":{"label":"g%d"},"id":%d}`, i, i))
	}
	<-env.started
	<-env.started
	select {
	case got := <-env.started:
		t.Fatalf("third call %s started while two were in flight", got)
	case <-time.After(100 * time.Millisecond):
	}
	close(env.gate)
	seen := map[string]bool{}
	for range 3 {
		seen[string(parseResponse(t, rc.readLine()).ID)] = true
	}
	if len(seen) != 3 {
		t.Errorf("responses for ids %v", seen)
	}
}

func TestDisconnectCancelsInFlightCalls(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","method":"block","params":{"label":"b"},"id":1}`)
	<-env.started
	rc.c.Close()
	select {
	case err := <-env.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ctx ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler's context was not cancelled when the client disconnected")
	}
}

func TestHalfCloseStillGetsResponses(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","method":"gate","params":{"label":"h"},"id":1}`)
	<-env.started
	if err := rc.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the server see EOF before the call ends
	close(env.gate)
	expectResult(t, rc.readLine(), "1", `"h"`)
}

func TestCancelNotificationCancelsOneCall(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","method":"block","params":{"label":"c"},"id":"op-7"}`)
	<-env.started
	rc.send(`{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":"op-7"}}`)
	r := expectError(t, rc.readLine(), `"op-7"`, api.CodeCancelled)
	if !strings.Contains(string(r.Error.Data), "cancelled") {
		t.Errorf("data %s", r.Error.Data)
	}
	rc.expectPing("1")
}

func TestServeStopsAndWaitsForHandlers(t *testing.T) {
	env := startServer(t, ServerOptions{})
	rc := env.dialRaw(t)
	rc.send(`{"jsonrpc":"2.0","method":"block","params":{"label":"s"},"id":1}`)
	<-env.started
	env.stop()
	select {
	case err := <-env.serveErr:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		env.serveErr <- nil // for the cleanup's check
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	// Serve returned, so the handler must already have finished.
	select {
	case <-env.ended:
	default:
		t.Fatal("Serve returned before its handler did")
	}
	if _, err := net.Dial("unix", env.socket); err == nil {
		t.Error("listener still accepts after Serve returned")
	}
}

func TestCallsAreLoggedWithoutParams(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rc := startServer(t, ServerOptions{Logger: logger}).dialRaw(t)
	expectResult(t, rc.roundTrip(`{"jsonrpc":"2.0","method":"echo","params":{"text":"hunter2"},"id":1}`), "1", `"hunter2"`)
	out := buf.String()
	if !strings.Contains(out, "method=echo") || !strings.Contains(out, "duration=") {
		t.Errorf("log lacks method or duration: %q", out)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("log contains params: %q", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRegistrationMistakesPanic(t *testing.T) {
	s := NewServer(ServerOptions{})
	RegisterNoParams(s, "a.b", func(context.Context) (int, error) { return 0, nil })
	for name, register := range map[string]func(){
		"duplicate": func() { RegisterNoParams(s, "a.b", func(context.Context) (int, error) { return 0, nil }) },
		"reserved":  func() { RegisterNoParams(s, "rpc.x", func(context.Context) (int, error) { return 0, nil }) },
		"empty":     func() { RegisterNoParams(s, "", func(context.Context) (int, error) { return 0, nil }) },
	} {
		var panicked atomic.Bool
		func() {
			defer func() { panicked.Store(recover() != nil) }()
			register()
		}()
		if !panicked.Load() {
			t.Errorf("%s registration did not panic", name)
		}
	}
	if got := s.Methods(); len(got) != 1 || got[0] != "a.b" {
		t.Errorf("Methods() = %v", got)
	}
}
