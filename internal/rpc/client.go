package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/banger-dev/banger/internal/api"
)

// maxResponseBytes bounds one response line read by Client. The daemon is
// trusted; the bound only stops a broken peer from exhausting memory.
const maxResponseBytes = 256 << 20

// Client calls a Server over one connection. It is safe for concurrent
// use: calls are multiplexed by id and may complete in any order.
type Client struct {
	conn   net.Conn
	nextID atomic.Uint64

	writes chan []byte   // lines for the writer goroutine
	done   chan struct{} // closed once the connection is unusable

	mu      sync.Mutex
	pending map[string]chan response // by id as sent
	err     error                    // why the connection ended

	closeOnce sync.Once
	loops     sync.WaitGroup
}

// Dial connects to the Unix socket at socketPath.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, err
	}
	return NewClient(c), nil
}

// NewClient takes ownership of c.
func NewClient(c net.Conn) *Client {
	cl := &Client{conn: c, writes: make(chan []byte), done: make(chan struct{}),
		pending: map[string]chan response{}}
	cl.loops.Go(cl.readLoop)
	cl.loops.Go(cl.writeLoop)
	return cl
}

// connClosed is the error of calls on a connection that ended.
func connClosed(cause error) *api.Error {
	msg := "daemon connection closed"
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return api.Errorf(api.KindUnavailable, "%s", msg).
		WithHint("the daemon stopped or restarted; retry, or start it with: sudo banger daemon")
}

// Call sends a request and decodes the result into result (which may be
// nil to discard it). nil params send no "params" member. An error
// response is returned as *api.Error. When ctx ends first, Call returns
// ctx.Err() at once and asks the server to cancel the call.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	id := strconv.FormatUint(c.nextID.Add(1), 10)
	msg, err := encodeRequest(id, method, params)
	if err != nil {
		return err
	}
	if len(msg)-1 > DefaultMaxMessageBytes {
		// The server would answer with an id-less error that no call could
		// be matched with; refuse here instead.
		return api.Errorf(api.KindInvalidInput, "the request to %s is %d bytes, over the daemon's limit of %d bytes",
			method, len(msg)-1, DefaultMaxMessageBytes)
	}
	ch := make(chan response, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return connClosed(c.err)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	select {
	case c.writes <- msg:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return connClosed(c.cause())
	}

	select {
	case resp := <-ch:
		return decodeResponse(method, resp, result)
	case <-ctx.Done():
		c.sendCancel(id)
		return ctx.Err()
	case <-c.done:
		return connClosed(c.cause())
	}
}

// sendCancel tells the server to cancel call id, without waiting: the
// caller has already given up.
func (c *Client) sendCancel(id string) {
	msg, err := encodeRequest("", MethodCancel, cancelParams{ID: json.RawMessage(id)})
	if err != nil {
		return
	}
	select {
	case c.writes <- msg:
	case <-c.done:
	default:
		// The writer is busy; queue without blocking the caller.
		go func() {
			select {
			case c.writes <- msg:
			case <-c.done:
			}
		}()
	}
}

// Notify sends a notification: the server runs the method and never
// answers, so errors on the server side are not reported.
func (c *Client) Notify(ctx context.Context, method string, params any) error {
	msg, err := encodeRequest("", method, params)
	if err != nil {
		return err
	}
	select {
	case c.writes <- msg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return connClosed(c.cause())
	}
}

// Close closes the connection; pending calls fail.
func (c *Client) Close() error {
	err := c.conn.Close()
	c.fail(errors.New("client closed"))
	c.loops.Wait()
	return err
}

func (c *Client) cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail records why the connection ended (the first reason wins) and
// releases everyone waiting on it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

func (c *Client) writeLoop() {
	for {
		select {
		case msg := <-c.writes:
			if _, err := c.conn.Write(msg); err != nil {
				c.fail(err)
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *Client) readLoop() {
	lr := newLineReader(c.conn, maxResponseBytes)
	for {
		line, err := lr.next()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				err = fmt.Errorf("a response exceeded %d bytes", maxResponseBytes)
			}
			c.fail(err)
			return
		}
		var resp response
		if json.Unmarshal(line, &resp) != nil || resp.JSONRPC != "2.0" {
			c.fail(errors.New("the daemon sent a message that is not a JSON-RPC 2.0 response"))
			return
		}
		c.mu.Lock()
		ch := c.pending[string(resp.ID)]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- resp:
			default: // a second response for one id: keep the first
			}
		}
		// Responses without a waiting caller (cancelled calls, id null
		// errors for requests this client never sends) are dropped.
	}
}

// encodeRequest builds one request line; an empty id makes a notification.
func encodeRequest(id, method string, params any) ([]byte, error) {
	msg := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id,omitempty"`
		Method  string          `json:"method"`
		Params  any             `json:"params,omitempty"`
	}{JSONRPC: "2.0", Method: method, Params: params}
	if id != "" {
		msg.ID = json.RawMessage(id)
	}
	b, err := marshalNoEscape(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding params of %s: %w", method, err)
	}
	return append(b, '\n'), nil
}

func decodeResponse(method string, resp response, result any) error {
	if resp.Error != nil {
		e := &api.Error{Code: resp.Error.Code, Message: resp.Error.Message}
		if len(resp.Error.Data) > 0 {
			var data api.ErrorData
			if json.Unmarshal(resp.Error.Data, &data) == nil {
				e.Data = &data
			}
		}
		return e
	}
	if result == nil || len(resp.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(resp.Result, result); err != nil {
		return fmt.Errorf("decoding the result of %s: %w", method, err)
	}
	return nil
}
