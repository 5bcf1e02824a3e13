package rpc

// Streams: a method whose JSON-RPC response is followed by a raw byte
// stream on the same connection.
//
// Scheme. The client opens a connection of its own and sends exactly one
// request (with an id) for a stream method as its first message. The
// server answers with one ordinary response line. An error response ends
// the exchange and the server closes the connection. After a success
// response the connection stops speaking JSON-RPC: from the next byte on,
// both directions carry whatever the method defines (see the method's
// documentation in internal/api), until either side closes. Bytes the
// client sent right behind the request line are not lost; they are the
// first bytes of the stream.
//
// A stream request inside a batch, as a notification, or after other
// calls on the same connection is refused with -32600, so the framing of
// a connection never changes under calls that are still being answered.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// StreamHandler serves one stream method. It must call st.Accept before
// using the stream; returning an error before that sends an error
// response. ctx ends when the server stops; a peer that goes away shows
// up as a failed Read or Write.
type StreamHandler func(ctx context.Context, params json.RawMessage, st *Stream) error

// Stream is the server side of an accepted stream connection.
type Stream struct {
	conn     net.Conn
	r        io.Reader // the server's buffered reader, then the connection
	id       json.RawMessage
	accepted bool
}

var errNotAccepted = errors.New("rpc: stream used before Accept")

// Accept sends the success response with result; afterwards the stream
// carries raw bytes.
func (st *Stream) Accept(result any) error {
	if st.accepted {
		return errors.New("rpc: stream accepted twice")
	}
	body, err := marshalNoEscape(result)
	if err != nil {
		return fmt.Errorf("encode stream result: %w", err)
	}
	st.accepted = true
	_, err = st.conn.Write(append(resultResponse(st.id, body), '\n'))
	return err
}

// Read reads bytes the client sent after the request.
func (st *Stream) Read(p []byte) (int, error) {
	if !st.accepted {
		return 0, errNotAccepted
	}
	return st.r.Read(p)
}

// Write sends bytes to the client.
func (st *Stream) Write(p []byte) (int, error) {
	if !st.accepted {
		return 0, errNotAccepted
	}
	return st.conn.Write(p)
}

// CloseWrite tells the client no more bytes follow, while still reading
// what it sends.
func (st *Stream) CloseWrite() error {
	if cw, ok := st.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return st.conn.Close()
}

// Close closes the connection.
func (st *Stream) Close() error { return st.conn.Close() }

// HandleStream registers h for a stream method. The same rules as Handle
// apply, and a name cannot be both a call and a stream method.
func (s *Server) HandleStream(method string, h StreamHandler) {
	if method == "" || h == nil {
		panic(fmt.Sprintf("rpc: invalid registration of stream method %q", method))
	}
	s.Handle(method, func(context.Context, json.RawMessage) (any, error) {
		// Reached only for misuse (batches, notifications): a proper
		// stream request is routed before calls are dispatched.
		return nil, protocolError(api.CodeInvalidRequest,
			"invalid request: %s is a stream method: send it alone, with an id, as the first message of a connection", method)
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[string]StreamHandler{}
	}
	s.streams[method] = h
}

// RegisterStream registers fn for a stream method, decoding params
// strictly into P like Register.
func RegisterStream[P any](s *Server, method string, fn func(ctx context.Context, p P, st *Stream) error) {
	s.HandleStream(method, func(ctx context.Context, params json.RawMessage, st *Stream) error {
		var p P
		if err := decodeParams(params, &p); err != nil {
			return err
		}
		return fn(ctx, p, st)
	})
}

func (s *Server) streamHandler(method string) StreamHandler {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.streams[method]
}

// streamRequest returns the parsed request when line is a stream request
// that may open a stream: a single request with an id.
func (s *Server) streamRequest(line []byte) (request, StreamHandler, bool) {
	if len(line) == 0 || line[0] != '{' {
		return request{}, nil, false
	}
	req, errResp := parseRequest(line)
	if errResp != nil || req.notification {
		return request{}, nil, false
	}
	h := s.streamHandler(req.method)
	return req, h, h != nil
}

// serveStream runs a stream handler on c. buffered reads c, starting
// with what the line reader had already read past the request.
func (s *Server) serveStream(ctx context.Context, c net.Conn, buffered io.Reader, req request, h StreamHandler) {
	st := &Stream{conn: c, r: buffered, id: req.id}
	start := time.Now()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("rpc stream handler panicked", "method", req.method, "panic", r)
				err = fmt.Errorf("internal error in %s (the daemon log has details)", req.method)
			}
		}()
		return h(ctx, req.params, st)
	}()
	if err != nil && !st.accepted {
		_, _ = c.Write(append(errorResponse(req.id, toAPIError(err)), '\n'))
	}
	s.log.Debug("rpc stream", "method", req.method, "duration", time.Since(start), "accepted", st.accepted,
		"err", err)
}

// streamConn is the client side of a stream: reads start with what the
// response reader had already buffered.
type streamConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *streamConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection: the server sees end-of-input
// while the client still reads.
func (c *streamConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// OpenStream dials socketPath, sends a stream request for method and
// decodes the response into result (nil discards it). On success the
// returned connection carries the method's raw byte stream; the caller
// closes it. An error response is returned as *api.Error. ctx bounds the
// dial and the wait for the response only.
func OpenStream(ctx context.Context, socketPath, method string, params, result any) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	msg, err := encodeRequest(strconv.Itoa(1), method, params)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, streamErr(ctx, method, err)
	}
	br := bufio.NewReaderSize(c, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, streamErr(ctx, method, err)
	}
	var resp response
	if json.Unmarshal(line, &resp) != nil || resp.JSONRPC != "2.0" {
		return nil, fmt.Errorf("opening %s: the daemon sent a message that is not a JSON-RPC 2.0 response", method)
	}
	if err := decodeResponse(method, resp, result); err != nil {
		return nil, err
	}
	if !stop() {
		return nil, ctx.Err()
	}
	ok = true
	return &streamConn{Conn: c, r: br}, nil
}

func streamErr(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return connClosed(fmt.Errorf("opening %s: %w", method, err))
}
