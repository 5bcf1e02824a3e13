package doctor

import (
	"bytes"
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/api"
)

var wantNames = []string{"root", "state-dir", "disk-space", "kvm", "tun", "bridge", "nftables", "loop",
	"device-mapper", "qemu", "qemu-img", "e2fsprogs", "debootstrap", "firecracker", "jailer", "cgroup-v2",
	"ip-forward", "systemd-resolved"}

func reportNames(r api.DoctorReport) []string {
	var names []string
	for _, ch := range r.Checks {
		names = append(names, ch.Name)
	}
	return names
}

func TestStableOrderWhenChecksFinishOutOfOrder(t *testing.T) {
	f := healthyHost()
	// Hold the early state-dir and disk-space checks so later ones finish first.
	release := make(chan struct{})
	f.block = map[string]chan struct{}{"/var/lib/banger": release}
	time.AfterFunc(30*time.Millisecond, func() { close(release) })
	c := New(Options{StateDir: "/var/lib/banger"}, f.host())
	r := c.Run(context.Background())
	if got := reportNames(r); !slices.Equal(got, wantNames) {
		t.Fatalf("order = %v, want %v", got, wantNames)
	}
	if !slices.Equal(c.Names(), wantNames) {
		t.Fatalf("Names() = %v", c.Names())
	}
	if ch := find(t, r, "state-dir"); ch.Status != api.CheckOK {
		t.Fatalf("state-dir after delay: %+v", ch)
	}
}

func TestHungCheckTimesOut(t *testing.T) {
	f := healthyHost()
	hang := make(chan struct{})
	defer close(hang) // let the abandoned goroutine finish
	f.block = map[string]chan struct{}{"/dev/loop-control": hang}
	done := make(chan api.DoctorReport, 1)
	go func() {
		done <- New(Options{StateDir: "/var/lib/banger", CheckTimeout: 50 * time.Millisecond}, f.host()).Run(context.Background())
	}()
	var r api.DoctorReport
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still blocked 5s after a 50ms check timeout")
	}
	loop := find(t, r, "loop")
	if loop.Status != api.CheckFail || !strings.Contains(loop.Message, "timed out after 50ms") || loop.Fix == "" {
		t.Fatalf("hung check = %+v, want a fail saying it timed out", loop)
	}
	for _, ch := range r.Checks {
		if ch.Name != "loop" && ch.Status != api.CheckOK {
			t.Errorf("%s: %s (%s), want ok: one hung check must not affect others", ch.Name, ch.Status, ch.Message)
		}
	}
}

func TestCancelledRun(t *testing.T) {
	f := healthyHost()
	hang := make(chan struct{})
	defer close(hang)
	f.block = map[string]chan struct{}{"/dev/net/tun": hang}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	r := New(Options{StateDir: "/var/lib/banger", CheckTimeout: time.Minute}, f.host()).Run(ctx)
	tun := find(t, r, "tun")
	if tun.Status != api.CheckFail || !strings.Contains(tun.Message, "cancelled") {
		t.Fatalf("tun = %+v, want fail: cancelled", tun)
	}
}

func TestPanickingCheckFails(t *testing.T) {
	h := healthyHost().host()
	h.Geteuid = nil // the root check dereferences it
	r := New(Options{StateDir: "/var/lib/banger"}, h).Run(context.Background())
	root := find(t, r, "root")
	if root.Status != api.CheckFail || !strings.Contains(root.Message, "crashed") {
		t.Fatalf("root = %+v, want fail: crashed", root)
	}
	if got := reportNames(r); !slices.Equal(got, wantNames) {
		t.Fatalf("names = %v", got)
	}
}

func TestSummaryAndExitCode(t *testing.T) {
	mk := func(statuses ...api.CheckStatus) api.DoctorReport {
		var r api.DoctorReport
		for i, s := range statuses {
			r.Checks = append(r.Checks, api.Check{Name: string(rune('a' + i)), Status: s})
		}
		return r
	}
	tests := []struct {
		report             api.DoctorReport
		ok, warn, fail, rc int
	}{
		{mk(), 0, 0, 0, 0},
		{mk(api.CheckOK, api.CheckOK), 2, 0, 0, 0},
		{mk(api.CheckOK, api.CheckWarn, api.CheckWarn), 1, 2, 0, 0},
		{mk(api.CheckOK, api.CheckWarn, api.CheckFail), 1, 1, 1, 1},
		{mk(api.CheckOK, "bogus"), 1, 0, 1, 1},
	}
	for _, tt := range tests {
		ok, warn, fail := Summary(tt.report)
		if ok != tt.ok || warn != tt.warn || fail != tt.fail {
			t.Errorf("Summary(%v) = %d,%d,%d want %d,%d,%d", tt.report.Checks, ok, warn, fail, tt.ok, tt.warn, tt.fail)
		}
		if rc := ExitCode(tt.report); rc != tt.rc {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.report.Checks, rc, tt.rc)
		}
	}
}

func TestRender(t *testing.T) {
	r := api.DoctorReport{Checks: []api.Check{
		{Name: "root", Status: api.CheckOK, Message: "running as root", Fix: "never shown"},
		{Name: "device-mapper", Status: api.CheckWarn, Message: "dm missing", Fix: "modprobe dm_mod"},
		{Name: "tun", Status: api.CheckFail, Message: "tun missing", Fix: "modprobe tun"},
	}}
	var buf bytes.Buffer
	if err := Render(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []struct{ prefix, msg string }{
		{"STATUS", "MESSAGE"},
		{"✓ ok", "running as root"},
		{"! warn", "dm missing"},
		{"", "fix: modprobe dm_mod"},
		{"✗ fail", "tun missing"},
		{"", "fix: modprobe tun"},
	}
	if len(lines) != len(want)+2 {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want)+2, out)
	}
	// Every message and fix starts in the same column.
	column := -1
	for i, w := range want {
		line := lines[i]
		if !strings.HasPrefix(line, w.prefix) {
			t.Errorf("line %d %q does not start with %q", i, line, w.prefix)
		}
		idx := strings.Index(line, w.msg)
		if idx < 0 {
			t.Fatalf("line %d %q lacks %q", i, line, w.msg)
		}
		col := utf8.RuneCountInString(line[:idx])
		if column == -1 {
			column = col
		} else if col != column {
			t.Errorf("line %d: text at column %d, want %d:\n%s", i, col, column, out)
		}
	}
	if strings.Contains(out, "never shown") {
		t.Errorf("fix of an ok check was printed:\n%s", out)
	}
	if lines[len(lines)-2] != "" || lines[len(lines)-1] != "3 checks: 1 ok, 1 warn, 1 fail" {
		t.Errorf("summary lines = %q", lines[len(lines)-2:])
	}
}

// TestRealHost runs every check against this machine. It asserts only
// what the test itself arranged or what HOST-NOTES guarantees, each gated
// on the condition really holding here.
func TestRealHost(t *testing.T) {
	stateDir := t.TempDir()
	r := New(Options{StateDir: stateDir, Bridge: "bgdoctor0"}, RealHost()).Run(context.Background())
	if got := reportNames(r); !slices.Equal(got, wantNames) {
		t.Fatalf("names = %v, want %v", got, wantNames)
	}
	for _, ch := range r.Checks {
		switch ch.Status {
		case api.CheckOK, api.CheckWarn, api.CheckFail:
		default:
			t.Errorf("%s: invalid status %q", ch.Name, ch.Status)
		}
		if ch.Message == "" || (ch.Status != api.CheckOK && ch.Fix == "") {
			t.Errorf("%s: message %q fix %q", ch.Name, ch.Message, ch.Fix)
		}
		if strings.Contains(ch.Message, "timed out") {
			t.Errorf("%s timed out on the real host", ch.Name)
		}
	}
	if ch := find(t, r, "state-dir"); ch.Status != api.CheckOK {
		t.Errorf("state-dir on a fresh temp dir: %+v", ch)
	}
	if entries, err := os.ReadDir(stateDir); err != nil || len(entries) != 0 {
		t.Errorf("write probe left files behind in %s: %v %v", stateDir, entries, err)
	}
	if os.Geteuid() == 0 {
		if ch := find(t, r, "root"); ch.Status != api.CheckOK {
			t.Errorf("root as euid 0: %+v", ch)
		}
	}
	// HOST-NOTES: no device-mapper here. A stray /dev/mapper/control node
	// (dmsetup creates one) may exist anyway, so gate on opening it.
	if f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0); err != nil {
		if ch := find(t, r, "device-mapper"); ch.Status != api.CheckWarn {
			t.Errorf("/dev/mapper/control unusable (%v) but check is %+v", err, ch)
		}
	} else {
		f.Close()
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		if ch := find(t, r, "kvm"); ch.Status != api.CheckWarn || !strings.Contains(ch.Message, "TCG") {
			t.Errorf("PVM host but kvm check is %+v", ch)
		}
	}
}

func TestRealOutputStopsOnCancel(t *testing.T) {
	sleep, err := RealHost().LookPath("sleep")
	testenv.Require(t, err == nil, "sleep(1) on PATH")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := output(ctx, sleep, "30"); err == nil {
		t.Fatal("want an error from a killed command")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("output returned after %s, want prompt return on cancel", elapsed)
	}
}

func TestRealLookPathFindsSbin(t *testing.T) {
	_, err := os.Stat("/usr/sbin/mkfs.ext4")
	testenv.Require(t, err == nil, "/usr/sbin/mkfs.ext4 (e2fsprogs)")
	t.Setenv("PATH", "/usr/bin:/bin")
	got, err := lookPathWithSbin("mkfs.ext4")
	if err != nil || !strings.HasSuffix(got, "/mkfs.ext4") {
		t.Fatalf("lookPathWithSbin(mkfs.ext4) = %q, %v", got, err)
	}
	if _, err := lookPathWithSbin("banger-no-such-tool"); err == nil {
		t.Fatal("found a tool that does not exist")
	}
}

func TestRealStatfs(t *testing.T) {
	space, err := statfs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if space.TotalBytes <= 0 || space.AvailBytes < 0 || space.AvailBytes > space.TotalBytes {
		t.Fatalf("implausible statfs result %+v", space)
	}
	if _, err := statfs("/nonexistent/banger"); err == nil {
		t.Fatal("statfs of a missing path succeeded")
	}
}
