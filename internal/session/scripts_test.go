package session

import (
	"bytes"
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/rpc"
)

func TestScriptsAreShellcheckClean(t *testing.T) {
	_, err := exec.LookPath("shellcheck")
	testenv.Require(t, err == nil, "shellcheck is not installed (apt-get install shellcheck)")
	files, _ := filepath.Glob("scripts/*.sh")
	if len(files) != 5 {
		t.Fatalf("found %d scripts, want 5", len(files))
	}
	out, err := exec.Command("shellcheck", append([]string{"-s", "bash"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

// Golden invocations: what the daemon asks the guest to run. Data stay
// separate argv elements, whatever they contain.
func TestRenderedInvocations(t *testing.T) {
	l := layout{root: "/var/lib/banger"}
	lib := "/var/lib/banger/lib/" + scriptsHash
	got := l.startArgs("job", true, 80, 24, "/home/banger/src", []string{"A=1", "B=x y"}, []string{"sh", "-c", "echo '$HOME'; rm -rf /"})
	want := []string{"/bin/bash", lib + "/runner.sh", "start", "/var/lib/banger/sessions/job", "1", "80", "24",
		"/home/banger/src", "2", "A=1", "B=x y", "sh", "-c", "echo '$HOME'; rm -rf /"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("startArgs =\n%q\nwant\n%q", got, want)
	}
	got = l.invocation(scriptSignal, "stop", l.sessionDir("job"), "10")
	want = []string{"/bin/bash", lib + "/signal.sh", "stop", "/var/lib/banger/sessions/job", "10"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stop = %q, want %q", got, want)
	}
	if len(scriptsHash) != 12 {
		t.Fatalf("scriptsHash = %q", scriptsHash)
	}
}

// The pool quotes each argv element with guest.ShellQuote; a rendered
// start must come back unchanged through a real shell.
func TestInvocationSurvivesRealShell(t *testing.T) {
	l := layout{root: "/r"}
	argv := l.startArgs("n", false, 1, 2, "d ir", []string{"K=v'\"$x"}, []string{"printf", "%s\\n", "a b", "'", "$(id)", "\n"})
	cmdline := strings.Join(quoteAll(argv), " ")
	out, err := exec.Command("sh", "-c", "set -- "+cmdline+`; for a in "$@"; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !reflect.DeepEqual(got, argv) {
		t.Fatalf("round trip =\n%q\nwant\n%q", got, argv)
	}
}

func TestParseSnapshots(t *testing.T) {
	out := "name=a\nstate=exited\nexit_code=3\npid=12\npty=1\ncwd=/root\nstarted_at=2026-11-28T12:41:21.216066757Z\n" +
		"ended_at=2026-11-28T12:41:22Z\nlog_bytes=15\nargv=sh\nargv=a\\nb\\\\c\nfuture=ignored\nend\n" +
		"name=b\nstate=killed\nsignal=KILL\nexit_code=137\nend\nname=c\nstate=missing\nend\n"
	snaps, err := parseSnapshots("dev", []byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 {
		t.Fatalf("got %d records", len(snaps))
	}
	a := snaps[0]
	if a.Name != "a" || a.VM != "dev" || a.State != api.SessionExited || *a.ExitCode != 3 || a.PID != 12 || !a.PTY ||
		a.Cwd != "/root" || a.LogBytes != 15 || !reflect.DeepEqual(a.Argv, []string{"sh", "a\nb\\c"}) ||
		a.StartedAt.Nanosecond() != 216066757 || a.EndedAt.IsZero() {
		t.Fatalf("a = %+v", a)
	}
	if snaps[1].State != api.SessionKilled || snaps[1].Signal != "KILL" || !snaps[2].missing {
		t.Fatalf("b, c = %+v, %+v", snaps[1], snaps[2])
	}
	for _, bad := range []string{"name=a\nstate=exited\n", "name=a\nstate=weird\nend\n", "garbage\nend\n", "state=running\nend\n",
		"name=a\nargv=bad\\x\nend\n", "name=a\npid=x\nend\n"} {
		if _, err := parseSnapshots("dev", []byte(bad)); err == nil {
			t.Errorf("parseSnapshots(%q) accepted", bad)
		}
	}
}

func TestParseLogRead(t *testing.T) {
	r, err := parseLogRead([]byte("100 90\nabc\n"))
	if err != nil || r.Size != 100 || r.Offset != 90 || r.Next != 94 || string(r.Data) != "abc\n" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := parseLogRead([]byte("nonsense")); err == nil {
		t.Fatal("accepted a read without size line")
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	WriteFrame(&buf, api.FrameInput, []byte("ls\n"))
	WriteFrame(&buf, api.FrameResize, ResizePayload(50, 132))
	WriteFrame(&buf, api.FrameDetach, nil)
	typ, p, err := ReadFrame(&buf)
	if err != nil || typ != api.FrameInput || string(p) != "ls\n" {
		t.Fatalf("%v %q %v", typ, p, err)
	}
	typ, p, _ = ReadFrame(&buf)
	rows, cols, err := parseResize(p)
	if typ != api.FrameResize || rows != 50 || cols != 132 || err != nil {
		t.Fatalf("resize %v %d %d %v", typ, rows, cols, err)
	}
	if typ, _, _ = ReadFrame(&buf); typ != api.FrameDetach {
		t.Fatalf("detach: %v", typ)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{0, 0xff, 0, 0, 0})); err == nil {
		t.Fatal("accepted an oversized frame")
	}
}

// Attach and follow through a real rpc server, against local sessions:
// scrollback, live output, input, resize reaching a PTY program, two
// viewers at once, and detach leaving the session running.
func TestAttachAndFollowStreams(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	ctx := ctxT(t)
	srv := rpc.NewServer(rpc.ServerOptions{})
	e.svc.RegisterStreams(srv)
	dir, _ := os.MkdirTemp("", "bgss")
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	_, err = e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "tty", PTY: true, Argv: []string{"bash", "-c",
		`echo before; trap 'echo "size=$(stty size)"' WINCH; while read -r l; do echo "line=$l"; [ "$l" = quit ] && exit 4; done`}})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, "tty", "before")

	follower, err := rpc.OpenStream(ctx, sock, api.StreamSessionFollow, api.SessionFollowParams{VM: "dev", Session: "tty"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	var sess api.Session
	att, err := rpc.OpenStream(ctx, sock, api.StreamSessionAttach, api.SessionAttachParams{VM: "dev", Session: "tty", Rows: 30, Cols: 90}, &sess)
	if err != nil {
		t.Fatal(err)
	}
	if sess.Name != "tty" || !sess.PTY {
		t.Fatalf("attach result = %+v", sess)
	}
	got := newCollector(att)
	got.waitFor(t, "before") // scrollback
	WriteFrame(att, api.FrameInput, []byte("hello\n"))
	got.waitFor(t, "line=hello")
	WriteFrame(att, api.FrameResize, ResizePayload(41, 123))
	// bash runs the WINCH trap once read returns: send a line. Frames
	// are handled in order, so the resize has happened by then.
	WriteFrame(att, api.FrameInput, []byte("again\n"))
	got.waitFor(t, "size=41 123")
	WriteFrame(att, api.FrameDetach, nil)
	att.Close()
	if s, _ := e.svc.Show(ctx, api.SessionRef{VM: "dev", Session: "tty"}); s.State != api.SessionRunning {
		t.Fatalf("after detach: %+v, want running", s)
	}
	// Re-attach: scrollback has everything so far; quit ends the session
	// and with it both streams.
	att2, err := rpc.OpenStream(ctx, sock, api.StreamSessionAttach, api.SessionAttachParams{VM: "dev", Session: "tty"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer att2.Close()
	got2 := newCollector(att2)
	got2.waitFor(t, "size=41 123")
	WriteFrame(att2, api.FrameInput, []byte("quit\n"))
	got2.waitEOF(t)
	if !strings.Contains(got2.String(), "line=quit") {
		t.Fatalf("re-attach output %q lacks line=quit", got2.String())
	}
	follower.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(follower)
	if err != nil || !strings.Contains(string(all), "before") || !strings.Contains(string(all), "line=quit") {
		t.Fatalf("follow = %q, %v", all, err)
	}
	if s := e.waitEnded(t, "tty"); s.ExitCode == nil || *s.ExitCode != 4 {
		t.Fatalf("after quit: %+v, want exited(4)", s)
	}
	if _, err := rpc.OpenStream(ctx, sock, api.StreamSessionAttach, api.SessionAttachParams{VM: "dev", Session: "nope"}, nil); !api.IsKind(err, api.KindNotFound) {
		t.Fatalf("attach to a missing session: %v", err)
	}
}

// collector gathers a stream's output in the background.
type collector struct {
	mu   chan struct{}
	buf  bytes.Buffer
	done chan struct{}
}

func newCollector(r io.Reader) *collector {
	c := &collector{mu: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			c.mu <- struct{}{}
			c.buf.Write(b[:n])
			<-c.mu
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (c *collector) String() string {
	c.mu <- struct{}{}
	defer func() { <-c.mu }()
	return c.buf.String()
}

func (c *collector) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(c.String(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("stream never showed %q; got %q", s, c.String())
}

func (c *collector) waitEOF(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("stream did not end; got %q", c.String())
	}
}

func quoteAll(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = guest.ShellQuote(a)
	}
	return out
}
