package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/guest"
)

func (a *app) sshCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh VM [-- COMMAND...]",
		Short: "Open a shell (or run a command) in a VM over SSH with its pinned host key",
		Long: `Open an interactive shell in the VM, with a real terminal when stdin is one.
The exit status of the remote shell or command is passed through.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var info api.SSHInfo
			if err := a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.VMShow(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				if v.State != api.VMRunning {
					return api.Errorf(api.KindConflict, "VM %q is %s, not running", v.Name, v.State).WithHint("start it with: banger vm start " + v.Name)
				}
				info, err = c.VMSSHInfo(ctx, api.VMRef{VM: args[0]})
				return err
			}); err != nil {
				return err
			}
			t, signer, err := sshTarget(info)
			if err != nil {
				return err
			}
			stdin, _ := a.env.Stdin.(*os.File)
			if stdin == nil {
				stdin = os.Stdin
			}
			code, err := guest.Interactive(cmd.Context(), t, signer, args[1:], stdin, a.env.Stdout, a.env.Stderr)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
}

// sshTarget loads the daemon-managed client key and the VM's pinned host
// key. Reading the key needs the same rights as the daemon's state dir.
func sshTarget(info api.SSHInfo) (guest.Target, ssh.Signer, error) {
	keyPEM, err := os.ReadFile(info.IdentityFile)
	if err != nil {
		return guest.Target{}, nil, fmt.Errorf("read SSH client key: %w (run as root or a member of the socket group)", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return guest.Target{}, nil, fmt.Errorf("parse SSH client key: %w", err)
	}
	hostKey, err := pinnedKey(info.KnownHostsFile, info.HostKeyAlias)
	if err != nil {
		return guest.Target{}, nil, err
	}
	return guest.Target{Addr: net.JoinHostPort(info.Host, strconv.Itoa(info.Port)), User: info.User, HostKey: hostKey}, signer, nil
}

// pinnedKey reads the one host key pinned for alias.
func pinnedKey(path, alias string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pinned host key: %w", err)
	}
	for len(data) > 0 {
		_, hosts, key, _, rest, err := ssh.ParseKnownHosts(data)
		if err != nil {
			break
		}
		for _, h := range hosts {
			if h == alias || h == knownhosts.Normalize(alias) {
				return key, nil
			}
		}
		data = rest
	}
	return nil, fmt.Errorf("no pinned host key for %s in %s", alias, path)
}

func (a *app) execCmd() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "exec VM -- COMMAND [ARG...]",
		Short: "Run a command in a VM; prints its stdout and stderr and exits with its status",
		Long: `Run one command in the VM through the daemon's pooled SSH connection.
Arguments are passed as a list (each one quoted for the guest shell), never
spliced into a shell string. Stdin is forwarded when it is not a terminal.`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return usageErr("banger exec VM -- COMMAND [ARG...]")
			}
			stdin := ""
			if f, ok := a.env.Stdin.(*os.File); !ok || !isTerminal(f) {
				if a.env.Stdin != nil {
					b, err := io.ReadAll(io.LimitReader(a.env.Stdin, 64<<20))
					if err != nil {
						return err
					}
					stdin = string(b)
				}
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.VMExec(ctx, api.VMExecParams{VM: args[0], Argv: args[1:], Stdin: stdin, TimeoutSeconds: timeout})
				if err != nil {
					return err
				}
				if a.json {
					if err := a.emit(res, nil); err != nil {
						return err
					}
				} else {
					io.WriteString(a.env.Stdout, res.Stdout)
					io.WriteString(a.env.Stderr, res.Stderr)
				}
				if res.ExitCode != 0 {
					return &exitError{code: res.ExitCode}
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 0, "seconds before the command is stopped (default: none)")
	return cmd
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (a *app) sshConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-config",
		Short: "Print an OpenSSH config so plain ssh, scp, git and editors reach VMs as <vm>.banger",
		Long: `Print ssh_config Host blocks for every VM with an address. Save it and include
it from ~/.ssh/config:

  banger ssh-config > ~/.ssh/banger.conf
  echo 'Include ~/.ssh/banger.conf' >> ~/.ssh/config
  ssh dev.banger

Host keys are checked strictly against each VM's pinned key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.VMList(ctx, api.VMListParams{})
				if err != nil {
					return err
				}
				var entries []guest.SSHConfigEntry
				for _, v := range res.VMs {
					if v.IP == "" {
						continue
					}
					info, err := c.VMSSHInfo(ctx, api.VMRef{VM: v.ID})
					if err != nil {
						continue
					}
					entries = append(entries, guest.SSHConfigEntry{Name: v.Name, HostName: info.Host, Port: info.Port,
						User: info.User, IdentityFile: info.IdentityFile, KnownHostsFile: info.KnownHostsFile})
				}
				out := guest.RenderSSHConfig(entries)
				if a.json {
					return a.emit(map[string]any{"config": out, "vms": len(entries)}, nil)
				}
				_, err = io.WriteString(a.env.Stdout, strings.TrimLeft(out, "\n"))
				return err
			})
		},
	}
}
