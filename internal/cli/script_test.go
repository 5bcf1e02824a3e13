package cli

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/fake"
)

// TestMain lets testscript run `banger` as a subprocess of the test
// binary. The daemon it starts gets the fake VMM driver, which runs a
// real (guest-less) process per VM; real guests are covered by test/e2e.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"banger": func() {
			drv := fake.New()
			if d, err := time.ParseDuration(os.Getenv("BANGER_FAKE_START_DELAY")); err == nil {
				drv.StartDelay = d
			}
			os.Exit(Run(os.Args[1:], Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
				DaemonDrivers: map[string]vmm.Driver{"fake": drv}}))
		},
	})
}

func TestScripts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("CLI scripts need root (the daemon creates loop-free disks with mkfs and chowns); run as root")
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("BANGER_SOCKET", filepath.Join(e.WorkDir, "s.sock"))
			e.Setenv("STATE", filepath.Join(e.WorkDir, "state"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// waitsock PATH: wait until a daemon accepts on the socket.
			"waitsock": func(ts *testscript.TestScript, neg bool, args []string) {
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					if c, err := net.Dial("unix", args[0]); err == nil {
						c.Close()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				ts.Fatalf("no daemon on %s after 20s", args[0])
			},
			// killproc PATTERN...: SIGKILL every process whose cmdline contains all PATTERNs.
			"killproc": func(ts *testscript.TestScript, neg bool, args []string) {
				entries, _ := os.ReadDir("/proc")
				n := 0
				for _, e := range entries {
					b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
					if err != nil || !containsAll(string(b), args) {
						continue
					}
					if p, err := os.FindProcess(atoi(e.Name())); err == nil && p.Pid != os.Getpid() {
						if p.Kill() == nil {
							n++
						}
					}
				}
				if n == 0 && !neg {
					ts.Fatalf("no process matching %q", args)
				}
				if n > 0 && neg {
					ts.Fatalf("%d processes matched %q", n, args)
				}
			},
			// exits CODE CMD ARGS...: run CMD and require that exit status.
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				want := atoi(args[0])
				err := ts.Exec(args[1], args[2:]...)
				got := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					got = ee.ExitCode()
				} else if err != nil {
					ts.Fatalf("%v", err)
				}
				if got != want {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
			// sleep DURATION
			"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
				d, err := time.ParseDuration(args[0])
				ts.Check(err)
				time.Sleep(d)
			},
		},
	})
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
