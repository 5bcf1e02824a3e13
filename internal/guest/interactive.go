package guest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
)

// Interactive runs argv in the guest (the login shell when argv is empty)
// on a connection of its own, for `banger ssh`, and returns the remote exit
// status. When stdin is a terminal it requests a PTY with the local TERM and
// window size, puts the local terminal in raw mode (restored on every return
// path), and forwards window size changes. Otherwise no PTY is requested and
// stdin, stdout and stderr are plain streams, so it works in pipes.
func Interactive(ctx context.Context, t Target, signer ssh.Signer, argv []string, stdin *os.File, stdout, stderr io.Writer) (int, error) {
	client, err := dial(ctx, t, signer)
	if err != nil {
		return -1, err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return -1, dialError(ctx, t, fmt.Errorf("open SSH session: %w", err))
	}
	defer session.Close()

	if fd := int(stdin.Fd()); term.IsTerminal(fd) {
		width, height, err := term.GetSize(fd)
		if err != nil {
			width, height = 0, 0 // buildPTYRequest picks a default size
		}
		req := buildPTYRequest(os.Getenv("TERM"), width, height)
		if err := session.RequestPty(req.Term, req.Height, req.Width, req.Modes); err != nil {
			return -1, api.Errorf(api.KindGuest, "VM %s refused a terminal: %v", t.VMID, err)
		}
		saved, err := term.MakeRaw(fd)
		if err != nil {
			return -1, fmt.Errorf("put terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, saved)
		stop := forwardWindowChanges(session, fd, width, height)
		defer stop()
	}

	cmd := ""
	if len(argv) > 0 {
		cmd = CommandLine(argv)
	}
	return runSession(ctx, t, session, cmd, stdin, stdout, stderr, func() { client.Close() })
}

// ptyRequest is what Interactive asks the guest's sshd for.
type ptyRequest struct {
	Term          string
	Width, Height int
	Modes         ssh.TerminalModes
}

// buildPTYRequest fills in defaults for what the local terminal did not
// tell us: an unset TERM or an unknown size.
func buildPTYRequest(termEnv string, width, height int) ptyRequest {
	if termEnv == "" {
		termEnv = "xterm-256color"
	}
	if width <= 0 || height <= 0 {
		width, height = 80, 24
	}
	return ptyRequest{
		Term:   termEnv,
		Width:  width,
		Height: height,
		Modes: ssh.TerminalModes{
			ssh.ECHO:          1,
			ssh.TTY_OP_ISPEED: 38400,
			ssh.TTY_OP_OSPEED: 38400,
		},
	}
}

// forwardWindowChanges sends a window-change request whenever the local
// terminal's size changes (on SIGWINCH) until the returned stop is called.
func forwardWindowChanges(session *ssh.Session, fd, width, height int) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-winch:
				w, h, err := term.GetSize(fd)
				if err != nil || (w == width && h == height) {
					continue
				}
				width, height = w, h
				session.WindowChange(h, w)
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(done)
		wg.Wait()
	}
}
