package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/banger-dev/banger/internal/api"
)

const (
	// defaultIdleCheck is how long a pooled connection may sit unused before
	// its next use is preceded by a keepalive round trip.
	defaultIdleCheck = 5 * time.Second
	// keepaliveTimeout bounds that round trip; a guest that cannot answer
	// in this time is treated as gone and redialled.
	keepaliveTimeout = 3 * time.Second
	// readyAttemptTimeout bounds one WaitReady attempt.
	readyAttemptTimeout = 10 * time.Second
	// cancelGrace is how long a cancelled session may take to close.
	cancelGrace = 2 * time.Second
	// MaxOutputBytes caps each of stdout and stderr kept by ExecOutput.
	MaxOutputBytes = 16 << 20
)

// Pool keeps one SSH connection per VM for the daemon. It is safe for
// concurrent use; concurrent callers for the same VM share one dial.
type Pool struct {
	key       ClientKey
	log       *slog.Logger
	idleCheck time.Duration

	mu     sync.Mutex
	slots  map[string]*poolSlot
	closed bool
}

// poolSlot holds one VM's connection. sem (capacity 1) serialises checking
// and dialling so two callers never dial the same VM at once, while still
// letting a waiting caller give up when its ctx ends. mu guards the fields,
// so Forget and Close never wait for a dial in progress.
type poolSlot struct {
	sem chan struct{}

	mu       sync.Mutex
	client   *ssh.Client // nil until dialled
	target   Target      // what client was dialled with
	dead     chan struct{}
	lastUsed time.Time
}

func (s *poolSlot) current() (*ssh.Client, Target, chan struct{}, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client, s.target, s.dead, s.lastUsed
}

func (s *poolSlot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		s.client.Close()
		s.client = nil
	}
}

// NewPool returns an empty pool that authenticates with key.
func NewPool(key ClientKey, log *slog.Logger) *Pool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{key: key, log: log, idleCheck: defaultIdleCheck, slots: map[string]*poolSlot{}}
}

var errPoolClosed = errors.New("guest SSH pool is closed")

// Client returns the live connection to t, dialling one if there is none,
// the previous one died, or t's address, user or host key changed. A
// connection idle for more than a few seconds is probed with a keepalive
// first. ctx bounds waiting and dialling. The pool owns the client: use
// Forget instead of closing it.
func (p *Pool) Client(ctx context.Context, t Target) (*ssh.Client, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	s := p.slots[t.VMID]
	if s == nil {
		s = &poolSlot{sem: make(chan struct{}, 1)}
		p.slots[t.VMID] = s
	}
	p.mu.Unlock()

	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, dialError(ctx, t, ctx.Err())
	}
	defer func() { <-s.sem }()

	if client, dialled, dead, lastUsed := s.current(); client != nil {
		if p.usable(ctx, client, dialled, dead, lastUsed, t) {
			s.mu.Lock()
			s.lastUsed = time.Now()
			s.mu.Unlock()
			return client, nil
		}
		s.close()
	}

	client, err := dial(ctx, t, p.key.Signer)
	if err != nil {
		return nil, err
	}
	dead := make(chan struct{})
	go func() {
		// Ends when the connection closes, by us or by the network.
		client.Wait()
		close(dead)
	}()

	p.mu.Lock()
	defer p.mu.Unlock()
	// Forget or Close may have run while we dialled; do not resurrect.
	if p.closed || p.slots[t.VMID] != s {
		client.Close()
		return nil, fmt.Errorf("SSH connection to VM %s was dropped while dialling: %w", t.VMID, errPoolClosed)
	}
	s.mu.Lock()
	s.client, s.target, s.dead, s.lastUsed = client, t, dead, time.Now()
	s.mu.Unlock()
	p.log.Debug("guest ssh connected", "vm", t.VMID, "addr", t.Addr)
	return client, nil
}

// usable reports whether the pooled client, dialled for dialled, can serve t.
func (p *Pool) usable(ctx context.Context, client *ssh.Client, dialled Target, dead chan struct{}, lastUsed time.Time, t Target) bool {
	select {
	case <-dead:
		return false
	default:
	}
	if dialled.Addr != t.Addr || dialled.User != t.User || t.HostKey == nil ||
		!bytes.Equal(dialled.HostKey.Marshal(), t.HostKey.Marshal()) {
		return false
	}
	if time.Since(lastUsed) <= p.idleCheck {
		return true
	}
	if _, err := keepalive(ctx, client); err != nil {
		p.log.Debug("guest ssh connection is dead, redialling", "vm", t.VMID, "err", err)
		return false
	}
	return true
}

// keepalive sends one global request and waits for the reply. A reply of
// either kind proves the connection works (OpenSSH answers unknown requests
// with failure). On timeout the caller closes the client, which also
// releases the goroutine blocked in SendRequest.
func keepalive(ctx context.Context, c *ssh.Client) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, keepaliveTimeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-ctx.Done():
		c.Close()
		return 0, fmt.Errorf("keepalive: %w", ctx.Err())
	}
}

// Forget closes and drops the connection to vmID, if any (for example
// because the VM stopped).
func (p *Pool) Forget(vmID string) {
	p.mu.Lock()
	s := p.slots[vmID]
	delete(p.slots, vmID)
	p.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// Close closes every connection; later calls to Client fail.
func (p *Pool) Close() {
	p.mu.Lock()
	slots := p.slots
	p.slots = map[string]*poolSlot{}
	p.closed = true
	p.mu.Unlock()
	for _, s := range slots {
		s.close()
	}
}

// Exec runs argv in the guest and returns its exit status. argv becomes one
// command line with every element quoted (see CommandLine), so no element is
// ever interpreted by the guest's shell. A non-zero exit status is not an
// error; err is set when the command could not be run or its status is
// unknown. Cancelling ctx sends SIGKILL to the command and closes the session.
//
// Exec returns once the command has exited and its output is copied; it
// does not wait for stdin to be drained, so a reader that never ends does
// not hang it.
func (p *Pool) Exec(ctx context.Context, t Target, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(argv) == 0 {
		return -1, api.Errorf(api.KindInvalidInput, "no command given to run in VM %s", t.VMID)
	}
	client, session, err := p.newSession(ctx, t)
	if err != nil {
		return -1, err
	}
	defer session.Close()
	return runSession(ctx, t, session, CommandLine(argv), stdin, stdout, stderr, func() { p.discard(t.VMID, client) })
}

// newSession opens a session on the pooled connection. If that fails the
// connection may have died since it was checked, so one fresh dial is tried.
func (p *Pool) newSession(ctx context.Context, t Target) (*ssh.Client, *ssh.Session, error) {
	for attempt := 0; ; attempt++ {
		client, err := p.Client(ctx, t)
		if err != nil {
			return nil, nil, err
		}
		session, err := client.NewSession()
		if err == nil {
			return client, session, nil
		}
		p.discard(t.VMID, client)
		if attempt == 1 || ctx.Err() != nil {
			return nil, nil, dialError(ctx, t, fmt.Errorf("open SSH session: %w", err))
		}
	}
}

// discard closes client and, if it is still vmID's pooled connection,
// drops it so the next Client call dials afresh.
func (p *Pool) discard(vmID string, client *ssh.Client) {
	client.Close()
	p.mu.Lock()
	s := p.slots[vmID]
	p.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.client == client {
		s.client = nil
	}
	s.mu.Unlock()
}

// runSession runs cmd (a shell command line, or the login shell when empty)
// on session and waits for its exit status. abandon closes the connection;
// it is called when a cancelled session does not end promptly.
func runSession(ctx context.Context, t Target, session *ssh.Session, cmd string, stdin io.Reader, stdout, stderr io.Writer, abandon func()) (int, error) {
	session.Stdout = stdout
	session.Stderr = stderr
	var stdinPipe io.WriteCloser
	if stdin != nil {
		var err error
		if stdinPipe, err = session.StdinPipe(); err != nil {
			return -1, fmt.Errorf("VM %s: open stdin: %w", t.VMID, err)
		}
	}
	var err error
	if cmd == "" {
		err = session.Shell()
	} else {
		err = session.Start(cmd)
	}
	if err != nil {
		return -1, api.Errorf(api.KindGuest, "VM %s: start command: %v", t.VMID, err)
	}
	if stdinPipe != nil {
		go func() {
			// Not waited for: see Exec. Closing sends EOF to the command;
			// once the session ends, writes fail and the copy stops.
			io.Copy(stdinPipe, stdin)
			stdinPipe.Close()
		}()
	}

	waited := make(chan error, 1)
	go func() { waited <- session.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		// sshd forwards the signal to the command; closing the channel
		// then ends the session even when the guest ignores the signal.
		session.Signal(ssh.SIGKILL)
		session.Close()
		select {
		case <-waited:
		case <-time.After(cancelGrace):
			// The guest does not even answer the close: give up on the
			// whole connection, which ends Wait.
			abandon()
			<-waited
		}
		return -1, withCause(api.Errorf(api.KindCancelled, "command in VM %s cancelled", t.VMID), ctx.Err())
	}
	return exitStatus(t, err)
}

func exitStatus(t Target, err error) (int, error) {
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr):
		return exitErr.ExitStatus(), nil
	case errors.As(err, &missing):
		return -1, api.Errorf(api.KindGuest, "command in VM %s ended without an exit status (connection lost?)", t.VMID)
	default:
		return -1, withCause(api.Errorf(api.KindGuest, "command in VM %s: %v", t.VMID, err), err)
	}
}

// ExecOutput runs argv like Exec and returns what it wrote. Each stream
// keeps at most MaxOutputBytes; the rest is discarded and a note is appended.
func (p *Pool) ExecOutput(ctx context.Context, t Target, argv []string, stdin io.Reader) (stdout, stderr string, exitCode int, err error) {
	outBuf := &cappedBuffer{max: MaxOutputBytes}
	errBuf := &cappedBuffer{max: MaxOutputBytes}
	exitCode, err = p.Exec(ctx, t, argv, stdin, outBuf, errBuf)
	return outBuf.String(), errBuf.String(), exitCode, err
}

// cappedBuffer keeps the first max bytes written to it and counts the rest.
// Writes never fail, so a chatty command is not killed by a broken pipe.
type cappedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room >= len(p) {
		return b.buf.Write(p)
	}
	if room > 0 {
		b.buf.Write(p[:room])
	}
	b.dropped += int64(len(p) - max(room, 0))
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped == 0 {
		return b.buf.String()
	}
	return fmt.Sprintf("%s\n[banger: output truncated, %d more bytes dropped]\n", b.buf.String(), b.dropped)
}

// WaitReady retries connecting to t and running `true` every interval until
// that succeeds or ctx ends. The error then includes the last failure. A
// host key mismatch is final and returned at once.
func WaitReady(ctx context.Context, p *Pool, t Target, interval time.Duration) error {
	start := time.Now()
	var lastErr error
	for {
		// A dial to an address that drops packets would otherwise hang
		// until ctx ends and leave no error worth reporting.
		attemptCtx, cancel := context.WithTimeout(ctx, readyAttemptTimeout)
		code, err := p.Exec(attemptCtx, t, []string{"true"}, nil, io.Discard, io.Discard)
		cancel()
		if err == nil && code == 0 {
			return nil
		}
		var mismatch *HostKeyMismatchError
		if errors.As(err, &mismatch) {
			return err
		}
		if ctx.Err() == nil {
			// Keep the error of a real attempt, not the cancellation of the last one.
			lastErr = err
			if err == nil {
				lastErr = fmt.Errorf("`true` exited with status %d", code)
			}
		}
		timer := time.NewTimer(interval)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			kind := api.KindUnavailable
			if errors.Is(ctx.Err(), context.Canceled) {
				kind = api.KindCancelled
			}
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return withCause(api.Errorf(kind, "VM %s not reachable over SSH at %s after %s; last error: %v",
				t.VMID, t.Addr, time.Since(start).Round(time.Millisecond), lastErr).
				WithHint("the guest may still be booting or its sshd failed; read the VM's serial log"), ctx.Err())
		}
	}
}

// Ping checks that t answers on its pooled connection (dialling if needed)
// and returns the round-trip time of one SSH keepalive request.
func Ping(ctx context.Context, p *Pool, t Target) (time.Duration, error) {
	client, err := p.Client(ctx, t)
	if err != nil {
		return 0, err
	}
	rtt, err := keepalive(ctx, client)
	if err != nil {
		client.Close()
		return 0, dialError(ctx, t, err)
	}
	return rtt, nil
}
