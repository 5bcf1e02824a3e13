package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// QMPError is an error answer of the QEMU Machine Protocol.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// qmpClient speaks QMP (JSON objects, one per line) on a unix socket. QEMU
// serves one QMP client at a time, so callers dial, run a few commands
// and close.
type qmpClient struct {
	conn   net.Conn
	reader *bufio.Reader
	nextID int
	// Events holds the asynchronous events read while waiting for replies.
	events []qmpEvent
}

type qmpEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// qmpMessage is any message QEMU sends: greeting, reply or event.
type qmpMessage struct {
	Greeting *json.RawMessage `json:"QMP"`
	Event    string           `json:"event"`
	Data     json.RawMessage  `json:"data"`
	Return   *json.RawMessage `json:"return"`
	Error    *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID *int `json:"id"`
}

// maxQMPLine bounds one message so a broken peer cannot make us buffer
// without end. QEMU's largest replies (query-qmp-schema) are far smaller.
const maxQMPLine = 8 << 20

// dialQMP connects, reads the greeting and leaves negotiation mode with
// qmp_capabilities. ctx bounds the whole exchange; the returned client's
// later commands are bounded by their own ctx.
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP socket %s: %w", path, err)
	}
	c := &qmpClient{conn: conn, reader: bufio.NewReaderSize(conn, 64<<10)}
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP handshake on %s: %w", path, err)
	}
	return c, nil
}

func (c *qmpClient) handshake(ctx context.Context) error {
	stop := c.bindContext(ctx)
	defer stop()
	for {
		msg, err := c.readMessage(ctx)
		if err != nil {
			return fmt.Errorf("read greeting: %w", err)
		}
		if msg.Greeting != nil {
			break
		}
		// Events before the greeting are not expected, but harmless.
	}
	_, err := c.executeBound(ctx, "qmp_capabilities", nil)
	return err
}

// Close ends the session.
func (c *qmpClient) Close() error { return c.conn.Close() }

// execute runs one command and returns its "return" value. Events that
// arrive meanwhile are kept in c.events.
func (c *qmpClient) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	stop := c.bindContext(ctx)
	defer stop()
	return c.executeBound(ctx, command, args)
}

func (c *qmpClient) executeBound(ctx context.Context, command string, args any) (json.RawMessage, error) {
	c.nextID++
	id := c.nextID
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        int    `json:"id"`
	}{command, args, id}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode qmp %s: %w", command, err)
	}
	if _, err := c.conn.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("send qmp %s: %w", command, c.ctxErr(ctx, err))
	}
	for {
		msg, err := c.readMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case msg.Event != "":
			c.events = append(c.events, qmpEvent{Event: msg.Event, Data: msg.Data})
		case msg.ID == nil || *msg.ID != id:
			// A reply to someone else's id cannot happen on our own
			// connection; skip it rather than misattribute it.
		case msg.Error != nil:
			return nil, &QMPError{Command: command, Class: msg.Error.Class, Desc: msg.Error.Desc}
		case msg.Return != nil:
			return *msg.Return, nil
		default:
			return nil, fmt.Errorf("qmp %s: reply has neither return nor error", command)
		}
	}
}

func (c *qmpClient) readMessage(ctx context.Context) (qmpMessage, error) {
	var line []byte
	for {
		chunk, isPrefix, err := c.reader.ReadLine()
		if err != nil {
			return qmpMessage{}, c.ctxErr(ctx, err)
		}
		line = append(line, chunk...)
		if len(line) > maxQMPLine {
			return qmpMessage{}, fmt.Errorf("QMP message longer than %d bytes", maxQMPLine)
		}
		if !isPrefix {
			break
		}
	}
	var msg qmpMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return qmpMessage{}, fmt.Errorf("decode QMP message %.200q: %w", line, err)
	}
	return msg, nil
}

// bindContext makes blocked reads and writes return when ctx ends.
func (c *qmpClient) bindContext(ctx context.Context) (stop func()) {
	if deadline, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(deadline)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	fired := make(chan struct{})
	unbind := context.AfterFunc(ctx, func() {
		defer close(fired)
		c.conn.SetDeadline(time.Now())
	})
	return func() {
		// If the callback started, let it finish so it cannot reset the
		// deadline of the next command.
		if !unbind() {
			<-fired
		}
	}
}

// ctxErr prefers the context's error over the timeout it caused.
func (c *qmpClient) ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Deadlines come only from ctx, whose timer may fire a moment
		// after the socket's.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return errors.Join(ctxErr, err)
	}
	return err
}
