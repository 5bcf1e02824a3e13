package api

import "time"

// Guest sessions: long-running processes in a guest that outlive the SSH
// connection and the daemon.
const (
	MethodSessionStart  = "session.start"
	MethodSessionList   = "session.list"
	MethodSessionShow   = "session.show"
	MethodSessionSend   = "session.send"
	MethodSessionSignal = "session.signal"
	MethodSessionStop   = "session.stop"
	MethodSessionKill   = "session.kill"
	MethodSessionRemove = "session.remove"
	MethodSessionLogs   = "session.logs"

	MethodVMSyncAuth = "vm.sync_auth"
)

// Stream methods are not part of Service: their JSON-RPC response is
// followed, on the same connection, by a raw byte stream (see
// internal/rpc: Stream). Each must be sent on a connection of its own.
const (
	// StreamSessionAttach attaches to a session's terminal: the client
	// writes input bytes, the server writes output bytes. Control
	// messages (resize, detach) are framed as described in StreamFrame.
	StreamSessionAttach = "session.attach"
	// StreamSessionFollow streams a session's log from an offset until the
	// session ends or the client disconnects.
	StreamSessionFollow = "session.follow"
)

// SessionState is a session's lifecycle state.
type SessionState string

const (
	SessionRunning SessionState = "running"
	SessionExited  SessionState = "exited"
	SessionKilled  SessionState = "killed"
	SessionLost    SessionState = "lost"
)

// Session is the wire view of one guest session.
type Session struct {
	VM        string       `json:"vm"`
	Name      string       `json:"name"`
	State     SessionState `json:"state"`
	ExitCode  *int         `json:"exit_code,omitempty"`
	Signal    string       `json:"signal,omitempty"`
	PID       int          `json:"pid,omitempty"`
	Argv      []string     `json:"argv"`
	Cwd       string       `json:"cwd,omitempty"`
	PTY       bool         `json:"pty"`
	LogBytes  int64        `json:"log_bytes"`
	StartedAt time.Time    `json:"started_at,omitzero"`
	EndedAt   time.Time    `json:"ended_at,omitzero"`
}

type SessionStartParams struct {
	VM   string   `json:"vm"`
	Name string   `json:"name,omitempty"` // generated when empty
	Cwd  string   `json:"cwd,omitempty"`
	Env  []string `json:"env,omitempty"` // KEY=VALUE
	PTY  bool     `json:"pty,omitempty"`
	Argv []string `json:"argv"`
}

// SessionRef names one session of one VM.
type SessionRef struct {
	VM      string `json:"vm"`
	Session string `json:"session"`
}

type SessionListResult struct {
	Sessions []Session `json:"sessions"`
}

// SessionSendParams writes Data (raw bytes, base64 on the wire) to the
// session's stdin.
type SessionSendParams struct {
	VM      string `json:"vm"`
	Session string `json:"session"`
	Data    []byte `json:"data"`
}

type SessionSignalParams struct {
	VM      string `json:"vm"`
	Session string `json:"session"`
	Signal  string `json:"signal"` // name: TERM, SIGUSR1, INT, ...
}

type SessionStopParams struct {
	VM             string `json:"vm"`
	Session        string `json:"session"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
}

// SessionLogsParams reads the session log. Offset >= 0 reads from that
// byte; TailBytes > 0 (with Offset < 0) reads the last bytes.
type SessionLogsParams struct {
	VM        string `json:"vm"`
	Session   string `json:"session"`
	Offset    int64  `json:"offset"`
	TailBytes int64  `json:"tail_bytes,omitempty"`
	MaxBytes  int64  `json:"max_bytes,omitempty"`
}

type SessionLogsResult struct {
	Data []byte `json:"data"`
	// Offset of the first byte of Data; Next is where to read on.
	Offset int64 `json:"offset"`
	Next   int64 `json:"next"`
	Size   int64 `json:"size"`
}

// SessionAttachParams opens StreamSessionAttach.
type SessionAttachParams struct {
	VM      string `json:"vm"`
	Session string `json:"session"`
	Cols    int    `json:"cols,omitempty"`
	Rows    int    `json:"rows,omitempty"`
}

// SessionFollowParams opens StreamSessionFollow.
type SessionFollowParams struct {
	VM      string `json:"vm"`
	Session string `json:"session"`
	Offset  int64  `json:"offset"`
}

// VMSyncAuthParams places the user's credentials in the guest. Fields the
// CLI leaves empty are not changed.
type VMSyncAuthParams struct {
	VM             string   `json:"vm"`
	AuthorizedKeys []string `json:"authorized_keys,omitempty"`
	GitName        string   `json:"git_name,omitempty"`
	GitEmail       string   `json:"git_email,omitempty"`
}

type VMSyncAuthResult struct {
	// Files lists the guest paths written (never their contents).
	Files []string `json:"files"`
}

// CapabilityStatus is the outcome of one capability hook at VM start.
type CapabilityStatus struct {
	Name   string    `json:"name"`
	Status string    `json:"status"` // ok, failed, skipped
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at,omitzero"`
}

// StreamFrame is the type byte of a client-to-server message on a
// StreamSessionAttach stream. Each message is the type byte, a 4-byte
// big-endian payload length and the payload. The server-to-client
// direction is the session's raw output. Ending the connection (or
// FrameDetach) detaches; the session keeps running.
type StreamFrame byte

const (
	// FrameInput carries bytes for the session's input.
	FrameInput StreamFrame = 0
	// FrameResize carries the terminal size: rows then cols, each a
	// big-endian uint16.
	FrameResize StreamFrame = 1
	// FrameDetach (no payload) ends the attach.
	FrameDetach StreamFrame = 2
)
