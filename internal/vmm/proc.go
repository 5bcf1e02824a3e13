package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. Linux fixes it
// at 100 for userspace on every architecture banger runs on.
const userHZ = 100

// procStat holds the fields of /proc/<pid>/stat that backends need.
type procStat struct {
	State     byte
	UTime     uint64 // field 14, clock ticks
	STime     uint64 // field 15, clock ticks
	StartTime uint64 // field 22, clock ticks since boot
	RSSPages  int64  // field 24
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return procStat{}, fmt.Errorf("process %d: %w", pid, ErrNotRunning)
		}
		return procStat{}, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	return parseProcStat(string(data))
}

// parseProcStat parses one /proc/<pid>/stat line. The command name (field
// 2) may contain spaces and parentheses, so fields are counted from the
// last ')'.
func parseProcStat(line string) (procStat, error) {
	end := strings.LastIndexByte(line, ')')
	if end < 0 || end+2 > len(line) {
		return procStat{}, fmt.Errorf("malformed /proc stat line %q", line)
	}
	// rest[0] is field 3 (state).
	rest := strings.Fields(line[end+1:])
	const need = 24 - 2
	if len(rest) < need {
		return procStat{}, fmt.Errorf("malformed /proc stat line: %d fields after the command name, want at least %d", len(rest), need)
	}
	field := func(n int) string { return rest[n-3] }
	var s procStat
	var err error
	s.State = field(3)[0]
	if s.UTime, err = strconv.ParseUint(field(14), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("parse utime: %w", err)
	}
	if s.STime, err = strconv.ParseUint(field(15), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("parse stime: %w", err)
	}
	if s.StartTime, err = strconv.ParseUint(field(22), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("parse starttime: %w", err)
	}
	if s.RSSPages, err = strconv.ParseInt(field(24), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("parse rss: %w", err)
	}
	return s, nil
}

// ProcessStartTime returns field 22 of /proc/<pid>/stat, the start time in
// clock ticks since boot. Together with the pid it names one process for
// the lifetime of the host, which guards against pid reuse.
func ProcessStartTime(pid int) (uint64, error) {
	s, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return s.StartTime, nil
}

// ProcessCmdline returns the argv of a process.
func ProcessCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("process %d: %w", pid, ErrNotRunning)
		}
		return nil, fmt.Errorf("read /proc/%d/cmdline: %w", pid, err)
	}
	data = []byte(strings.TrimRight(string(data), "\x00"))
	if len(data) == 0 {
		// Zombies and kernel threads have an empty command line.
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// ProcessAlive reports whether pid runs and has not exited (a zombie
// counts as exited). When startTime is not zero the process must also
// have that start time, so a reused pid is not mistaken for the original.
func ProcessAlive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := readProcStat(pid)
	if err != nil {
		return false
	}
	if s.State == 'Z' || s.State == 'X' || s.State == 'x' {
		return false
	}
	return startTime == 0 || s.StartTime == startTime
}

// ReadProcessStats returns the CPU time and resident memory of pid.
func ReadProcessStats(pid int) (ProcessStats, error) {
	s, err := readProcStat(pid)
	if err != nil {
		return ProcessStats{}, err
	}
	return ProcessStats{
		CPUSeconds: float64(s.UTime+s.STime) / userHZ,
		RSSBytes:   s.RSSPages * int64(os.Getpagesize()),
	}, nil
}

// SignalProcess sends sig to pid if it is still the process started at
// startTime (0 skips that check). It uses a pidfd when the kernel has
// them, so the identity check and the signal cannot race with pid reuse.
// It returns an error wrapping ErrNotRunning when the process is gone.
func SignalProcess(pid int, startTime uint64, sig syscall.Signal) error {
	fd, err := openVerifiedPidfd(pid, startTime)
	switch {
	case err == nil:
		defer unix.Close(fd)
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("process %d: %w", pid, ErrNotRunning)
			}
			return fmt.Errorf("signal process %d: %w", pid, err)
		}
		return nil
	case !errors.Is(err, errNoPidfd):
		return err
	}
	if !ProcessAlive(pid, startTime) {
		return fmt.Errorf("process %d: %w", pid, ErrNotRunning)
	}
	if err := unix.Kill(pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d: %w", pid, ErrNotRunning)
		}
		return fmt.Errorf("signal process %d: %w", pid, err)
	}
	return nil
}

// errNoPidfd means the kernel lacks pidfd_open; callers fall back to /proc.
var errNoPidfd = errors.New("pidfd_open unsupported")

// openVerifiedPidfd opens a pidfd for pid and then checks the start time,
// so the descriptor is known to refer to the expected process.
func openVerifiedPidfd(pid int, startTime uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ESRCH):
			return -1, fmt.Errorf("process %d: %w", pid, ErrNotRunning)
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			return -1, errNoPidfd
		}
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if startTime != 0 {
		s, err := readProcStat(pid)
		if err != nil || s.StartTime != startTime {
			unix.Close(fd)
			return -1, fmt.Errorf("process %d (a different process now has that pid): %w", pid, ErrNotRunning)
		}
	}
	return fd, nil
}

// pollInterval bounds how long waits take to notice ctx or, without
// pidfd, the process exit.
const pollInterval = 50 * time.Millisecond

// WaitProcessExit blocks until the process named by pid and startTime has
// exited (zombies count as exited) or ctx ends. It returns nil when the
// process is gone, including when it was gone already.
func WaitProcessExit(ctx context.Context, pid int, startTime uint64) error {
	fd, err := openVerifiedPidfd(pid, startTime)
	switch {
	case errors.Is(err, ErrNotRunning):
		return nil
	case errors.Is(err, errNoPidfd):
		return pollProcessExit(ctx, pid, startTime)
	case err != nil:
		return err
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for process %d to exit: %w", pid, err)
		}
		n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd of process %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
}

func pollProcessExit(ctx context.Context, pid int, startTime uint64) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for ProcessAlive(pid, startTime) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for process %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
