package session

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// snapshot is one record of inspect.sh output.
type snapshot struct {
	api.Session
	missing bool
	reason  string // why a session is lost
}

// parseSnapshots parses inspect.sh output: KEY=VALUE lines, each record
// ended by "end". Unknown keys are ignored so newer scripts may add some.
func parseSnapshots(vm string, out []byte) ([]snapshot, error) {
	var (
		res []snapshot
		cur *snapshot
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" {
			continue
		}
		if cur == nil {
			cur = &snapshot{Session: api.Session{VM: vm, Argv: []string{}}}
		}
		if text == "end" {
			if cur.Name == "" {
				return nil, fmt.Errorf("session state line %d: record without a name", line)
			}
			res = append(res, *cur)
			cur = nil
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("session state line %d: %q is not KEY=VALUE", line, text)
		}
		if err := cur.set(key, val); err != nil {
			return nil, fmt.Errorf("session state line %d (%s): %w", line, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		return nil, fmt.Errorf("session state: last record is not terminated (output cut short?)")
	}
	return res, nil
}

func (s *snapshot) set(key, val string) error {
	var err error
	switch key {
	case "name":
		s.Name = val
	case "state":
		switch st := api.SessionState(val); st {
		case api.SessionRunning, api.SessionExited, api.SessionKilled, api.SessionLost:
			s.State = st
		case "missing":
			s.missing = true
		default:
			return fmt.Errorf("unknown state %q", val)
		}
	case "reason":
		s.reason = val
	case "exit_code":
		var n int
		if n, err = strconv.Atoi(val); err == nil {
			s.ExitCode = &n
		}
	case "signal":
		s.Signal = val
	case "pid":
		if val != "" {
			s.PID, err = strconv.Atoi(val)
		}
	case "pty":
		s.PTY = val == "1"
	case "cwd":
		s.Cwd, err = unescape(val)
	case "argv":
		var a string
		if a, err = unescape(val); err == nil {
			s.Argv = append(s.Argv, a)
		}
	case "started_at":
		s.StartedAt, err = parseTime(val)
	case "ended_at":
		s.EndedAt, err = parseTime(val)
	case "log_bytes":
		if val != "" {
			s.LogBytes, err = strconv.ParseInt(val, 10, 64)
		}
	}
	return err
}

// unescape reverses inspect.sh's esc: \\ is a backslash, \n a newline.
func unescape(v string) (string, error) {
	if !strings.Contains(v, `\`) {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			b.WriteByte(v[i])
			continue
		}
		i++
		switch {
		case i < len(v) && v[i] == '\\':
			b.WriteByte('\\')
		case i < len(v) && v[i] == 'n':
			b.WriteByte('\n')
		default:
			return "", fmt.Errorf("bad escape in %q", v)
		}
	}
	return b.String(), nil
}

func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, v)
}
