package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
)

// Handler serves one method. params is the raw "params" member, nil when
// it was absent or null. The result is encoded with encoding/json.
type Handler func(ctx context.Context, params json.RawMessage) (any, error)

// ServerOptions configure a Server. The zero value is usable.
type ServerOptions struct {
	// MaxMessageBytes bounds one incoming line; zero means
	// DefaultMaxMessageBytes. A longer line is answered with -32600 and
	// skipped; the connection stays usable.
	MaxMessageBytes int
	// MaxInFlight bounds the concurrent calls of one connection; zero
	// means 64. When reached, the server stops reading that connection
	// until a call finishes.
	MaxInFlight int
	// Logger receives one debug record per call (method and duration,
	// never params). Nil means slog.Default().
	Logger *slog.Logger
}

// Server dispatches JSON-RPC 2.0 calls to registered handlers. Register
// every method before serving.
type Server struct {
	maxMessage  int
	maxInFlight int
	log         *slog.Logger

	mu       sync.RWMutex
	handlers map[string]Handler
	streams  map[string]StreamHandler // see stream.go
}

// NewServer returns a server with no methods.
func NewServer(opts ServerOptions) *Server {
	s := &Server{maxMessage: opts.MaxMessageBytes, maxInFlight: opts.MaxInFlight, log: opts.Logger,
		handlers: map[string]Handler{}}
	if s.maxMessage <= 0 {
		s.maxMessage = DefaultMaxMessageBytes
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = 64
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Handle registers h for method. Registering a method twice, an empty
// name or a name in the reserved "rpc." namespace is a programming error
// and panics.
func (s *Server) Handle(method string, h Handler) {
	if method == "" || strings.HasPrefix(method, "rpc.") || h == nil {
		panic(fmt.Sprintf("rpc: invalid registration of method %q", method))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.handlers[method]; dup {
		panic(fmt.Sprintf("rpc: method %q registered twice", method))
	}
	s.handlers[method] = h
}

// Methods returns the registered method names, sorted.
func (s *Server) Methods() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.handlers))
	for name := range s.handlers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func (s *Server) handler(method string) Handler {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.handlers[method]
}

// Register registers fn for method. Params are decoded strictly into P:
// unknown fields and wrong types are -32602 errors; absent or null params
// (and an empty array) give the zero P.
func Register[P, R any](s *Server, method string, fn func(context.Context, P) (R, error)) {
	s.Handle(method, func(ctx context.Context, params json.RawMessage) (any, error) {
		var p P
		if err := decodeParams(params, &p); err != nil {
			return nil, err
		}
		return fn(ctx, p)
	})
}

// RegisterNoParams registers fn for a method that takes no params. Absent,
// null, {} and [] params are accepted; anything else is -32602.
func RegisterNoParams[R any](s *Server, method string, fn func(context.Context) (R, error)) {
	s.Handle(method, func(ctx context.Context, params json.RawMessage) (any, error) {
		if !isEmptyStructured(params) {
			return nil, invalidParams("%s takes no params", method)
		}
		return fn(ctx)
	})
}

// isEmptyStructured reports whether params are absent, null, {} or [].
func isEmptyStructured(params json.RawMessage) bool {
	switch {
	case len(params) == 0:
		return true
	case params[0] == '{':
		var m map[string]json.RawMessage
		return json.Unmarshal(params, &m) == nil && len(m) == 0
	case params[0] == '[':
		var a []json.RawMessage
		return json.Unmarshal(params, &a) == nil && len(a) == 0
	}
	return false
}

func decodeParams(params json.RawMessage, dst any) error {
	if len(params) == 0 {
		return nil
	}
	kind := reflect.TypeOf(dst).Elem().Kind()
	if params[0] == '[' && kind != reflect.Slice && kind != reflect.Array {
		if isEmptyStructured(params) {
			return nil
		}
		return invalidParams("params must be an object, not an array")
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return invalidParams("invalid params: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// Serve accepts connections on l and serves each until ctx ends. It then
// closes l and every connection, cancels in-flight calls and returns nil
// once their handlers have returned. Any other accept failure is returned
// (after the same clean-up).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var conns sync.WaitGroup
	defer conns.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before conns.Wait: stop every connection first
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isTemporaryAcceptError(err) {
				s.log.Warn("rpc: accept failed, retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return fmt.Errorf("rpc: accepting connections: %w", err)
		}
		backoff = 5 * time.Millisecond
		conns.Go(func() { s.ServeConn(ctx, c) })
	}
}

// isTemporaryAcceptError reports errors that say "try again later"
// (out of file descriptors or memory, a connection that died in the queue).
func isTemporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// ServeConn serves one connection until the peer disconnects or ctx ends,
// then waits for its handlers and closes c.
//
// A peer that only shuts down its write side (half-close) still receives
// the responses of its in-flight calls; a peer that closes the connection
// has those calls cancelled.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the connection is what unblocks the reader when the server
	// stops or a write fails.
	stopClose := context.AfterFunc(ctx, func() { c.Close() })
	defer stopClose()

	sc := &serverConn{c: c, cancel: cancel, sem: make(chan struct{}, s.maxInFlight),
		inflight: map[string]*inflightCall{}}
	lr := newLineReader(c, s.maxMessage)
	var readErr error
	for first := true; ; first = false {
		line, err := lr.next()
		if first && err == nil {
			if req, h, ok := s.streamRequest(line); ok {
				// The connection becomes a raw stream (stream.go).
				s.serveStream(ctx, c, lr.r, req, h)
				c.Close()
				return
			}
		}
		if errors.Is(err, errLineTooLong) {
			sc.write(errorResponse(nil, protocolError(api.CodeInvalidRequest,
				"invalid request: message exceeds the maximum size of %d bytes", s.maxMessage)))
			continue
		}
		if err != nil {
			readErr = err
			break
		}
		s.dispatch(ctx, sc, line)
	}
	if !(errors.Is(readErr, io.EOF) && onlyHalfClosed(c)) {
		cancel()
	}
	sc.calls.Wait()
	c.Close()
}

// onlyHalfClosed reports whether the peer of a Unix or TCP socket shut
// down only its write side, as opposed to closing the connection. Linux
// reports POLLHUP only when both directions are shut down.
func onlyHalfClosed(c net.Conn) bool {
	sysConn, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sysConn.SyscallConn()
	if err != nil {
		return false
	}
	half := false
	_ = raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n == 1 {
			half = fds[0].Revents&(unix.POLLHUP|unix.POLLERR) == 0
		}
	})
	return half
}

// serverConn is the per-connection state shared by its calls.
type serverConn struct {
	c      net.Conn
	cancel context.CancelFunc

	writeMu  sync.Mutex
	writeErr error

	sem   chan struct{}
	calls sync.WaitGroup

	inflightMu sync.Mutex
	inflight   map[string]*inflightCall // by raw id, for rpc.cancel
}

type inflightCall struct{ cancel context.CancelFunc }

// write sends one message line. After the first failure the peer is gone:
// the connection's context is cancelled and later writes are dropped.
func (sc *serverConn) write(msg []byte) {
	sc.writeMu.Lock()
	defer sc.writeMu.Unlock()
	if sc.writeErr != nil {
		return
	}
	if _, err := sc.c.Write(append(msg, '\n')); err != nil {
		sc.writeErr = err
		sc.cancel()
	}
}

func (sc *serverConn) track(id json.RawMessage, cancel context.CancelFunc) *inflightCall {
	call := &inflightCall{cancel: cancel}
	sc.inflightMu.Lock()
	defer sc.inflightMu.Unlock()
	sc.inflight[string(id)] = call
	return call
}

func (sc *serverConn) untrack(id json.RawMessage, call *inflightCall) {
	sc.inflightMu.Lock()
	defer sc.inflightMu.Unlock()
	if sc.inflight[string(id)] == call {
		delete(sc.inflight, string(id))
	}
}

func (sc *serverConn) cancelCall(id json.RawMessage) {
	sc.inflightMu.Lock()
	defer sc.inflightMu.Unlock()
	if call := sc.inflight[string(id)]; call != nil {
		call.cancel()
	}
}

// request is a validated request object.
type request struct {
	id           json.RawMessage // nil for a notification
	notification bool
	method       string
	params       json.RawMessage // nil when absent or null
}

// dispatch handles one line: a request, a notification or a batch. It
// blocks while the connection has MaxInFlight calls running.
func (s *Server) dispatch(ctx context.Context, sc *serverConn, line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return // blank lines are keep-alives, not messages
	}
	if !json.Valid(line) {
		sc.write(errorResponse(nil, protocolError(api.CodeParseError, "parse error: message is not valid JSON")))
		return
	}
	if line[0] != '[' {
		req, errResp := parseRequest(line)
		if errResp != nil {
			sc.write(errResp)
			return
		}
		if resp, handled := s.builtin(sc, req); handled {
			if resp != nil {
				sc.write(resp)
			}
			return
		}
		if !acquire(ctx, sc.sem) {
			return
		}
		sc.calls.Go(func() {
			defer func() { <-sc.sem }()
			if resp := s.call(ctx, sc, req); resp != nil {
				sc.write(resp)
			}
		})
		return
	}

	var entries []json.RawMessage
	if err := json.Unmarshal(line, &entries); err != nil || len(entries) == 0 {
		sc.write(errorResponse(nil, protocolError(api.CodeInvalidRequest, "invalid request: empty batch")))
		return
	}
	responses := make([][]byte, len(entries))
	var batch sync.WaitGroup
	for i, entry := range entries {
		req, errResp := parseRequest(entry)
		if errResp != nil {
			responses[i] = errResp
			continue
		}
		if resp, handled := s.builtin(sc, req); handled {
			responses[i] = resp
			continue
		}
		if !acquire(ctx, sc.sem) {
			break
		}
		batch.Go(func() {
			defer func() { <-sc.sem }()
			responses[i] = s.call(ctx, sc, req)
		})
	}
	// The collector holds no slot: only the entries' calls count.
	sc.calls.Go(func() {
		batch.Wait()
		var out []byte
		for _, resp := range responses {
			if resp == nil {
				continue
			}
			if out == nil {
				out = append(out, '[')
			} else {
				out = append(out, ',')
			}
			out = append(out, resp...)
		}
		if out != nil { // a batch of notifications gets no response at all
			sc.write(append(out, ']'))
		}
	})
}

func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// parseRequest validates one request object. On failure it returns the
// -32600 response to send (with the request's id when that id is usable).
func parseRequest(raw json.RawMessage) (request, []byte) {
	var members map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &members) != nil {
		return request{}, errorResponse(nil, protocolError(api.CodeInvalidRequest,
			"invalid request: a request must be a JSON object"))
	}
	id, hasID := members["id"]
	respID := nullID
	if hasID {
		switch id[0] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			respID = id
		default:
			return request{}, errorResponse(nil, protocolError(api.CodeInvalidRequest,
				"invalid request: id must be a string, a number or null"))
		}
	}
	invalid := func(msg string) (request, []byte) {
		return request{}, errorResponse(respID, protocolError(api.CodeInvalidRequest, "invalid request: %s", msg))
	}
	var version string
	if v, ok := members["jsonrpc"]; !ok || json.Unmarshal(v, &version) != nil || version != "2.0" {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	req := request{id: id, notification: !hasID}
	m, ok := members["method"]
	if !ok || m[0] != '"' || json.Unmarshal(m, &req.method) != nil {
		return invalid(`"method" must be a string`)
	}
	if p, ok := members["params"]; ok {
		switch p[0] {
		case '{', '[':
			req.params = p
		case 'n': // null is treated as absent
		default:
			return invalid(`"params" must be an object or an array`)
		}
	}
	return req, nil
}

// builtin serves the reserved rpc.* methods inline, so a cancel is never
// queued behind the calls it is meant to cancel.
func (s *Server) builtin(sc *serverConn, req request) (resp []byte, handled bool) {
	if req.method != MethodCancel {
		return nil, false
	}
	var p cancelParams
	if err := decodeParams(req.params, &p); err != nil || len(p.ID) == 0 {
		if req.notification {
			return nil, true
		}
		return errorResponse(req.id, invalidParams(`%s needs params {"id": <id>}`, MethodCancel)), true
	}
	sc.cancelCall(p.ID)
	if req.notification {
		return nil, true
	}
	return resultResponse(req.id, []byte("null")), true
}

// call runs one request and returns its response, nil for a notification.
func (s *Server) call(ctx context.Context, sc *serverConn, req request) []byte {
	h := s.handler(req.method)
	if h == nil {
		s.log.Debug("rpc call", "method", truncate(req.method, 100), "code", api.CodeMethodNotFound)
		if req.notification {
			return nil
		}
		return errorResponse(req.id, protocolError(api.CodeMethodNotFound, "method not found: %q", truncate(req.method, 100)))
	}

	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !req.notification {
		tracked := sc.track(req.id, cancel)
		defer sc.untrack(req.id, tracked)
	}

	start := time.Now()
	result, err := s.invoke(callCtx, h, req)
	var body []byte
	if err == nil {
		if body, err = marshalNoEscape(result); err != nil {
			err = fmt.Errorf("cannot encode the result of %s: %w", req.method, err)
		}
	}
	var rpcErr *api.Error
	code := 0
	if err != nil {
		rpcErr = toAPIError(err)
		code = rpcErr.Code
	}
	s.log.Debug("rpc call", "method", req.method, "duration", time.Since(start), "code", code,
		"notification", req.notification)

	switch {
	case req.notification:
		return nil
	case rpcErr != nil:
		return errorResponse(req.id, rpcErr)
	default:
		return resultResponse(req.id, body)
	}
}

// invoke runs h, turning a panic into an internal error so one bad
// handler cannot take the daemon down.
func (s *Server) invoke(ctx context.Context, h Handler, req request) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("rpc handler panicked", "method", req.method, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error in %s (the daemon log has details)", req.method)
		}
	}()
	return h(ctx, req.params)
}

// toAPIError maps a handler error to the error object sent to the client.
func toAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		out := *ae
		if out.Code == 0 {
			out.Code = ae.Kind().Code()
		}
		return &out
	}
	if errors.Is(err, context.Canceled) {
		return api.Errorf(api.KindCancelled, "%s", err.Error())
	}
	return &api.Error{Code: api.CodeInternal, Message: err.Error(), Data: &api.ErrorData{Kind: api.KindInternal}}
}

// truncate bounds client-chosen strings before they reach logs or errors.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
