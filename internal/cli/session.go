package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/rpc"
	"github.com/banger-dev/banger/internal/session"
)

// sessionCmd is `banger session ...`: long-running guest processes.
func (a *app) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Run long-lived processes in a VM: start, attach, logs, send, signal, stop",
		Long: `Sessions are processes in a VM that keep running when you disconnect and
when the daemon restarts. States: running, exited (with its code), killed
(with the signal), lost (the guest rebooted or the session's supervisor
vanished).`}
	cmd.AddCommand(a.sessionStartCmd(), a.sessionListCmd(), a.sessionShowCmd(), a.sessionAttachCmd(),
		a.sessionLogsCmd(), a.sessionSendCmd(), a.sessionSignalCmd(), a.sessionStopCmd(),
		a.sessionRefCmd("kill", "Kill a session's processes (SIGKILL)"), a.sessionRefCmd("rm", "Remove an ended session and its log"))
	return cmd
}

func (a *app) sessionStartCmd() *cobra.Command {
	var p api.SessionStartParams
	cmd := &cobra.Command{
		Use:   "start VM [--name N] [--cwd DIR] [--env K=V]... [--pty] -- COMMAND [ARG...]",
		Short: "Start a session running COMMAND in the VM",
		Long: `Start COMMAND in the VM as a session. Arguments are passed as a list, never
through a shell; use "-- sh -c '...'" for shell syntax. With --pty the
command gets a terminal (attach to it with banger session attach).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return usageErr("banger session start VM [flags] -- COMMAND [ARG...]")
			}
			p.VM, p.Argv = args[0], args[1:]
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.SessionStart(ctx, p)
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) { fmt.Fprintln(w, s.Name) })
			})
		},
	}
	cmd.Flags().StringVar(&p.Name, "name", "", "session name (default: generated)")
	cmd.Flags().StringVar(&p.Cwd, "cwd", "", "working directory in the guest (default: the guest user's home)")
	cmd.Flags().StringArrayVar(&p.Env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	cmd.Flags().BoolVar(&p.PTY, "pty", false, "run the command on a terminal")
	return cmd
}

func (a *app) sessionListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "ls VM", Aliases: []string{"list"}, Short: "List a VM's sessions", Args: cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.SessionList(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				return a.emit(res, func(w io.Writer) {
					rows := make([][]string, 0, len(res.Sessions))
					for _, s := range res.Sessions {
						rows = append(rows, []string{s.Name, sessionState(s), pidStr(s.PID), yesNo(s.PTY),
							humanBytes(s.LogBytes), ago(s.StartedAt), truncateCmd(s.Argv)})
					}
					table(w, []string{"NAME", "STATE", "PID", "PTY", "LOG", "STARTED", "COMMAND"}, rows)
				})
			})
		},
	}
}

func (a *app) sessionShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show VM SESSION", Short: "Show one session (--json includes state and exit_code)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.SessionShow(ctx, api.SessionRef{VM: args[0], Session: args[1]})
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) { printSession(w, s) })
			})
		},
	}
}

func printSession(w io.Writer, s api.Session) {
	kv := [][2]string{{"Name", s.Name}, {"VM", s.VM}, {"State", sessionState(s)}, {"PID", pidStr(s.PID)},
		{"Command", strings.Join(s.Argv, " ")}, {"Cwd", s.Cwd}, {"PTY", yesNo(s.PTY)}, {"Log", humanBytes(s.LogBytes)}}
	if !s.StartedAt.IsZero() {
		kv = append(kv, [2]string{"Started", s.StartedAt.Local().Format(time.RFC3339)})
	}
	if !s.EndedAt.IsZero() {
		kv = append(kv, [2]string{"Ended", s.EndedAt.Local().Format(time.RFC3339)})
	}
	for _, p := range kv {
		if p[1] != "" && p[1] != "-" {
			fmt.Fprintf(w, "%-8s %s\n", p[0]+":", p[1])
		}
	}
}

func sessionState(s api.Session) string {
	switch {
	case s.State == api.SessionKilled && s.Signal != "":
		return fmt.Sprintf("killed(%s)", s.Signal)
	case s.ExitCode != nil:
		return fmt.Sprintf("%s(%d)", s.State, *s.ExitCode)
	}
	return string(s.State)
}

func pidStr(pid int) string {
	if pid == 0 {
		return "-"
	}
	return strconv.Itoa(pid)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func truncateCmd(argv []string) string {
	s := strings.Join(argv, " ")
	if len(s) > 50 {
		return s[:47] + "..."
	}
	return s
}

func (a *app) sessionLogsCmd() *cobra.Command {
	var p api.SessionLogsParams
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs VM SESSION [--tail BYTES | --offset N] [--follow]",
		Short: "Print a session's output; --follow streams it live until the session ends",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.VM, p.Session = args[0], args[1]
			ctx := cmd.Context()
			if cmd.Flags().Changed("tail") && cmd.Flags().Changed("offset") {
				return usageErr("--tail and --offset exclude each other")
			}
			if follow {
				offset := p.Offset
				if p.TailBytes > 0 {
					offset = -p.TailBytes
				}
				if a.json {
					return usageErr("--follow streams raw output; it has no --json form")
				}
				conn, err := rpc.OpenStream(ctx, client.SocketPath(a.socket), api.StreamSessionFollow,
					api.SessionFollowParams{VM: p.VM, Session: p.Session, Offset: offset}, nil)
				if err != nil {
					return err
				}
				defer conn.Close()
				stop := context.AfterFunc(ctx, func() { conn.Close() })
				defer stop()
				_, err = io.Copy(a.env.Stdout, conn)
				if ctx.Err() != nil {
					return nil // Ctrl-C ends a follow; that is not a failure
				}
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.SessionLogs(ctx, p)
				if err != nil {
					return err
				}
				if a.json {
					return a.emit(res, nil)
				}
				_, err = a.env.Stdout.Write(res.Data)
				return err
			})
		},
	}
	cmd.Flags().Int64Var(&p.TailBytes, "tail", 0, "only the last BYTES of the log")
	cmd.Flags().Int64Var(&p.Offset, "offset", 0, "start at this byte of the log")
	cmd.Flags().Int64Var(&p.MaxBytes, "max-bytes", 0, "read at most this many bytes (default 1 MiB)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream new output until the session ends (Ctrl-C to stop)")
	return cmd
}

func (a *app) sessionSendCmd() *cobra.Command {
	var noNewline bool
	cmd := &cobra.Command{
		Use:   "send VM SESSION [TEXT]",
		Short: "Write TEXT and a newline to a session's input (without TEXT: stdin, raw)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			if len(args) == 3 {
				data = []byte(args[2])
				if !noNewline {
					data = append(data, '\n')
				}
			} else {
				b, err := io.ReadAll(io.LimitReader(a.env.Stdin, 1<<20+1))
				if err != nil {
					return err
				}
				if len(b) > 1<<20 {
					return usageErr("send takes at most 1 MiB at a time")
				}
				data = b
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				_, err := c.SessionSend(ctx, api.SessionSendParams{VM: args[0], Session: args[1], Data: data})
				if err != nil {
					return err
				}
				return a.emit(map[string]int{"sent_bytes": len(data)}, func(io.Writer) {})
			})
		},
	}
	cmd.Flags().BoolVarP(&noNewline, "no-newline", "n", false, "do not append a newline to TEXT")
	return cmd
}

func (a *app) sessionSignalCmd() *cobra.Command {
	return &cobra.Command{
		Use: "signal VM SESSION SIGNAL", Short: "Send a signal (TERM, INT, HUP, USR1, ...) to a session's command",
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.SessionSignal(ctx, api.SessionSignalParams{VM: args[0], Session: args[1], Signal: args[2]})
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) { fmt.Fprintf(w, "%s: %s\n", s.Name, sessionState(s)) })
			})
		},
	}
}

func (a *app) sessionStopCmd() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use: "stop VM SESSION [--timeout SECONDS]", Short: "Stop a session: TERM, then KILL after a timeout",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.SessionStop(ctx, api.SessionStopParams{VM: args[0], Session: args[1], TimeoutSeconds: timeout})
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) { fmt.Fprintf(w, "%s: %s\n", s.Name, sessionState(s)) })
			})
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 10, "seconds to wait after TERM before KILL")
	return cmd
}

// sessionRefCmd is kill or rm.
func (a *app) sessionRefCmd(verb, short string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " VM SESSION", Short: short, Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := api.SessionRef{VM: args[0], Session: args[1]}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if verb == "rm" {
					if _, err := c.SessionRemove(ctx, ref); err != nil {
						return err
					}
					return a.emit(map[string]string{"removed": ref.Session}, func(io.Writer) {})
				}
				s, err := c.SessionKill(ctx, ref)
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) { fmt.Fprintf(w, "%s: %s\n", s.Name, sessionState(s)) })
			})
		},
	}
}

// detachKeys maps --detach-key values to the byte that detaches.
var detachKeys = map[string]byte{"ctrl-]": 0x1d, "ctrl-\\": 0x1c, "ctrl-q": 0x11, "ctrl-p": 0x10}

func (a *app) sessionAttachCmd() *cobra.Command {
	var detachKey string
	cmd := &cobra.Command{
		Use:   "attach VM SESSION [--detach-key ctrl-]]",
		Short: "Attach your terminal to a session (scrollback, live output, input, resize)",
		Long: `Attach to a session: the end of its output is replayed, then output and
input flow live, and terminal resizes reach the session. Press the detach
key (default Ctrl-]) to detach; the session keeps running. Several users
may attach at once. When stdin is not a terminal it is sent as input; its
end does not detach.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, ok := detachKeys[strings.ToLower(detachKey)]
			if !ok {
				return usageErr("--detach-key: want one of ctrl-], ctrl-\\, ctrl-q, ctrl-p")
			}
			return a.attach(cmd.Context(), args[0], args[1], key)
		},
	}
	cmd.Flags().StringVar(&detachKey, "detach-key", "ctrl-]", "key that detaches")
	return cmd
}

func (a *app) attach(ctx context.Context, vmName, name string, detachKey byte) error {
	stdin, _ := a.env.Stdin.(*os.File)
	tty := stdin != nil && term.IsTerminal(int(stdin.Fd()))
	p := api.SessionAttachParams{VM: vmName, Session: name}
	if tty {
		if cols, rows, err := term.GetSize(int(stdin.Fd())); err == nil {
			p.Cols, p.Rows = cols, rows
		}
	}
	var sess api.Session
	conn, err := rpc.OpenStream(ctx, client.SocketPath(a.socket), api.StreamSessionAttach, p, &sess)
	if err != nil {
		return err
	}
	defer conn.Close()
	if tty {
		old, err := term.MakeRaw(int(stdin.Fd()))
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(int(stdin.Fd()), old)
		fmt.Fprintf(a.env.Stderr, "[attached to %s; detach with the detach key]\r\n", name)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(a.env.Stdout, conn)
		outDone <- err
	}()
	detached := make(chan struct{})
	if tty {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if cols, rows, err := term.GetSize(int(stdin.Fd())); err == nil {
					_ = session.WriteFrame(conn, api.FrameResize, session.ResizePayload(rows, cols))
				}
			}
		}()
	}
	if sess.State == api.SessionRunning && a.env.Stdin != nil {
		go forwardInput(a.env.Stdin, conn, detachKey, tty, detached)
	}
	select {
	case <-outDone:
	case <-detached:
		_ = session.WriteFrame(conn, api.FrameDetach, nil)
		if tty {
			fmt.Fprintf(a.env.Stderr, "\r\n[detached from %s]\r\n", name)
		}
		return nil
	case <-ctx.Done():
		return nil
	}
	if tty {
		term.Restore(int(stdin.Fd()), nil)
	}
	// The output ended: the session finished. Say how.
	c, err := a.dial(ctx)
	if err == nil {
		defer c.Close()
		if s, err := c.SessionShow(ctx, api.SessionRef{VM: vmName, Session: name}); err == nil && s.State != api.SessionRunning {
			fmt.Fprintf(a.env.Stderr, "\r\n[session %s %s]\r\n", name, sessionState(s))
		}
	}
	return nil
}

// forwardInput sends stdin as input frames; in terminal mode the detach
// key closes detached instead of being sent.
func forwardInput(in io.Reader, conn net.Conn, detachKey byte, tty bool, detached chan<- struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if i := bytes.IndexByte(chunk, detachKey); tty && i >= 0 {
				if i > 0 {
					_ = session.WriteFrame(conn, api.FrameInput, chunk[:i])
				}
				close(detached)
				return
			}
			if session.WriteFrame(conn, api.FrameInput, chunk) != nil {
				return
			}
		}
		if err != nil {
			return // end of stdin: stay attached to the output
		}
	}
}

// vmSyncAuthCmd is `banger vm sync-auth VM`.
func (a *app) vmSyncAuthCmd() *cobra.Command {
	var flags authFlags
	cmd := &cobra.Command{
		Use:   "sync-auth VM",
		Short: "Copy your authorized key, git identity and declared auth files into a VM",
		Long: `Place your SSH public keys (~/.ssh/*.pub), git user.name and user.email
(from git config --global, or --git-name/--git-email) and the auth files
declared in the daemon config ([[auth_file]]) in the VM, owned by the
guest user with mode 0600. They are also synced at every start.`,
		Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p := api.VMSyncAuthParams{VM: args[0]}
			p.AuthorizedKeys, p.GitName, p.GitEmail = flags.material()
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.VMSyncAuth(ctx, p)
				if err != nil {
					return err
				}
				return a.emit(res, func(w io.Writer) {
					for _, f := range res.Files {
						fmt.Fprintln(w, f)
					}
				})
			})
		},
	}
	flags.register(cmd)
	return cmd
}

// authFlags are the auth material flags of vm create and vm sync-auth.
type authFlags struct {
	gitName, gitEmail string
	noAuth            bool
}

func (f *authFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.gitName, "git-name", "", "git user.name for the guest (default: git config --global user.name)")
	cmd.Flags().StringVar(&f.gitEmail, "git-email", "", "git user.email for the guest (default: git config --global user.email)")
	cmd.Flags().BoolVar(&f.noAuth, "no-auth-sync", false, "do not send your SSH keys and git identity")
}

// material collects the invoking user's public keys and git identity.
func (f *authFlags) material() (keys []string, name, email string) {
	if f.noAuth {
		return nil, f.gitName, f.gitEmail
	}
	keys = localPublicKeys()
	name, email = f.gitName, f.gitEmail
	if name == "" {
		name = gitConfig("user.name")
	}
	if email == "" {
		email = gitConfig("user.email")
	}
	return keys, name, email
}

// localPublicKeys reads ~/.ssh/*.pub of the invoking user.
func localPublicKeys() []string {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(home, ".ssh", "*.pub"))
	var keys []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) > 16<<10 {
			continue
		}
		if k := strings.TrimSpace(string(b)); k != "" && !strings.Contains(k, "\n") {
			keys = append(keys, k)
		}
	}
	return keys
}

func gitConfig(key string) string {
	out, err := exec.Command("git", "config", "--global", "--get", key).Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ""
	}
	return strings.TrimSpace(string(out))
}
