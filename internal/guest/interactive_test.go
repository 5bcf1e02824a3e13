package guest

import (
	"bytes"
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestInteractiveWithoutTerminalPipesAndRequestsNoPTY(t *testing.T) {
	f := newFixture(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.Write([]byte("piped input\n"))
		w.Close()
	}()
	var stdout, stderr bytes.Buffer
	code, err := Interactive(ctxT(t), f.target, f.key.Signer, []string{"sh", "-c", "cat; echo e >&2; exit 3"}, r, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || stdout.String() != "piped input\n" || stderr.String() != "e\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	if ptys, _, _ := recordedCommands(f.server); ptys != 0 {
		t.Fatalf("requested %d PTYs though stdin is a pipe", ptys)
	}
	if n := f.server.accepts.Load(); n != 1 {
		t.Fatalf("want its own connection, got %d", n)
	}
}

func TestInteractiveShellWhenNoArgv(t *testing.T) {
	f := newFixture(t)
	r, w, _ := os.Pipe()
	defer r.Close()
	go func() {
		w.Write([]byte("echo shell-ok; exit 4\n"))
		w.Close()
	}()
	var stdout bytes.Buffer
	code, err := Interactive(ctxT(t), f.target, f.key.Signer, nil, r, &stdout, &bytes.Buffer{})
	if err != nil || code != 4 || stdout.String() != "shell-ok\n" {
		t.Fatalf("code %d err %v stdout %q", code, err, stdout.String())
	}
}

func TestInteractiveHostKeyMismatch(t *testing.T) {
	f := newFixture(t)
	other, _ := NewHostKey()
	target := f.target
	target.HostKey = other.Public
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if _, err := Interactive(ctxT(t), target, f.key.Signer, []string{"true"}, r, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Fatal("connected despite a wrong host key")
	}
}

func TestBuildPTYRequest(t *testing.T) {
	req := buildPTYRequest("screen-256color", 120, 40)
	if req.Term != "screen-256color" || req.Width != 120 || req.Height != 40 {
		t.Fatalf("local values not kept: %+v", req)
	}
	if req.Modes[0x35] != 1 { // ECHO
		t.Fatalf("echo not enabled in modes: %v", req.Modes)
	}
	req = buildPTYRequest("", 0, 0)
	if req.Term != "xterm-256color" || req.Width != 80 || req.Height != 24 {
		t.Fatalf("defaults not applied: %+v", req)
	}
}

// openPTY opens a pseudo-terminal pair with plain ioctls, so the test needs
// no extra module.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	testenv.Require(t, err == nil, "/dev/ptmx (pseudo-terminals) for the PTY test")
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func TestInteractiveWithTerminal(t *testing.T) {
	f := newFixture(t)
	master, slave := openPTY(t)
	fd := int(slave.Fd())
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 100}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TERM", "banger-test-term")

	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	var stdout bytes.Buffer
	go func() {
		code, err := Interactive(ctxT(t), f.target, f.key.Signer, []string{"sh", "-c", "head -c 1 >/dev/null; exit 6"}, slave, &stdout, &bytes.Buffer{})
		done <- result{code, err}
	}()

	waitFor(t, "the command to start", func() bool { _, _, cmds := recordedCommands(f.server); return len(cmds) == 1 })
	during, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	if during.Lflag&unix.ICANON != 0 || during.Lflag&unix.ECHO != 0 {
		t.Error("local terminal not in raw mode while the session runs")
	}

	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 132}); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	waitFor(t, "a window-change request", func() bool { _, wins, _ := recordedCommands(f.server); return wins == 1 })

	master.Write([]byte("x"))
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Interactive did not return")
	}
	if res.err != nil || res.code != 6 {
		t.Fatalf("code %d err %v", res.code, res.err)
	}

	ptys, wins, _, _ := f.server.recorded()
	if len(ptys) != 1 || ptys[0].Term != "banger-test-term" || ptys[0].Columns != 100 || ptys[0].Rows != 30 {
		t.Fatalf("pty requests %+v", ptys)
	}
	if wins[0].Columns != 132 || wins[0].Rows != 40 {
		t.Fatalf("window change %+v", wins[0])
	}
	after, _ := unix.IoctlGetTermios(fd, unix.TCGETS)
	if *after != *before {
		t.Fatalf("terminal modes not restored:\nbefore %+v\nafter  %+v", before, after)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
