package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/workspace"
)

// workspaceCmd is `banger workspace ...`: a host repository in a VM and back.
// Git work on the host runs here, as the invoking user; the daemon only
// moves the archive and the bundle between host files and the guest.
func (a *app) workspaceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Copy a git repository into a VM and bring the work back as a branch"}
	cmd.AddCommand(a.workspacePushCmd(), a.workspaceExportCmd(), a.workspaceStatusCmd())
	return cmd
}

// pushOptions are the flags of a push (also used by vm create --workspace).
type pushOptions struct {
	depth     int
	guestPath string
}

func (a *app) workspacePushCmd() *cobra.Command {
	var o pushOptions
	cmd := &cobra.Command{
		Use:   "push VM [PATH]",
		Short: "Copy a git repository (with uncommitted work) into a VM",
		Long: `Copy the git repository at PATH (default: the current directory) into the
VM: the last --depth commits up to HEAD, HEAD's branch, and the staged,
unstaged and untracked (not ignored) changes exactly as git sees them.
Ignored files stay on the host. The repository is only read.

It lands in ~/work/<repository name> in the guest unless --guest-path says
otherwise; the guest's git identity is set to yours.`,
		Args: cobra.RangeArgs(1, 2), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "."
			if len(args) == 2 {
				path = args[1]
			}
			repo, err := workspace.Inspect(cmd.Context(), path)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := a.pushWorkspace(ctx, c, args[0], repo, o)
				if err != nil {
					return err
				}
				return a.emit(st, func(w io.Writer) { printWorkspace(w, st) })
			})
		},
	}
	addPushFlags(cmd, &o)
	return cmd
}

func addPushFlags(cmd *cobra.Command, o *pushOptions) {
	cmd.Flags().IntVar(&o.depth, "depth", workspace.DefaultDepth, "commits of history to copy (0: all)")
	cmd.Flags().StringVar(&o.guestPath, "guest-path", "", "where the repository goes in the guest (default ~/work/<name>; relative to the home directory)")
}

// pushWorkspace prepares the copy of an inspected repository and hands it
// to the daemon.
func (a *app) pushWorkspace(ctx context.Context, c *client.Client, vm string, repo workspace.Repo, o pushOptions) (api.WorkspaceStatus, error) {
	if o.depth < 0 {
		return api.WorkspaceStatus{}, usageErr("--depth must be 0 (all history) or positive")
	}
	start := time.Now()
	a.progressNote("preparing %s (HEAD %.12s%s, %d staged, %d unstaged, %d untracked)...", repo.Root, repo.Head,
		branchNote(repo.Branch), len(repo.Staged), len(repo.Unstaged), len(repo.Untracked))
	arch, err := workspace.Prepare(ctx, repo, o.depth, "")
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	defer arch.Remove()
	for _, w := range arch.Warnings {
		fmt.Fprintln(a.env.Stderr, "banger: warning: "+w)
	}
	// The daemon (root) reads the archive; the directory stays private.
	name, email := workspace.Identity(ctx, repo.Root)
	a.progressNote("copying %.1f MiB into %s...", float64(arch.Size)/(1<<20), vm)
	st, err := c.WorkspacePush(ctx, api.WorkspacePushParams{
		VM: vm, ArchivePath: arch.Path, GuestPath: o.guestPath, RepoName: repo.Name, HostRepo: repo.Root,
		BaseCommit: repo.Head, Branch: repo.Branch, GitName: name, GitEmail: email, SizeBytes: arch.Size,
	})
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	a.progressNote("pushed in %s", time.Since(start).Round(10*time.Millisecond))
	return st, nil
}

func branchNote(b string) string {
	if b == "" {
		return ", detached"
	}
	return " on " + b
}

func (a *app) workspaceExportCmd() *cobra.Command {
	var branch, patch, message string
	var force bool
	cmd := &cobra.Command{
		Use:   "export VM",
		Short: "Bring the work done in a VM back as a branch (or a patch series)",
		Long: `Commit whatever is left uncommitted in the VM's workspace (on top of the
commits made there), and bring every commit since the pushed base back into
the host repository as the branch banger/<VM> (or --branch). The host's
working tree, index and current branch are never touched; an existing
branch is only overwritten with --force. With --patch the commits are
written as a patch series (git format-patch) to that file instead.`,
		Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			vm := args[0]
			if patch != "" && cmd.Flags().Changed("branch") {
				return usageErr("--branch and --patch exclude each other")
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.WorkspaceStatus(ctx, api.VMRef{VM: vm})
				if err != nil {
					return err
				}
				repo, err := workspace.Inspect(ctx, st.HostRepo)
				if err != nil && !api.IsKind(err, api.KindConflict) { // mid-merge is fine: nothing is checked out
					return fmt.Errorf("the workspace's host repository %s: %w", st.HostRepo, err)
				}
				root := st.HostRepo
				if err == nil {
					root = repo.Root
				}
				target := patch
				if patch == "" {
					if branch == "" {
						branch = workspace.DefaultBranch(vm)
					}
					if err := workspace.CheckBranch(ctx, root, branch, force); err != nil {
						return err
					}
					target = branch
				} else if _, err := os.Lstat(patch); err == nil && !force {
					return api.Errorf(api.KindConflict, "%s already exists", patch).WithHint("pass --force to overwrite it")
				}
				dir, err := os.MkdirTemp("", "banger-export-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				a.progressNote("finalizing the workspace in %s...", vm)
				res, err := c.WorkspaceExport(ctx, api.WorkspaceExportParams{
					VM: vm, BundlePath: dir + "/export.bundle", Message: message, Target: target})
				if err != nil {
					return err
				}
				out := exportOutput{WorkspaceExportResult: res}
				if res.Commits == 0 {
					return a.emit(out, func(w io.Writer) {
						fmt.Fprintf(w, "nothing to export: no changes in %s since %.12s\n", vm, res.BaseCommit)
					})
				}
				if patch != "" {
					err = workspace.WritePatches(ctx, root, res.BundlePath, res.BaseCommit, res.HeadCommit, patch, force)
					out.Patch = patch
				} else {
					err = workspace.FetchBundle(ctx, root, res.BundlePath, res.BaseCommit, branch, force)
					out.Branch = branch
				}
				if err != nil {
					return err
				}
				out.BundlePath = "" // removed with the temp dir
				return a.emit(out, func(w io.Writer) {
					where := "branch " + out.Branch
					if out.Patch != "" {
						where = "patch series " + out.Patch
					}
					fmt.Fprintf(w, "%d commit(s), %d file(s) changed since %.12s -> %s (%.12s)\n",
						res.Commits, len(res.Files), res.BaseCommit, where, res.HeadCommit)
					if out.Branch != "" {
						fmt.Fprintf(w, "review with: git -C %s diff %.12s...%s\n", shellWord(root), res.BaseCommit, out.Branch)
					}
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&branch, "branch", "", "branch to create in the host repository (default banger/<VM>)")
	f.BoolVar(&force, "force", false, "overwrite an existing branch or patch file")
	f.StringVar(&patch, "patch", "", "write a patch series to this file instead of creating a branch")
	f.StringVar(&message, "message", "", "message of the commit that finalizes uncommitted work (default: banger: work from VM <VM>)")
	return cmd
}

// exportOutput is what export prints with --json.
type exportOutput struct {
	api.WorkspaceExportResult
	Branch string `json:"branch,omitempty"`
	Patch  string `json:"patch,omitempty"`
}

func shellWord(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`;&|<>()*?[]{}~#!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) workspaceStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use: "status VM", Short: "Show a VM's workspace: base commit, guest changes, last export",
		Args: cobra.ExactArgs(1), ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.WorkspaceStatus(ctx, api.VMRef{VM: args[0]})
				if err != nil {
					return err
				}
				return a.emit(st, func(w io.Writer) { printWorkspace(w, st) })
			})
		},
	}
}

func printWorkspace(w io.Writer, st api.WorkspaceStatus) {
	rows := [][]string{
		{"VM", st.VM},
		{"Guest path", st.GuestPath},
		{"Host repo", st.HostRepo},
		{"Base commit", st.BaseCommit},
		{"Branch", dash(st.Branch)},
		{"Pushed", st.PushedAt.Local().Format(time.DateTime)},
	}
	if st.GuestHead != "" {
		rows = append(rows, []string{"Guest HEAD", st.GuestHead},
			[]string{"Commits", fmt.Sprint(st.Commits)},
			[]string{"Changed", fmt.Sprintf("%d file(s)", len(st.Changed))})
	}
	if !st.LastExport.IsZero() {
		rows = append(rows, []string{"Last export", st.LastExport.Local().Format(time.DateTime) + " -> " + dash(st.ExportedTo)})
	}
	if st.GuestError != "" {
		rows = append(rows, []string{"Guest", st.GuestError})
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-12s %s\n", r[0]+":", r[1])
	}
	for _, f := range st.Changed {
		fmt.Fprintf(w, "  %s\n", f)
	}
}
