package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/rpc"
	"github.com/banger-dev/banger/internal/session"
)

// sessionLatency measures, on a running VM, the latency of banger exec,
// of a session send, and of a session input->output echo round trip,
// against plain OpenSSH over a reused ControlMaster connection, and logs
// the ratios. Run as part of TestSessions (BANGER_E2E=1).
func sessionLatency(t *testing.T, vm string) {
	const n = 15
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	timeIt := func(f func()) []time.Duration {
		var ds []time.Duration
		for range n {
			t0 := time.Now()
			f()
			ds = append(ds, time.Since(t0))
		}
		return ds
	}

	execTrue := median(timeIt(func() { must(t, "exec", vm, "--", "true") }))

	must(t, "session", "start", vm, "--name", "bench", "--", "cat")
	defer run(t, "session", "kill", vm, "bench")
	send := median(timeIt(func() { must(t, "session", "send", vm, "bench", "x") }))

	// Echo round trip through an attach stream: input frame in, the
	// same bytes back out of the log.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := rpc.OpenStream(ctx, env.socket, api.StreamSessionAttach, api.SessionAttachParams{VM: vm, Session: "bench"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	var rtts []time.Duration
	for i := range n {
		marker := fmt.Sprintf("m%03d\n", i)
		t0 := time.Now()
		if err := session.WriteFrame(conn, api.FrameInput, []byte(marker)); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for !strings.Contains(seen.String(), marker) {
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("echo round trip: %v (seen %q)", err, seen.String())
			}
			seen.Write(buf[:k])
		}
		rtts = append(rtts, time.Since(t0))
	}
	echo := median(rtts)

	// OpenSSH with a reused ControlMaster, from inside the namespace.
	dir, _ := os.MkdirTemp("", "bgssh")
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config")
	os.WriteFile(cfg, []byte(must(t, "ssh-config").stdout), 0o600)
	ctl := filepath.Join(dir, "cm-%C")
	sshArgs := []string{"ssh", "-F", cfg, "-o", "ControlMaster=auto", "-o", "ControlPath=" + ctl, "-o", "ControlPersist=120", vm + ".banger"}
	nsOutput(t, append(sshArgs, "true")...) // establishes the master
	script := `n=$1; shift; s=$(date +%s%N); for i in $(seq "$n"); do "$@" true || exit 1; done; echo $(( ($(date +%s%N) - s) / n ))`
	out := nsOutput(t, append([]string{"bash", "-c", script, "bash", strconv.Itoa(n)}, sshArgs...)...)
	nsPer, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("ssh timing: %q", out)
	}
	sshTrue := time.Duration(nsPer)
	nsOutput(t, "ssh", "-F", cfg, "-o", "ControlPath="+ctl, "-O", "exit", vm+".banger")

	ratio := func(d time.Duration) string { return fmt.Sprintf("%.2fx", float64(d)/float64(sshTrue)) }
	t.Logf("latency (median of %d) vs OpenSSH ControlMaster `ssh true` = %s:", n, sshTrue.Round(time.Millisecond))
	t.Logf("  banger exec VM true            %8s  %s", execTrue.Round(time.Millisecond), ratio(execTrue))
	t.Logf("  banger session send            %8s  %s", send.Round(time.Millisecond), ratio(send))
	t.Logf("  session echo round trip        %8s  %s", echo.Round(time.Millisecond), ratio(echo))
}
