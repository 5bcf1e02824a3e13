package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/daemon"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/paths"
)

func (a *app) daemonCmd() *cobra.Command {
	var cfgPath string
	var o config.Config
	var noWeb bool
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the banger daemon (as root)",
		Long: `Run the banger daemon in the foreground. It owns VMM processes, TAP devices,
NAT rules and disks, and serves JSON-RPC on a Unix socket (mode 0660).

Settings come from defaults, then the config file (TOML, default
/etc/banger/config.toml), then these flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			required := cmd.Flags().Changed("config")
			if cfgPath == "" {
				cfgPath = paths.DefaultConfig
			}
			cfg, err := config.Load(cfgPath, required)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			// Flags given explicitly win over the file.
			f := cmd.Flags()
			set := func(name string, apply func()) {
				if f.Changed(name) {
					apply()
				}
			}
			set("state-dir", func() { cfg.StateDir = o.StateDir })
			set("run-dir", func() { cfg.RunDir = o.RunDir })
			set("socket-group", func() { cfg.SocketGroup = o.SocketGroup })
			set("bridge", func() { cfg.Bridge = o.Bridge })
			set("subnet", func() { cfg.Subnet = o.Subnet })
			set("log-level", func() { cfg.LogLevel = o.LogLevel })
			set("no-network", func() { cfg.NoNetwork = o.NoNetwork })
			set("web-addr", func() { cfg.WebAddr = o.WebAddr })
			set("no-web", func() { cfg.WebEnabled = !noWeb })
			set("qemu-bin", func() { cfg.QEMUBinary = o.QEMUBinary })
			set("firecracker-bin", func() { cfg.FirecrackerBinary = o.FirecrackerBinary })
			set("dns-listen", func() { cfg.DNSListen = o.DNSListen })
			set("tap-prefix", func() { cfg.TAPPrefix = o.TAPPrefix })
			set("image-cache", func() { cfg.ImageCache = o.ImageCache })
			set("jailer", func() { cfg.Jailer = o.Jailer })
			if a.socket != "" {
				cfg.Socket = a.socket
			} else if env := os.Getenv("BANGER_SOCKET"); env != "" && cfg.Socket == "" {
				cfg.Socket = env
			}
			if err := cfg.Validate(); err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			log := newLogger(a.env.Stderr, cfg.LogLevel)
			return daemon.Run(cmd.Context(), daemon.Options{Config: cfg, Version: Version, Logger: log, ExtraDrivers: a.env.DaemonDrivers})
		},
	}
	f := cmd.Flags()
	d := config.Default()
	f.StringVar(&cfgPath, "config", "", "config file (default "+paths.DefaultConfig+", optional)")
	f.StringVar(&o.StateDir, "state-dir", paths.DefaultStateDir, "state directory")
	f.StringVar(&o.RunDir, "run-dir", "", "runtime directory (default /run/banger, or <state-dir>/run)")
	f.StringVar(&o.SocketGroup, "socket-group", "", "group that may use the socket")
	f.StringVar(&o.Bridge, "bridge", d.Bridge, "host bridge name")
	f.StringVar(&o.Subnet, "subnet", d.Subnet, "guest subnet (IPv4 CIDR)")
	f.StringVar(&o.TAPPrefix, "tap-prefix", d.TAPPrefix, "name prefix of banger's TAP devices")
	f.StringVar(&o.LogLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	f.BoolVar(&o.NoNetwork, "no-network", false, "do not set up host networking (VMs cannot be reached)")
	f.StringVar(&o.WebAddr, "web-addr", d.WebAddr, "experimental web UI address (loopback only; see banger web)")
	f.BoolVar(&noWeb, "no-web", false, "do not serve the experimental web UI")
	f.StringVar(&o.QEMUBinary, "qemu-bin", d.QEMUBinary, "QEMU binary")
	f.StringVar(&o.FirecrackerBinary, "firecracker-bin", "", "Firecracker binary")
	f.BoolVar(&o.Jailer, "jailer", false, "run Firecracker under its jailer (settings: jailer_* in the config file)")
	f.StringVar(&o.DNSListen, "dns-listen", "", "DNS server address (default <gateway>:53)")
	f.StringVar(&o.ImageCache, "image-cache", "", "directory of built images, keyed by recipe (default <state-dir>/cache/images)")
	return cmd
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print client and daemon versions (exit 5 when no daemon answers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client string           `json:"client"`
				Daemon *api.VersionInfo `json:"daemon,omitempty"`
				Error  string           `json:"daemon_error,omitempty"`
			}{Client: Version}
			c, err := a.dial(cmd.Context())
			if err == nil {
				defer c.Close()
				var v api.VersionInfo
				if v, err = c.DaemonVersion(cmd.Context()); err == nil {
					out.Daemon = &v
				}
			}
			if err != nil {
				out.Error = err.Error()
			}
			werr := a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "client  %s\n", Version)
				if out.Daemon == nil {
					fmt.Fprintf(w, "daemon  unreachable: %s\n", out.Error)
					return
				}
				fmt.Fprintf(w, "daemon  %s (pid %d, %s, state %s)\n", out.Daemon.Version, out.Daemon.PID, out.Daemon.GoVersion, out.Daemon.StateDir)
				for _, b := range out.Daemon.Backends {
					status := "available"
					if !b.Available {
						status = "unavailable: " + b.Reason
					} else if b.Accel != "" {
						status += " (" + b.Accel + ")"
					}
					fmt.Fprintf(w, "vmm     %-12s %s\n", b.Name, status)
				}
			})
			if werr == nil && out.Daemon == nil {
				// Scripts use `banger version` to wait for the daemon.
				return &exitError{code: ExitUnavailable}
			}
			return werr
		},
	}
}

func (a *app) doctorCmd() *cobra.Command {
	var local bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Diagnose the host: what banger needs, what is missing, how to fix it",
		Long: `Run host diagnostics. By default the daemon runs them (it has the privileges
that matter); with --local, or when no daemon answers, this process runs them.
Exit status 1 when any check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep api.DoctorReport
			ran := false
			if !local {
				if c, err := a.dial(cmd.Context()); err == nil {
					defer c.Close()
					if rep, err = c.DoctorRun(cmd.Context()); err != nil {
						return err
					}
					ran = true
				}
			}
			if !ran {
				rep = doctor.New(doctor.Options{StateDir: paths.DefaultStateDir}, doctor.RealHost()).Run(context.WithoutCancel(cmd.Context()))
			}
			if err := a.emit(rep, func(w io.Writer) { _ = doctor.Render(w, rep) }); err != nil {
				return err
			}
			if code := doctor.ExitCode(rep); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "run the checks in this process instead of the daemon")
	return cmd
}
