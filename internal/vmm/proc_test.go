package vmm

import (
	"context"
	"errors"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestParseProcStatCommWithParens(t *testing.T) {
	// Field 2 is "(a) b (c)": counting must start after the last ')'.
	line := "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 987654 1000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	s, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != 'S' || s.UTime != 250 || s.STime != 50 || s.StartTime != 987654 || s.RSSPages != 321 {
		t.Fatalf("parsed %+v", s)
	}
	if _, err := parseProcStat("1234 (x) S 1 2"); err == nil {
		t.Fatal("short line parsed without error")
	}
	if _, err := parseProcStat("garbage"); err == nil {
		t.Fatal("line without ')' parsed without error")
	}
}

func TestProcHelpersOnSelf(t *testing.T) {
	pid := os.Getpid()
	st, err := ProcessStartTime(pid)
	if err != nil || st == 0 {
		t.Fatalf("ProcessStartTime(self) = %d, %v", st, err)
	}
	if !ProcessAlive(pid, st) {
		t.Fatal("ProcessAlive(self, own start time) = false")
	}
	if ProcessAlive(pid, st+1) {
		t.Fatal("ProcessAlive accepted a wrong start time")
	}
	argv, err := ProcessCmdline(pid)
	if err != nil || len(argv) != len(os.Args) || argv[0] != os.Args[0] {
		t.Fatalf("ProcessCmdline(self) = %q, %v; want %q", argv, err, os.Args)
	}
	// Burn a little CPU so the CPU time is measurably positive.
	deadline := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	stats, err := ReadProcessStats(pid)
	if err != nil {
		t.Fatal(err)
	}
	if stats.CPUSeconds <= 0 || stats.RSSBytes < 1<<20 {
		t.Fatalf("implausible stats for the test process: %+v", stats)
	}
}

func TestProcHelpersOnMissingProcess(t *testing.T) {
	// Pid beyond pid_max never exists.
	const missing = 1 << 30
	if _, err := ProcessStartTime(missing); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("ProcessStartTime(missing) err = %v, want ErrNotRunning", err)
	}
	if ProcessAlive(missing, 0) {
		t.Fatal("ProcessAlive(missing) = true")
	}
	if err := SignalProcess(missing, 0, syscall.SIGKILL); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("SignalProcess(missing) err = %v, want ErrNotRunning", err)
	}
	if err := WaitProcessExit(context.Background(), missing, 0); err != nil {
		t.Fatalf("WaitProcessExit(missing) = %v, want nil", err)
	}
}

func TestSignalAndWaitChild(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		testenv.Require(t, false, "the sleep command: "+err.Error())
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st, err := ProcessStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}

	// A wrong start time means "some other process": it must not be signalled.
	if err := SignalProcess(pid, st+1, syscall.SIGKILL); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("SignalProcess with wrong start time: %v, want ErrNotRunning", err)
	}
	if !ProcessAlive(pid, st) {
		t.Fatal("child died after a signal aimed at a different start time")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := WaitProcessExit(ctx, pid, st); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitProcessExit on a live child = %v, want deadline exceeded", err)
	}

	if err := SignalProcess(pid, st, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	// Not reaped yet: the zombie must count as exited.
	if err := WaitProcessExit(ctx2, pid, st); err != nil {
		t.Fatalf("WaitProcessExit after SIGKILL: %v", err)
	}
	if ProcessAlive(pid, st) {
		t.Fatal("zombie reported alive")
	}
	if err := pollProcessExit(ctx2, pid, st); err != nil {
		t.Fatalf("pollProcessExit (no-pidfd fallback) on a zombie: %v", err)
	}
}
