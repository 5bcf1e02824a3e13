package session

import (
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/vm"
)

// localExec runs "guest" commands on this host, so the real scripts run
// against a temporary root directory.
type localExec struct{ home string }

func (l localExec) Exec(ctx context.Context, _ guest.Target, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Env = append(os.Environ(), "HOME="+l.home)
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() >= 0 {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// fakeVMs resolves every name to one local "guest".
type fakeVMs struct {
	g    vm.Guest
	mu   sync.Mutex
	auth vm.AuthMaterial
	recs []api.CapabilityStatus
}

func (f *fakeVMs) RunningGuest(_ context.Context, ref string) (vm.Guest, error) {
	if ref != f.g.Name {
		return vm.Guest{}, api.NotFound("vm", ref)
	}
	return f.g, nil
}

func (f *fakeVMs) UpdateAuth(ctx context.Context, ref string, m vm.AuthMaterial) (vm.Guest, vm.AuthMaterial, error) {
	g, err := f.RunningGuest(ctx, ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = m
	return g, m, err
}

func (f *fakeVMs) RecordCapability(_ context.Context, _ string, res api.CapabilityStatus) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, res)
	return nil
}

type localEnv struct {
	svc  *Service
	vms  *fakeVMs
	root string
	home string
}

func newLocal(t *testing.T) *localEnv {
	t.Helper()
	for _, tool := range []string{"bash", "script", "setsid", "tail", "stty", "pkill", "base64"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &localEnv{root: filepath.Join(dir, "root"), home: filepath.Join(dir, "home")}
	os.MkdirAll(e.home, 0o755)
	e.vms = &fakeVMs{g: vm.Guest{ID: "id1", Name: "dev", User: u.Username}}
	e.svc = New(Options{VMs: e.vms, Guests: localExec{home: e.home}, Root: e.root, Sudo: []string{}})
	t.Cleanup(func() {
		// Leave no session processes behind.
		res, _ := e.svc.List(context.Background(), api.VMRef{VM: "dev"})
		for _, s := range res.Sessions {
			if s.State == api.SessionRunning {
				e.svc.Kill(context.Background(), api.SessionRef{VM: "dev", Session: s.Name})
			}
		}
	})
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitState polls until the session leaves running.
func (e *localEnv) waitEnded(t *testing.T, name string) api.Session {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := e.svc.Show(ctxT(t), api.SessionRef{VM: "dev", Session: name})
		if err != nil {
			t.Fatal(err)
		}
		if s.State != api.SessionRunning || time.Now().After(deadline) {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSessionLifecycleOnLocalShell(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	ctx := ctxT(t)
	s, err := e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "job", Env: []string{"GREETING=hi there"},
		Argv: []string{"sh", "-c", `echo "$GREETING"; read x; echo "got $x"; exit 3`}})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != api.SessionRunning || s.PID == 0 || s.Cwd != e.home || len(s.Argv) != 3 {
		t.Fatalf("started session = %+v", s)
	}
	if _, err := e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "job", Argv: []string{"true"}}); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("second start with the same name: %v, want conflict", err)
	}
	if _, err := e.svc.Send(ctx, api.SessionSendParams{VM: "dev", Session: "job", Data: []byte("it's $(x)\n")}); err != nil {
		t.Fatal(err)
	}
	s = e.waitEnded(t, "job")
	if s.State != api.SessionExited || s.ExitCode == nil || *s.ExitCode != 3 || s.EndedAt.IsZero() {
		t.Fatalf("ended session = %+v, want exited(3)", s)
	}
	logs, err := e.svc.Logs(ctx, api.SessionLogsParams{VM: "dev", Session: "job"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "hi there\ngot it's $(x)\n"; string(logs.Data) != want || logs.Size != int64(len(want)) || logs.Next != logs.Size {
		t.Fatalf("logs = %q (%+v), want %q", logs.Data, logs, want)
	}
	tail, err := e.svc.Logs(ctx, api.SessionLogsParams{VM: "dev", Session: "job", Offset: -1, TailBytes: 4})
	if err != nil || string(tail.Data) != "(x)\n" || tail.Offset != logs.Size-4 {
		t.Fatalf("tail = %q %+v %v", tail.Data, tail, err)
	}
	if _, err := e.svc.Send(ctx, api.SessionSendParams{VM: "dev", Session: "job", Data: []byte("x")}); !api.IsKind(err, api.KindConflict) ||
		!strings.Contains(err.Error(), "exited(3)") {
		t.Fatalf("send to an ended session: %v", err)
	}
	if _, err := e.svc.Remove(ctx, api.SessionRef{VM: "dev", Session: "job"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Show(ctx, api.SessionRef{VM: "dev", Session: "job"}); !api.IsKind(err, api.KindNotFound) {
		t.Fatalf("show after rm: %v, want not found", err)
	}
}

func TestSessionSignalsStopAndKill(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	ctx := ctxT(t)
	_, err := e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "usr", Argv: []string{"bash", "-c",
		`trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done`}})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, "usr", "ready")
	if _, err := e.svc.Signal(ctx, api.SessionSignalParams{VM: "dev", Session: "usr", Signal: "sigusr1"}); err != nil {
		t.Fatal(err)
	}
	if s := e.waitEnded(t, "usr"); s.ExitCode == nil || *s.ExitCode != 7 {
		t.Fatalf("after USR1: %+v, want exited(7)", s)
	}
	if _, err := e.svc.Signal(ctx, api.SessionSignalParams{VM: "dev", Session: "usr", Signal: "NOPE"}); !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("unknown signal: %v", err)
	}

	_, err = e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "stubborn", Argv: []string{"sh", "-c", `trap '' TERM; echo ready; sleep 600`}})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, "stubborn", "ready")
	start := time.Now()
	s, err := e.svc.Stop(ctx, api.SessionStopParams{VM: "dev", Session: "stubborn", TimeoutSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != api.SessionKilled || s.Signal != "KILL" || time.Since(start) < time.Second {
		t.Fatalf("stop of a TERM-ignoring session = %+v after %s, want killed(KILL) after >= 1s", s, time.Since(start))
	}

	_, err = e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "polite", Argv: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := e.svc.Stop(ctx, api.SessionStopParams{VM: "dev", Session: "polite", TimeoutSeconds: 5}); err != nil || s.Signal != "TERM" {
		t.Fatalf("stop = %+v, %v; want killed(TERM)", s, err)
	}
	_, err = e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "victim", Argv: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := e.svc.Kill(ctx, api.SessionRef{VM: "dev", Session: "victim"}); err != nil || s.Signal != "KILL" {
		t.Fatalf("kill = %+v, %v; want killed(KILL)", s, err)
	}
	if _, err := e.svc.Kill(ctx, api.SessionRef{VM: "dev", Session: "victim"}); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("kill of an ended session: %v, want conflict", err)
	}
	res, err := e.svc.List(ctx, api.VMRef{VM: "dev"})
	if err != nil || len(res.Sessions) != 4 {
		t.Fatalf("list = %+v, %v; want 4 sessions", res, err)
	}
}

// A supervisor that dies without recording a status, or a guest that
// rebooted, makes the session lost.
func TestSessionLost(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	ctx := ctxT(t)
	odd := "sleep 600 # back\\slash\nnew line"
	s, err := e.svc.Start(ctx, api.SessionStartParams{VM: "dev", Name: "l", Argv: []string{"sh", "-c", odd}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Argv) != 3 || s.Argv[2] != odd {
		t.Fatalf("argv = %q, want %q kept byte for byte", s.Argv, odd)
	}
	dir := filepath.Join(e.root, "sessions", "l")
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte("another-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = e.svc.Show(ctx, api.SessionRef{VM: "dev", Session: "l"})
	if err != nil || s.State != api.SessionLost {
		t.Fatalf("after a reboot: %+v, %v; want lost", s, err)
	}
}

func waitLog(t *testing.T, e *localEnv, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l, err := e.svc.Logs(ctxT(t), api.SessionLogsParams{VM: "dev", Session: name})
		if err == nil && strings.Contains(string(l.Data), want) {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("session %s never printed %q", name, want)
}

func TestStartValidates(t *testing.T) {
	svc := New(Options{VMs: &fakeVMs{g: vm.Guest{Name: "dev"}}})
	ctx := context.Background()
	for _, p := range []api.SessionStartParams{
		{VM: "dev", Name: "../x", Argv: []string{"true"}},
		{VM: "dev", Name: "ok", Env: []string{"1BAD=x"}, Argv: []string{"true"}},
		{VM: "dev", Name: "ok", Env: []string{"NOEQUALS"}, Argv: []string{"true"}},
		{VM: "dev", Name: "ok"},
	} {
		if _, err := svc.Start(ctx, p); err == nil {
			t.Errorf("Start(%+v) accepted", p)
		}
	}
}

func TestSignalName(t *testing.T) {
	for in, want := range map[string]string{"TERM": "TERM", "sigusr1": "USR1", "SIGKILL": "KILL", "2": "INT", " hup ": "HUP"} {
		if got, err := signalName(in); err != nil || got != want {
			t.Errorf("signalName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "SIG", "FOO", "0", "99", "TERM;reboot"} {
		if _, err := signalName(in); err == nil {
			t.Errorf("signalName(%q) accepted", in)
		}
	}
}
