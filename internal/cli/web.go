package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
)

func (a *app) webCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "web",
		Short: "Print the link to the daemon's experimental web UI",
		Long: `Print the URL of the daemon's experimental web UI (a dashboard of VMs, images,
operations and sessions), including the access token. Open it in a browser on
this machine; the page then keeps the token in a cookie.

The UI listens on 127.0.0.1:7777 by default (web_addr, --web-addr; --no-web
turns it off). The token changes whenever the daemon restarts, and its file is
readable by the daemon's user only: run this with the same privileges (sudo).
Treat the link as a password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				v, err := c.DaemonVersion(ctx)
				if err != nil {
					return err
				}
				link, err := webURL(v.StateDir)
				if err != nil {
					return err
				}
				return a.emit(map[string]string{"url": link}, func(w io.Writer) { fmt.Fprintln(w, link) })
			})
		},
	}
}

// webURL builds the UI link from the files the daemon writes in its
// state dir.
func webURL(stateDir string) (string, error) {
	layout, err := paths.New(stateDir, "", "")
	if err != nil {
		return "", err
	}
	addr, err := os.ReadFile(layout.WebAddr())
	if errors.Is(err, fs.ErrNotExist) {
		return "", api.Errorf(api.KindUnavailable, "the daemon is not serving the web UI").
			WithHint("it is off (web_enabled = false or --no-web) or its port was taken; the daemon log says which")
	}
	if err != nil {
		return "", fmt.Errorf("read web UI address: %w", err)
	}
	token, err := os.ReadFile(layout.WebToken())
	if errors.Is(err, fs.ErrPermission) {
		return "", fmt.Errorf("read %s: permission denied; the token is readable by the daemon's user only: run sudo banger web", layout.WebToken())
	}
	if err != nil {
		return "", fmt.Errorf("read web UI token: %w", err)
	}
	u := url.URL{Scheme: "http", Host: strings.TrimSpace(string(addr)), Path: "/",
		RawQuery: url.Values{"token": {strings.TrimSpace(string(token))}}.Encode()}
	return u.String(), nil
}
