package cli

import "github.com/spf13/cobra"

// workspaceCmd is `banger workspace ...`: a host repository in a VM and back.
func (a *app) workspaceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Copy a git repository into a VM and bring the work back as a branch"}
	return cmd
}
