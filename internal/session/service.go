package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/vm"
)

// VMs is what sessions need of the VM service.
type VMs interface {
	RunningGuest(ctx context.Context, ref string) (vm.Guest, error)
	UpdateAuth(ctx context.Context, ref string, m vm.AuthMaterial) (vm.Guest, vm.AuthMaterial, error)
	RecordCapability(ctx context.Context, id string, res api.CapabilityStatus) error
}

// Execer runs argv in a guest (guest.Pool in the daemon).
type Execer interface {
	Exec(ctx context.Context, t guest.Target, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
}

// Options configure a Service.
type Options struct {
	VMs    VMs
	Guests Execer
	// AuthFiles are copied into guests by auth sync (config auth_file).
	AuthFiles []config.AuthFile
	// Root is the guest directory for scripts and sessions; default
	// DefaultRoot.
	Root string
	// Sudo prefixes the one privileged step (installing the scripts);
	// default sudo -n. Tests running as root set it to an empty slice.
	Sudo []string
	Log  *slog.Logger
}

// DefaultRoot is the guest directory that holds scripts and sessions. It
// is on the root disk, which persists across reboots, so a session whose
// guest rebooted is reported lost rather than silently gone.
const DefaultRoot = "/var/lib/banger"

// Service implements the session.* and vm.sync_auth methods.
type Service struct {
	vms       VMs
	guests    Execer
	authFiles []config.AuthFile
	lay       layout
	sudo      []string
	log       *slog.Logger
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{vms: o.VMs, guests: o.Guests, authFiles: o.AuthFiles, lay: layout{root: o.Root},
		sudo: o.Sudo, log: o.Log}
	if s.lay.root == "" {
		s.lay.root = DefaultRoot
	}
	if s.sudo == nil {
		s.sudo = []string{"sudo", "-n"}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

var (
	sessionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func validName(name string) error {
	if !sessionName.MatchString(name) {
		return api.Errorf(api.KindInvalidName, "invalid session name %q: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	return nil
}

// Script exit codes with a meaning (see the scripts' headers).
const (
	exitNotRunning = 3
	exitNoSession  = 4
	exitExists     = 17
	exitNoScript   = 127
)

// scriptResult is what one script run produced.
type scriptResult struct {
	code   int
	stdout []byte
	stderr string
}

// run runs a guest script, installing the scripts first when the guest
// does not have this version yet. stdout, when non-nil, receives the
// output instead of the result (streams).
func (s *Service) run(ctx context.Context, g vm.Guest, argv []string, stdin []byte, stdout io.Writer) (scriptResult, error) {
	for attempt := 0; ; attempt++ {
		var out bytes.Buffer
		var errOut capped
		w := stdout
		if w == nil {
			w = &out
		}
		var in io.Reader
		if stdin != nil {
			in = bytes.NewReader(stdin)
		}
		code, err := s.guests.Exec(ctx, g.Target, argv, in, w, &errOut)
		if err != nil {
			return scriptResult{}, err
		}
		res := scriptResult{code: code, stdout: out.Bytes(), stderr: strings.TrimSpace(errOut.String())}
		if code == exitNoScript && attempt == 0 && strings.Contains(res.stderr, "No such file") {
			if err := s.install(ctx, g); err != nil {
				return res, err
			}
			continue
		}
		return res, nil
	}
}

// install puts this binary's scripts in the guest.
func (s *Service) install(ctx context.Context, g vm.Guest) error {
	argv := append(append([]string{}, s.sudo...), "sh", "-c", installScript, "sh", g.User, s.lay.libDir(), s.lay.sessionsDir())
	var errOut capped
	code, err := s.guests.Exec(ctx, g.Target, argv, bytes.NewReader(scriptsTar()), io.Discard, &errOut)
	if err != nil {
		return err
	}
	if code != 0 {
		return api.Errorf(api.KindGuest, "VM %s: installing the session scripts failed (exit %d): %s", g.Name, code, strings.TrimSpace(errOut.String())).
			WithHint("the guest user needs passwordless sudo for this one step")
	}
	s.log.Info("session scripts installed", "vm", g.Name, "dir", s.lay.libDir())
	return nil
}

// guestErr turns an unexpected script failure into an error.
func guestErr(g vm.Guest, what string, res scriptResult) error {
	msg := res.stderr
	if msg == "" {
		msg = "no error output"
	}
	return api.Errorf(api.KindGuest, "VM %s: %s failed (exit %d): %s", g.Name, what, res.code, msg)
}

// inspect returns the state of one session.
func (s *Service) inspect(ctx context.Context, g vm.Guest, name string) (api.Session, error) {
	res, err := s.run(ctx, g, s.lay.invocation(scriptInspect, s.lay.sessionDir(name)), nil, nil)
	if err != nil {
		return api.Session{}, err
	}
	return oneSession(g, name, res)
}

// oneSession parses a script's single-record state output.
func oneSession(g vm.Guest, name string, res scriptResult) (api.Session, error) {
	if res.code != 0 {
		return api.Session{}, guestErr(g, "reading session state", res)
	}
	snaps, err := parseSnapshots(g.Name, res.stdout)
	if err != nil {
		return api.Session{}, fmt.Errorf("VM %s: %w", g.Name, err)
	}
	if len(snaps) != 1 {
		return api.Session{}, fmt.Errorf("VM %s: expected the state of one session, got %d", g.Name, len(snaps))
	}
	if snaps[0].missing {
		return api.Session{}, api.NotFound("session", name).WithHint("list sessions with: banger session ls " + g.Name)
	}
	return snaps[0].Session, nil
}

func (s *Service) guestAndName(ctx context.Context, vmRef, name string) (vm.Guest, error) {
	if err := validName(name); err != nil {
		return vm.Guest{}, err
	}
	return s.vms.RunningGuest(ctx, vmRef)
}

// Start starts a session.
func (s *Service) Start(ctx context.Context, p api.SessionStartParams) (api.Session, error) {
	if len(p.Argv) == 0 {
		return api.Session{}, api.Errorf(api.KindInvalidInput, "no command given for the session")
	}
	if p.Name == "" {
		p.Name = generatedName()
	}
	for _, kv := range p.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envName.MatchString(k) {
			return api.Session{}, api.Errorf(api.KindInvalidInput, "environment entry %q: want KEY=VALUE with KEY of letters, digits and _", kv)
		}
	}
	g, err := s.guestAndName(ctx, p.VM, p.Name)
	if err != nil {
		return api.Session{}, err
	}
	res, err := s.run(ctx, g, s.lay.startArgs(p.Name, p.PTY, 80, 24, p.Cwd, p.Env, p.Argv), nil, nil)
	if err != nil {
		return api.Session{}, err
	}
	if res.code == exitExists {
		return api.Session{}, api.Errorf(api.KindConflict, "VM %s already has a session named %q", g.Name, p.Name).
			WithHint("pick another --name, or remove it with: banger session rm " + g.Name + " " + p.Name)
	}
	return oneSession(g, p.Name, res)
}

func generatedName() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "s-" + hex.EncodeToString(b)
}

// List returns every session of a VM.
func (s *Service) List(ctx context.Context, p api.VMRef) (api.SessionListResult, error) {
	g, err := s.vms.RunningGuest(ctx, p.VM)
	if err != nil {
		return api.SessionListResult{}, err
	}
	res, err := s.run(ctx, g, s.lay.invocation(scriptInspect, "--all", s.lay.sessionsDir()), nil, nil)
	if err != nil {
		return api.SessionListResult{}, err
	}
	if res.code != 0 {
		return api.SessionListResult{}, guestErr(g, "listing sessions", res)
	}
	snaps, err := parseSnapshots(g.Name, res.stdout)
	if err != nil {
		return api.SessionListResult{}, fmt.Errorf("VM %s: %w", g.Name, err)
	}
	out := api.SessionListResult{Sessions: []api.Session{}}
	for _, sn := range snaps {
		if !sn.missing {
			out.Sessions = append(out.Sessions, sn.Session)
		}
	}
	return out, nil
}

// Show returns one session.
func (s *Service) Show(ctx context.Context, p api.SessionRef) (api.Session, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Session{}, err
	}
	return s.inspect(ctx, g, p.Session)
}

// notRunning is the error for acting on a session that has ended.
func (s *Service) notRunning(ctx context.Context, g vm.Guest, name, verb string) error {
	sess, err := s.inspect(ctx, g, name)
	if err != nil {
		return err
	}
	return api.Errorf(api.KindConflict, "cannot %s session %q: it is %s, not running", verb, name, describe(sess))
}

// describe renders a state with its detail: exited(3), killed(TERM).
func describe(sess api.Session) string {
	switch {
	case sess.State == api.SessionKilled && sess.Signal != "":
		return fmt.Sprintf("killed(%s)", sess.Signal)
	case sess.ExitCode != nil:
		return fmt.Sprintf("%s(%d)", sess.State, *sess.ExitCode)
	}
	return string(sess.State)
}

// Send writes bytes to the session's input.
func (s *Service) Send(ctx context.Context, p api.SessionSendParams) (api.Empty, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Empty{}, err
	}
	// A send never waits on the session: bound it in case the FIFO's
	// buffer is full and the session stopped reading.
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	res, err := s.run(sctx, g, s.lay.invocation(scriptIO, "send", s.lay.sessionDir(p.Session)), nonNil(p.Data), nil)
	if err != nil {
		return api.Empty{}, err
	}
	switch res.code {
	case 0:
		return api.Empty{}, nil
	case exitNoSession:
		return api.Empty{}, api.NotFound("session", p.Session)
	case exitNotRunning:
		return api.Empty{}, s.notRunning(ctx, g, p.Session, "send to")
	}
	return api.Empty{}, guestErr(g, "sending input", res)
}

// sendTimeout bounds one send (slow guests under emulation included).
const sendTimeout = 60 * time.Second

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// signalName normalises a signal name (TERM, SIGTERM, term, 15).
func signalName(name string) (string, error) {
	n := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG"))
	if num, err := strconv.Atoi(n); err == nil && num > 0 && num < 65 {
		if sn := unix.SignalName(unix.Signal(num)); sn != "" {
			return strings.TrimPrefix(sn, "SIG"), nil
		}
	}
	if n != "" && unix.SignalNum("SIG"+n) != 0 {
		return n, nil
	}
	return "", api.Errorf(api.KindInvalidInput, "unknown signal %q (use a name such as TERM, INT, HUP, USR1)", name)
}

// signalScript runs signal.sh and returns the resulting state.
func (s *Service) signalScript(ctx context.Context, g vm.Guest, name, verb string, args ...string) (api.Session, error) {
	res, err := s.run(ctx, g, s.lay.invocation(scriptSignal, args...), nil, nil)
	if err != nil {
		return api.Session{}, err
	}
	if res.code == exitNotRunning {
		return api.Session{}, s.notRunning(ctx, g, name, verb)
	}
	return oneSession(g, name, res)
}

// Signal sends a signal to the session's command.
func (s *Service) Signal(ctx context.Context, p api.SessionSignalParams) (api.Session, error) {
	sig, err := signalName(p.Signal)
	if err != nil {
		return api.Session{}, err
	}
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Session{}, err
	}
	return s.signalScript(ctx, g, p.Session, "signal", "send", s.lay.sessionDir(p.Session), sig)
}

// defaultStopTimeout is how long stop waits after TERM before KILL.
const defaultStopTimeout = 10

// Stop sends TERM to the session's processes, then KILL after a timeout.
func (s *Service) Stop(ctx context.Context, p api.SessionStopParams) (api.Session, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Session{}, err
	}
	timeout := p.TimeoutSeconds
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	if timeout > 3600 {
		return api.Session{}, api.Errorf(api.KindInvalidInput, "stop timeout %ds is over an hour", timeout)
	}
	return s.signalScript(ctx, g, p.Session, "stop", "stop", s.lay.sessionDir(p.Session), strconv.Itoa(timeout))
}

// Kill sends KILL to the session's processes.
func (s *Service) Kill(ctx context.Context, p api.SessionRef) (api.Session, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Session{}, err
	}
	return s.signalScript(ctx, g, p.Session, "kill", "kill", s.lay.sessionDir(p.Session))
}

// Remove deletes an ended session and its log.
func (s *Service) Remove(ctx context.Context, p api.SessionRef) (api.Empty, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.Empty{}, err
	}
	res, err := s.run(ctx, g, s.lay.invocation(scriptIO, "rm", s.lay.sessionDir(p.Session)), nil, nil)
	if err != nil {
		return api.Empty{}, err
	}
	switch res.code {
	case 0:
		return api.Empty{}, nil
	case exitNoSession:
		return api.Empty{}, api.NotFound("session", p.Session)
	case exitNotRunning:
		return api.Empty{}, api.Errorf(api.KindConflict, "session %q is still running", p.Session).
			WithHint(fmt.Sprintf("stop it first: banger session stop %s %s", g.Name, p.Session))
	}
	return api.Empty{}, guestErr(g, "removing the session", res)
}

// Log read bounds.
const (
	defaultLogBytes = 1 << 20
	maxLogBytes     = 4 << 20
)

// Logs reads part of the session log.
func (s *Service) Logs(ctx context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error) {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return api.SessionLogsResult{}, err
	}
	limit := p.MaxBytes
	if limit <= 0 {
		limit = defaultLogBytes
	}
	limit = min(limit, maxLogBytes)
	offset, tailBytes := max(p.Offset, 0), int64(0)
	if p.Offset < 0 || (p.TailBytes > 0 && p.Offset == 0) {
		tailBytes = max(p.TailBytes, 1)
		limit = max(limit, min(tailBytes, maxLogBytes))
	}
	res, err := s.run(ctx, g, s.lay.invocation(scriptIO, "read", s.lay.sessionDir(p.Session),
		strconv.FormatInt(offset, 10), strconv.FormatInt(limit, 10), strconv.FormatInt(tailBytes, 10)), nil, nil)
	if err != nil {
		return api.SessionLogsResult{}, err
	}
	if res.code == exitNoSession {
		return api.SessionLogsResult{}, api.NotFound("session", p.Session)
	}
	if res.code != 0 {
		return api.SessionLogsResult{}, guestErr(g, "reading the log", res)
	}
	return parseLogRead(res.stdout)
}

// parseLogRead parses io.sh read output: "SIZE START\n" then the data.
func parseLogRead(out []byte) (api.SessionLogsResult, error) {
	head, data, ok := bytes.Cut(out, []byte("\n"))
	if !ok {
		return api.SessionLogsResult{}, errors.New("session log read: missing size line")
	}
	var size, start int64
	if _, err := fmt.Sscanf(string(head), "%d %d", &size, &start); err != nil {
		return api.SessionLogsResult{}, fmt.Errorf("session log read: bad size line %q", head)
	}
	return api.SessionLogsResult{Data: nonNil(data), Offset: start, Next: start + int64(len(data)), Size: max(size, start+int64(len(data)))}, nil
}

// capped keeps the first 64 KiB written: error output for messages.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := 64<<10 - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
