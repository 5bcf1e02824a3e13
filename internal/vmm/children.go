package vmm

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
)

// Child is a VMM process that this driver instance started. A goroutine
// reaps it, so it never lingers as a zombie while the daemon lives.
type Child struct {
	PID       int
	StartTime uint64
	done      chan struct{}
	err       error
}

// Done is closed once the process exited and was reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is the process's exit error; valid after Done.
func (c *Child) Err() error { return c.err }

// Children tracks the processes a driver started, keyed by pid. Processes
// started by an earlier daemon (adopted) are not children: waits on them
// go through pidfd or /proc instead.
type Children struct {
	mu sync.Mutex
	m  map[int]*Child
}

// Start starts cmd and begins reaping it. Call Register once the start
// time is known, so Wait can tell this process from a reused pid.
func (cs *Children) Start(cmd *exec.Cmd) (*Child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Child{PID: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		cs.mu.Lock()
		if cs.m[c.PID] == c {
			delete(cs.m, c.PID)
		}
		cs.mu.Unlock()
	}()
	return c, nil
}

// Register records c with its start time, unless it already exited.
func (cs *Children) Register(c *Child, startTime uint64) {
	c.StartTime = startTime
	cs.mu.Lock()
	defer cs.mu.Unlock()
	select {
	case <-c.done:
	default:
		if cs.m == nil {
			cs.m = map[int]*Child{}
		}
		cs.m[c.PID] = c
	}
}

// Wait blocks until the process h names exited (and, when it is our
// child, was reaped) or ctx ends. what names the VMM in errors.
func (cs *Children) Wait(ctx context.Context, h Handle, what string) error {
	cs.mu.Lock()
	c := cs.m[h.PID]
	cs.mu.Unlock()
	if c != nil && c.StartTime == h.StartTime {
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("wait for %s pid %d: %w", what, h.PID, ctx.Err())
		}
	}
	return WaitProcessExit(ctx, h.PID, h.StartTime)
}
