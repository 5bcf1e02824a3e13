package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vm"
)

// maxAuthFileBytes bounds one auth file: credentials, not data sets.
const maxAuthFileBytes = 1 << 20

// SyncAuth places the user's credentials in a running guest now, and
// remembers the given authorized keys and git identity for the VM's next
// starts (the auth-sync capability).
func (s *Service) SyncAuth(ctx context.Context, p api.VMSyncAuthParams) (api.VMSyncAuthResult, error) {
	g, m, err := s.vms.UpdateAuth(ctx, p.VM, vm.AuthMaterial{AuthorizedKeys: p.AuthorizedKeys, GitName: p.GitName, GitEmail: p.GitEmail})
	if err != nil {
		return api.VMSyncAuthResult{}, err
	}
	files, err := s.syncAuth(ctx, g, m)
	res := api.CapabilityStatus{Name: vm.CapAuthSync, Status: vm.CapabilityOK, At: time.Now().UTC()}
	if err != nil {
		res.Status, res.Reason = vm.CapabilityFailed, err.Error()
	}
	if rerr := s.vms.RecordCapability(ctx, g.ID, res); rerr != nil {
		s.log.Warn("recording auth sync outcome", "vm", g.Name, "err", rerr)
	}
	if err != nil {
		return api.VMSyncAuthResult{Files: files}, err
	}
	return api.VMSyncAuthResult{Files: files}, nil
}

// AuthCapability is the auth-sync start hook.
func (s *Service) AuthCapability() vm.CapabilityHook {
	return vm.CapabilityHook{
		Name:        vm.CapAuthSync,
		Description: "place your authorized key, git identity and the configured auth files in the guest",
		Timeout:     60 * time.Second,
		Run: func(ctx context.Context, g vm.Guest, m vm.AuthMaterial) error {
			if m.Empty() && len(s.authFiles) == 0 {
				return fmt.Errorf("nothing to sync (no keys, git identity or auth files): %w", vm.ErrSkipped)
			}
			_, err := s.syncAuth(ctx, g, m)
			return err
		},
	}
}

// syncAuth writes m and the configured auth files into the guest and
// returns the guest paths written. File contents travel on stdin only
// and are never logged.
func (s *Service) syncAuth(ctx context.Context, g vm.Guest, m vm.AuthMaterial) ([]string, error) {
	var written []string
	home := "/home/" + g.User
	step := func(what string, stdin []byte, args ...string) error {
		res, err := s.run(ctx, g, s.lay.invocation(scriptAuth, args...), stdin, nil)
		if err != nil {
			return err
		}
		if res.code != 0 {
			return guestErr(g, what, res)
		}
		return nil
	}
	if len(m.AuthorizedKeys) > 0 {
		keys := strings.Join(m.AuthorizedKeys, "\n") + "\n"
		if err := step("syncing authorized keys", []byte(keys), "keys"); err != nil {
			return written, err
		}
		written = append(written, home+"/.ssh/authorized_keys")
	}
	if m.GitName != "" || m.GitEmail != "" {
		if err := step("setting the git identity", nil, "git", m.GitName, m.GitEmail); err != nil {
			return written, err
		}
		written = append(written, home+"/.gitconfig")
	}
	var errs []error
	for _, f := range s.authFiles {
		data, err := readAuthFile(f.Src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := step("writing auth file "+f.Dst, data, "file", f.Dst); err != nil {
			errs = append(errs, err)
			continue
		}
		dst := f.Dst
		if !strings.HasPrefix(dst, "/") {
			dst = home + "/" + dst
		}
		written = append(written, dst)
	}
	return written, errors.Join(errs...)
}

// readAuthFile reads a host auth file; ~/ means the home of the user who
// invoked the daemon (SUDO_USER when run through sudo).
func readAuthFile(src string) ([]byte, error) {
	path := expandHome(src)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxAuthFileBytes {
		return nil, fmt.Errorf("auth file %s: not a regular file of at most %d bytes", src, maxAuthFileBytes)
	}
	return os.ReadFile(path)
}

func expandHome(p string) string {
	rest, ok := strings.CutPrefix(p, "~/")
	if !ok {
		return p
	}
	home, _ := os.UserHomeDir()
	if name := os.Getenv("SUDO_USER"); name != "" {
		if u, err := user.Lookup(name); err == nil {
			home = u.HomeDir
		}
	}
	return filepath.Join(home, rest)
}
