package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/fake"
)

// TestWebUIServedByDaemon runs the real daemon (fake VMM, no network)
// with the web UI on an ephemeral loopback port and fetches the dashboard
// and its JSON with the token the daemon wrote.
func TestWebUIServedByDaemon(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Socket = filepath.Join(dir, "s.sock")
	cfg.NoNetwork = true
	cfg.WebAddr = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	r := &running{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- Run(ctx, Options{Config: cfg, Version: "test", Ready: ready,
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			ExtraDrivers: map[string]vmm.Driver{"fake": fake.New()}})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("daemon exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready")
	}
	defer r.stop(t)

	layout, err := paths.New(dir, "", cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := os.ReadFile(layout.WebAddr())
	if err != nil {
		t.Fatalf("web UI address file: %v", err)
	}
	token, err := os.ReadFile(layout.WebToken())
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(layout.WebToken()); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode())
	}
	base := "http://" + strings.TrimSpace(string(addr))
	get := func(path string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "experimental") {
		t.Fatalf("dashboard: %d %.200s", resp.StatusCode, body)
	}
	resp, body = get("/api/state")
	var st struct {
		VMs    []any `json:"vms"`
		Images []any `json:"images"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.VMs == nil || st.Images == nil {
		t.Fatalf("state: %d %.300s", resp.StatusCode, body)
	}
	if resp, err := http.Get(base + "/api/state"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v %v", resp, err)
	}
}
