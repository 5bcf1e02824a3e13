package guest

import (
	"context"
	"errors"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/banger-dev/banger/internal/api"
)

// Target says how to reach one VM's sshd.
type Target struct {
	VMID string
	Addr string // ip:22
	User string
	// HostKey is the pinned host key; a connection presenting any other key
	// is refused.
	HostKey ssh.PublicKey
}

// dial opens an SSH connection to t, authenticating with signer and
// accepting only t.HostKey. ctx bounds the TCP connect and the handshake.
func dial(ctx context.Context, t Target, signer ssh.Signer) (*ssh.Client, error) {
	if t.HostKey == nil {
		return nil, api.Errorf(api.KindInternal, "VM %s has no pinned SSH host key", t.VMID).
			WithHint("recreate the VM so banger generates and pins its host key")
	}
	cfg := &ssh.ClientConfig{
		User:            t.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: pinnedHostKey(t.VMID, t.HostKey),
		// Ask only for the pinned key's type: a guest that also has, say,
		// an RSA key must not offer that one and cause a false mismatch.
		HostKeyAlgorithms: hostKeyAlgorithms(t.HostKey),
	}
	// Guests sit on a local bridge: a TCP connect that takes longer than
	// this means the guest is not up yet (its ARP goes unanswered), and
	// retrying soon beats waiting out the kernel's SYN retransmits.
	d := net.Dialer{Timeout: connectTimeout}
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, dialError(ctx, t, err)
	}
	// The handshake has no context of its own: closing the socket when ctx
	// ends is what bounds it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if !stop() {
		if err == nil {
			c.Close()
		}
		return nil, dialError(ctx, t, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, dialError(ctx, t, err)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// connectTimeout bounds one TCP connect to a guest (not the handshake).
const connectTimeout = 1500 * time.Millisecond

func hostKeyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{k.Type()}
}

// dialError turns a failed connect into an *api.Error of the right kind
// (its message includes the cause) while keeping the cause reachable through
// errors.Is / errors.As.
func dialError(ctx context.Context, t Target, err error) error {
	var mismatch *HostKeyMismatchError
	switch {
	case errors.As(err, &mismatch):
		return withCause(api.Errorf(api.KindGuest, "refusing SSH connection to VM %s at %s: %v", t.VMID, t.Addr, mismatch).
			WithHint("the guest does not have the host key banger generated for it; its disk may have been replaced or tampered with"), mismatch)
	case errors.Is(ctx.Err(), context.Canceled):
		return withCause(api.Errorf(api.KindCancelled, "SSH connection to VM %s cancelled", t.VMID), ctx.Err())
	default:
		return withCause(api.Errorf(api.KindUnavailable, "cannot reach VM %s over SSH at %s: %v", t.VMID, t.Addr, err).
			WithHint("check that the VM is running (banger vm show) and read its serial log"), err)
	}
}

// causedError is an *api.Error for the user plus the error that caused it,
// both reachable with errors.As / errors.Is.
type causedError struct {
	apiErr *api.Error
	cause  error
}

func withCause(apiErr *api.Error, cause error) error { return &causedError{apiErr, cause} }

func (e *causedError) Error() string   { return e.apiErr.Error() }
func (e *causedError) Unwrap() []error { return []error{e.apiErr, e.cause} }
