// Package cli is the banger command line: flag parsing, output formatting
// (aligned tables or --json) and exit codes. Every command except
// `banger daemon` and `banger doctor --local` is a client of the daemon's
// socket; none of them holds VM logic.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/vmm"
)

// Exit codes scripts can rely on (documented in README.md).
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitConflict    = 4 // conflict or busy
	ExitUnavailable = 5 // daemon not running, backend or network unavailable
	ExitCancelled   = 6
)

// Version is set by the build (-ldflags "-X ...cli.Version=...").
var Version = "0.1.0-dev"

// Env lets tests run the CLI in-process with their own streams and
// extra VMM drivers for the daemon.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// DaemonDrivers adds VMM drivers to `banger daemon` (tests only).
	DaemonDrivers map[string]vmm.Driver
}

type app struct {
	env    Env
	socket string
	json   bool
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// Main runs the CLI with os.Args and returns the process exit code.
func Main() int { return Run(os.Args[1:], Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}) }

// Run runs the CLI with args.
func Run(args []string, env Env) int {
	a := &app{env: env}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			a.printErr(ee.err)
		}
		return ee.code
	}
	a.printErr(err)
	return codeFor(err)
}

func (a *app) printErr(err error) {
	if a.json {
		var ae *api.Error
		if !errors.As(err, &ae) {
			ae = &api.Error{Code: api.CodeInternal, Message: err.Error(), Data: &api.ErrorData{Kind: api.KindInternal}}
		}
		b, _ := json.Marshal(map[string]any{"error": ae})
		fmt.Fprintln(a.env.Stderr, string(b))
		return
	}
	fmt.Fprintln(a.env.Stderr, "banger: "+err.Error())
}

func codeFor(err error) int {
	var ae *api.Error
	if !errors.As(err, &ae) {
		if isUsage(err) {
			return ExitUsage
		}
		return ExitError
	}
	switch ae.Kind() {
	case api.KindNotFound:
		return ExitNotFound
	case api.KindConflict, api.KindBusy:
		return ExitConflict
	case api.KindUnavailable:
		return ExitUnavailable
	case api.KindCancelled:
		return ExitCancelled
	case api.KindInvalidName, api.KindInvalidInput:
		return ExitUsage
	}
	if ae.Code == api.CodeInvalidParams {
		return ExitUsage
	}
	return ExitError
}

func isUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument", "flag needs an argument", "usage:"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func usageErr(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf("usage: "+format, args...)}
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "Disposable, fast-booting microVMs for development and coding agents",
		Long: `banger runs a fleet of disposable microVMs on one Linux host.

  banger image build default     build the default Debian image (once)
  banger vm create dev           create and boot a VM named dev
  banger ssh dev                 open a shell in it

Every command except "banger daemon" talks to the daemon's socket
(--socket, $BANGER_SOCKET, or /run/banger/banger.sock).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "daemon socket (default $BANGER_SOCKET or /run/banger/banger.sock)")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print JSON instead of tables")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%w\nsee: %s --help", err, c.CommandPath())}
	})
	root.AddCommand(a.daemonCmd(), a.versionCmd(), a.vmCmd(), a.imageCmd(), a.opCmd(), a.doctorCmd(),
		a.sshCmd(), a.execCmd(), a.sshConfigCmd(), a.sessionCmd(), a.workspaceCmd(), a.webCmd())
	return root
}

func (a *app) dial(ctx context.Context) (*client.Client, error) {
	return client.Dial(ctx, client.SocketPath(a.socket))
}

// withClient runs f with a connected client.
func (a *app) withClient(cmd *cobra.Command, f func(ctx context.Context, c *client.Client) error) error {
	ctx := cmd.Context()
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(ctx, c)
}

// emit prints v as JSON when --json is set, otherwise calls human.
func (a *app) emit(v any, human func(w io.Writer)) error {
	if a.json {
		enc := json.NewEncoder(a.env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(a.env.Stdout)
	return nil
}

// table writes aligned columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
