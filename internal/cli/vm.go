package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/workspace"
)

func (a *app) vmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, run and inspect VMs"}
	cmd.AddCommand(a.vmListCmd(), a.vmShowCmd(), a.vmCreateCmd(), a.vmStartCmd(), a.vmStopCmd("stop"),
		a.vmStopCmd("restart"), a.vmKillCmd(), a.vmRmCmd(), a.vmSetCmd(), a.vmStatsCmd(), a.vmHealthCmd("health"),
		a.vmHealthCmd("ping"), a.vmLogsCmd(), a.vmPauseCmd("pause"), a.vmPauseCmd("resume"), a.vmSyncAuthCmd())
	return cmd
}

// completeVMs offers VM names for shell completion.
func (a *app) completeVMs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := a.dial(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer c.Close()
	res, err := c.VMList(ctx, api.VMListParams{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, len(res.VMs))
	for i, v := range res.VMs {
		names[i] = v.Name
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) vmListCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List VMs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.VMList(ctx, api.VMListParams{State: api.VMState(state)})
				if err != nil {
					return err
				}
				return a.emit(res, func(w io.Writer) {
					rows := make([][]string, 0, len(res.VMs))
					for _, v := range res.VMs {
						rows = append(rows, []string{v.Name, string(v.State), dash(v.Image), dash(v.IP),
							strconv.Itoa(v.CPUs), fmt.Sprintf("%d MiB", v.MemoryMiB), v.VMM, v.ID[:min(12, len(v.ID))]})
					}
					table(w, []string{"NAME", "STATE", "IMAGE", "IP", "CPUS", "MEMORY", "VMM", "ID"}, rows)
				})
			})
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only VMs in this state")
	return cmd
}

func printVM(w io.Writer, v api.VM) {
	kv := [][2]string{
		{"Name", v.Name}, {"ID", v.ID}, {"State", string(v.State)}, {"Reason", v.StateReason},
		{"Image", v.Image}, {"VMM", v.VMM}, {"Accel", v.Accel},
		{"CPUs", strconv.Itoa(v.CPUs)}, {"Memory", fmt.Sprintf("%d MiB", v.MemoryMiB)},
		{"Work disk", fmt.Sprintf("%d MiB", v.DiskSizeMiB)}, {"Overlay", v.Overlay},
		{"IP", v.IP}, {"DNS", v.DNSName}, {"MAC", v.MAC}, {"TAP", v.TAP},
	}
	if v.PID != 0 {
		kv = append(kv, [2]string{"PID", strconv.Itoa(v.PID)})
	}
	kv = append(kv, [2]string{"Created", v.CreatedAt.Local().Format(time.RFC3339)})
	if !v.StartedAt.IsZero() && (v.State == api.VMRunning || v.State == api.VMPaused) {
		kv = append(kv, [2]string{"Started", v.StartedAt.Local().Format(time.RFC3339)})
	}
	if p := v.Pending; p != nil {
		var parts []string
		if p.CPUs != 0 {
			parts = append(parts, fmt.Sprintf("cpus=%d", p.CPUs))
		}
		if p.MemoryMiB != 0 {
			parts = append(parts, fmt.Sprintf("memory=%dMiB", p.MemoryMiB))
		}
		if p.DiskSizeMiB != 0 {
			parts = append(parts, fmt.Sprintf("disk=%dMiB", p.DiskSizeMiB))
		}
		kv = append(kv, [2]string{"Pending", strings.Join(parts, " ") + " (applied at next start)"})
	}
	for _, p := range kv {
		if p[1] != "" {
			fmt.Fprintf(w, "%-10s %s\n", p[0]+":", p[1])
		}
	}
	for _, c := range v.Capabilities {
		line := c.Name + ": " + c.Status
		if c.Reason != "" {
			line += " (" + c.Reason + ")"
		}
		fmt.Fprintf(w, "%-10s %s\n", "Hook:", line)
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "%-10s %s\n", "Warning:", warn)
	}
}

func (a *app) vmShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show VM", Short: "Show one VM", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.VMShow(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				return a.emit(v, func(w io.Writer) { printVM(w, v) })
			})
		},
	}
}

func (a *app) vmCreateCmd() *cobra.Command {
	var p api.VMCreateParams
	var memory, diskSize string
	var detach bool
	var auth authFlags
	var wsPath string
	var wsOpts pushOptions
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM and boot it (asynchronous; shows progress)",
		Long: `Create a VM: allocate its address and TAP device, make its copy-on-write
system disk and its work disk, boot it and wait until SSH answers.

Progress is shown until the VM is ready; Ctrl-C cancels the create and
removes everything it made. With --detach the operation id is printed
and the command returns at once (follow it with banger op wait ID).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			var err error
			if p.MemoryMiB, err = parseMiB("--memory", memory); err != nil {
				return err
			}
			if p.DiskSizeMiB, err = parseMiB("--disk-size", diskSize); err != nil {
				return err
			}
			// Check the repository before making a VM for it.
			var repo workspace.Repo
			if wsPath != "" {
				if detach || p.NoStart {
					return usageErr("--workspace needs a running VM: it cannot be combined with --detach or --no-start")
				}
				if repo, err = workspace.Inspect(cmd.Context(), wsPath); err != nil {
					return err
				}
			}
			p.AuthorizedKeys, p.GitName, p.GitEmail = auth.material()
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				op, err := c.VMCreate(ctx, p)
				if err != nil {
					return err
				}
				if detach {
					return a.emit(op, func(w io.Writer) { fmt.Fprintln(w, op.ID) })
				}
				final, err := a.follow(ctx, c, op)
				if err != nil {
					return err
				}
				v, err := c.VMShow(ctx, api.VMRef{VM: p.Name})
				if err != nil {
					return err
				}
				_ = final
				if wsPath != "" {
					if _, err := a.pushWorkspace(ctx, c, v.Name, repo, wsOpts); err != nil {
						return fmt.Errorf("VM %s was created, but pushing the workspace failed: %w", v.Name, err)
					}
				}
				return a.emit(v, func(w io.Writer) {
					printVM(w, v)
					fmt.Fprintf(w, "\nReach it with: banger ssh %s\n", v.Name)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Image, "image", "", "image name or id (default: the daemon's default image)")
	f.IntVar(&p.CPUs, "cpus", 0, "vCPUs (default from the daemon config)")
	f.StringVar(&memory, "memory", "", "memory, in MiB or with a unit (1024, 2G)")
	f.StringVar(&diskSize, "disk-size", "", "work disk size, in MiB or with a unit (4096, 10G)")
	f.StringVar(&p.VMM, "vmm", "", "qemu or firecracker (default from the daemon config)")
	f.StringVar(&p.Overlay, "overlay", "", "system overlay strategy: dm-snapshot, qcow2, reflink or copy (default: best available)")
	f.BoolVar(&p.NoStart, "no-start", false, "provision but do not boot")
	f.BoolVar(&detach, "detach", false, "print the operation id and return without waiting")
	f.StringArrayVar(&p.Capabilities, "cap", nil, "enable a start hook: work-disk, auth-sync (repeatable; auth-sync is on when keys or a git identity are sent)")
	auth.register(cmd)
	f.StringVar(&wsPath, "workspace", "", "push the git repository at this path into the VM once it is up (see banger workspace push)")
	f.IntVar(&wsOpts.depth, "workspace-depth", workspace.DefaultDepth, "commits of history --workspace copies (0: all)")
	f.StringVar(&wsOpts.guestPath, "workspace-guest-path", "", "where --workspace puts the repository in the guest")
	return cmd
}

// parseMiB accepts a bare number of MiB or a size with a unit.
func parseMiB(flag, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 {
			return 0, usageErr("%s must be positive, got %q", flag, s)
		}
		return n, nil
	}
	b, err := disk.ParseSize(s)
	if err != nil {
		return 0, usageErr("%s: %v", flag, err)
	}
	if b%(1<<20) != 0 {
		return 0, usageErr("%s %q: must be a whole number of MiB", flag, s)
	}
	return int(b >> 20), nil
}

func (a *app) vmStartCmd() *cobra.Command {
	return &cobra.Command{
		Use: "start VM", Short: "Boot a stopped VM and wait for SSH", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmAction(cmd, func(ctx context.Context, c *client.Client) (api.VM, error) {
				a.progressNote("starting %s...", args[0])
				return c.VMStart(ctx, api.VMRef{VM: args[0]})
			})
		},
	}
}

func (a *app) vmStopCmd(verb string) *cobra.Command {
	var timeout int
	short := "Shut a VM down gracefully; kill it after --timeout"
	if verb == "restart" {
		short = "Stop (gracefully) and start a VM again; applies pending changes"
	}
	cmd := &cobra.Command{
		Use: verb + " VM", Short: short, Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmAction(cmd, func(ctx context.Context, c *client.Client) (api.VM, error) {
				p := api.VMStopParams{VM: args[0], TimeoutSeconds: timeout}
				a.progressNote("%s %s...", strings.TrimSuffix(verb, "p")+map[string]string{"stop": "pping", "restart": "ing"}[verb], args[0])
				if verb == "restart" {
					return c.VMRestart(ctx, p)
				}
				return c.VMStop(ctx, p)
			})
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 0, "seconds to wait for a graceful shutdown (default from the daemon config)")
	return cmd
}

func (a *app) progressNote(format string, args ...any) {
	if !a.json {
		fmt.Fprintf(a.env.Stderr, format+"\n", args...)
	}
}

func (a *app) vmKillCmd() *cobra.Command {
	return &cobra.Command{
		Use: "kill VM", Short: "Stop a VM at once, without a graceful shutdown", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmAction(cmd, func(ctx context.Context, c *client.Client) (api.VM, error) {
				return c.VMKill(ctx, api.VMRef{VM: args[0]})
			})
		},
	}
}

func (a *app) vmAction(cmd *cobra.Command, f func(ctx context.Context, c *client.Client) (api.VM, error)) error {
	return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
		v, err := f(ctx, c)
		if err != nil {
			return err
		}
		return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "%s %s\n", v.Name, v.State) })
	})
}

func (a *app) vmRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "rm VM...", Aliases: []string{"delete"}, Short: "Delete VMs and everything they own",
		Args: cobra.MinimumNArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var firstErr error
				deleted := []string{}
				for _, name := range args {
					if _, err := c.VMDelete(ctx, api.VMDeleteParams{VM: name, Force: force}); err != nil {
						if firstErr == nil {
							firstErr = err
						}
						if len(args) > 1 {
							a.printErr(err)
						}
						continue
					}
					deleted = append(deleted, name)
				}
				if err := a.emit(map[string]any{"deleted": deleted}, func(w io.Writer) {
					for _, n := range deleted {
						fmt.Fprintf(w, "deleted %s\n", n)
					}
				}); err != nil {
					return err
				}
				if firstErr != nil && len(args) > 1 {
					return &exitError{code: codeFor(firstErr)}
				}
				return firstErr
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill and delete a running VM")
	return cmd
}

func (a *app) vmSetCmd() *cobra.Command {
	var cpus int
	var memory, diskSize string
	cmd := &cobra.Command{
		Use:   "set VM",
		Short: "Change vCPUs, memory or work-disk size (applied at next start when running)",
		Args:  cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p := api.VMSetParams{VM: args[0]}
			f := cmd.Flags()
			if f.Changed("cpus") {
				p.CPUs = &cpus
			}
			if f.Changed("memory") {
				m, err := parseMiB("--memory", memory)
				if err != nil {
					return err
				}
				p.MemoryMiB = &m
			}
			if f.Changed("disk-size") {
				d, err := parseMiB("--disk-size", diskSize)
				if err != nil {
					return err
				}
				p.DiskSizeMiB = &d
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.VMSet(ctx, p)
				if err != nil {
					return err
				}
				return a.emit(v, func(w io.Writer) { printVM(w, v) })
			})
		},
	}
	cmd.Flags().IntVar(&cpus, "cpus", 0, "vCPUs")
	cmd.Flags().StringVar(&memory, "memory", "", "memory (MiB or with a unit)")
	cmd.Flags().StringVar(&diskSize, "disk-size", "", "work disk size; disks only grow (MiB or with a unit)")
	return cmd
}

func (a *app) vmStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use: "stats VM", Short: "VMM process CPU and memory, disk use and uptime", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				s, err := c.VMStats(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				return a.emit(s, func(w io.Writer) {
					table(w, []string{"VM", "STATE", "PID", "CPU%", "CPU TIME", "RSS", "DISK", "UPTIME"}, [][]string{{
						s.VM, string(s.State), dash(strconv.Itoa(s.PID)), fmt.Sprintf("%.1f", s.CPUPercent),
						fmt.Sprintf("%.1fs", s.CPUSeconds), humanBytes(s.RSSBytes), humanBytes(s.DiskBytes),
						(time.Duration(s.UptimeSeconds) * time.Second).String(),
					}})
				})
			})
		},
	}
}

func (a *app) vmHealthCmd(verb string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " VM", Short: "Check that the guest answers over SSH (exit 1 when not)", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				h, err := c.VMHealth(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				if err := a.emit(h, func(w io.Writer) {
					if h.Reachable {
						fmt.Fprintf(w, "%s reachable over SSH (%.1f ms)\n", h.VM, h.LatencyMS)
					} else {
						fmt.Fprintf(w, "%s unreachable: %s\n", h.VM, h.Error)
					}
				}); err != nil {
					return err
				}
				if !h.Reachable {
					return &exitError{code: ExitError}
				}
				return nil
			})
		},
	}
}

func (a *app) vmLogsCmd() *cobra.Command {
	var tailBytes int64
	cmd := &cobra.Command{
		Use: "logs VM", Short: "Print the VM's serial console log", Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := c.VMLogs(ctx, api.VMLogsParams{VM: args[0], TailBytes: tailBytes})
				if err != nil {
					return err
				}
				return a.emit(l, func(w io.Writer) { io.WriteString(w, l.Data) })
			})
		},
	}
	cmd.Flags().Int64Var(&tailBytes, "tail-bytes", 0, "only the last N bytes (default 64 KiB)")
	return cmd
}

func (a *app) vmPauseCmd(verb string) *cobra.Command {
	short := "Freeze a running VM's vCPUs (memory stays allocated)"
	if verb == "resume" {
		short = "Continue a paused VM"
	}
	return &cobra.Command{
		Use: verb + " VM", Short: short, Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmAction(cmd, func(ctx context.Context, c *client.Client) (api.VM, error) {
				if verb == "pause" {
					return c.VMPause(ctx, api.VMRef{VM: args[0]})
				}
				return c.VMResume(ctx, api.VMRef{VM: args[0]})
			})
		},
	}
}
