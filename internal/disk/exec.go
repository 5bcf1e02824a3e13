package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// commandRunner runs one host tool and returns its standard output. It is a
// variable so tests can replace the host with a recording fake.
type commandRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

var runCommand commandRunner = execCommand

// commandError is a failed host command, with its stderr for the user.
type commandError struct {
	Cmd      string
	ExitCode int // -1 when the command did not run or was killed
	Stderr   string
	Err      error
}

func (e *commandError) Error() string {
	msg := fmt.Sprintf("%s failed: %v", e.Cmd, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *commandError) Unwrap() error { return e.Err }

// exitCode returns the exit status of a failed command, or -1.
func exitCode(err error) int {
	var ce *commandError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	return -1
}

func execCommand(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// Stable, English output: some callers parse it.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// A killed tool's children may hold the pipes; do not wait forever.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &commandError{
		Cmd:      strings.Join(append([]string{name}, args...), " "),
		ExitCode: -1,
		Stderr:   strings.TrimSpace(stderr.String()),
		Err:      err,
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		ce.Err = ctxErr
		return stdout.Bytes(), ce
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		ce.ExitCode = exitErr.ExitCode()
	}
	return stdout.Bytes(), ce
}
