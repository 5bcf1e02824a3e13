package cli

import "github.com/spf13/cobra"

// sessionCmd is `banger session ...`: long-running guest processes.
func (a *app) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Run long-lived processes in a VM: start, attach, logs, send, signal, stop"}
	return cmd
}

// vmSyncAuthCmd is `banger vm sync-auth VM`.
func (a *app) vmSyncAuthCmd() *cobra.Command {
	return &cobra.Command{Use: "sync-auth VM", Short: "Copy your authorized key, git identity and declared auth files into a VM", Hidden: true}
}
