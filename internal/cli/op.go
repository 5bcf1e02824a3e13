package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) opCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "op", Short: "Follow asynchronous operations (VM create, image build)"}
	var all bool
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List recent operations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				res, err := c.OpList(ctx, api.OpListParams{All: all})
				if err != nil {
					return err
				}
				return a.emit(res, func(w io.Writer) {
					rows := make([][]string, 0, len(res.Ops))
					for _, o := range res.Ops {
						rows = append(rows, []string{o.ID, o.Kind, o.Target, string(o.State), dash(o.Stage),
							fmt.Sprintf("%3.0f%%", o.Progress*100), o.CreatedAt.Local().Format("01-02 15:04:05"), dash(firstLine(o.Error))})
					}
					table(w, []string{"ID", "KIND", "TARGET", "STATE", "STAGE", "PROGRESS", "CREATED", "ERROR"}, rows)
				})
			})
		},
	}
	ls.Flags().BoolVar(&all, "all", false, "all recorded operations, not just the latest 50")

	show := &cobra.Command{
		Use: "show OP", Aliases: []string{"status"}, Short: "Show one operation with its log tail", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				o, err := c.OpStatus(ctx, api.OpRef{Op: args[0]})
				if err != nil {
					return err
				}
				return a.emit(o, func(w io.Writer) { printOp(w, o) })
			})
		},
	}
	wait := &cobra.Command{
		Use: "wait OP", Short: "Wait for an operation to finish, showing progress", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				o, err := c.OpStatus(ctx, api.OpRef{Op: args[0]})
				if err != nil {
					return err
				}
				final, err := a.follow(ctx, c, o)
				if err != nil {
					return err
				}
				return a.emit(final, func(w io.Writer) { fmt.Fprintf(w, "%s %s\n", final.ID, final.State) })
			})
		},
	}
	cancel := &cobra.Command{
		Use: "cancel OP", Short: "Cancel an operation; it removes what it made", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				o, err := c.OpCancel(ctx, api.OpRef{Op: args[0]})
				if err != nil {
					return err
				}
				return a.emit(o, func(w io.Writer) { fmt.Fprintf(w, "%s %s\n", o.ID, o.State) })
			})
		},
	}
	cmd.AddCommand(ls, show, wait, cancel)
	return cmd
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

func printOp(w io.Writer, o api.Operation) {
	fmt.Fprintf(w, "ID:       %s\nKind:     %s\nTarget:   %s\nState:    %s\n", o.ID, o.Kind, o.Target, o.State)
	if o.Stage != "" {
		fmt.Fprintf(w, "Stage:    %s (%s)\n", o.Stage, strings.Join(o.Stages, " > "))
	}
	fmt.Fprintf(w, "Progress: %.0f%%\nCreated:  %s\n", o.Progress*100, o.CreatedAt.Local().Format(time.RFC3339))
	if !o.FinishedAt.IsZero() {
		fmt.Fprintf(w, "Finished: %s (%s)\n", o.FinishedAt.Local().Format(time.RFC3339), o.FinishedAt.Sub(o.CreatedAt).Round(time.Millisecond))
	}
	if o.Error != "" {
		fmt.Fprintf(w, "Error:    %s\n", o.Error)
	}
	if len(o.LogTail) > 0 {
		fmt.Fprintln(w, "Log:")
		for _, l := range o.LogTail {
			fmt.Fprintln(w, "  "+l)
		}
	}
}

// follow long-polls an operation, printing stage changes and log lines to
// stderr, until it ends. Ctrl-C cancels the operation (which cleans up)
// and waits for that to finish. A failed or cancelled op is an error.
func (a *app) follow(ctx context.Context, c *client.Client, op api.Operation) (api.Operation, error) {
	tty := false
	if f, ok := a.env.Stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	shownLines := 0
	lastStage := ""
	cur := op
	printed := func(o api.Operation) {
		if a.json {
			return
		}
		// The log tail is a sliding window; print what is new in it.
		if len(o.LogTail) < shownLines {
			shownLines = 0
		}
		for _, l := range o.LogTail[min(shownLines, len(o.LogTail)):] {
			if strings.HasPrefix(l, "==> ") {
				lastStage = strings.TrimPrefix(l, "==> ")
				fmt.Fprintf(a.env.Stderr, "[%3.0f%%] %s\n", o.Progress*100, lastStage)
			} else if tty || o.Kind != "image.build" {
				fmt.Fprintf(a.env.Stderr, "       %s\n", l)
			}
		}
		shownLines = len(o.LogTail)
	}
	printed(cur)
	for !cur.State.Terminal() {
		next, err := c.OpWait(ctx, api.OpWaitParams{Op: cur.ID, AfterUpdate: cur.UpdatedAt, TimeoutSeconds: 30})
		if err != nil {
			if ctx.Err() != nil {
				return a.cancelOp(c, cur)
			}
			return cur, err
		}
		// The log window slides by the number of lines added.
		if len(next.LogTail) == len(cur.LogTail) && len(next.LogTail) > 0 && next.LogTail[len(next.LogTail)-1] != cur.LogTail[len(cur.LogTail)-1] {
			shownLines = overlap(cur.LogTail, next.LogTail)
		}
		cur = next
		printed(cur)
	}
	switch cur.State {
	case api.OpSucceeded:
		return cur, nil
	case api.OpCancelled:
		return cur, api.Errorf(api.KindCancelled, "%s %s was cancelled", cur.Kind, cur.Target)
	default:
		return cur, &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("%s %s failed: %s", cur.Kind, cur.Target, cur.Error),
			Data: &api.ErrorData{Kind: api.KindInternal, Hint: "details: banger op show " + cur.ID}}
	}
}

// overlap returns how many lines of next were already in prev, for a
// sliding window whose oldest lines fell off.
func overlap(prev, next []string) int {
	for start := range prev {
		n := len(prev) - start
		if n <= len(next) && equal(prev[start:], next[:n]) {
			return n
		}
	}
	return 0
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (a *app) cancelOp(c *client.Client, op api.Operation) (api.Operation, error) {
	if !a.json {
		fmt.Fprintf(a.env.Stderr, "\ncancelling %s %s (removing what it made)...\n", op.Kind, op.Target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	final, err := c.OpCancel(ctx, api.OpRef{Op: op.ID})
	if err != nil {
		return op, err
	}
	return final, api.Errorf(api.KindCancelled, "%s %s cancelled", op.Kind, op.Target)
}
