package vm

// Capabilities: hooks that run each time a VM has booted and answers SSH,
// in a declared order, each with its own timeout. They are enabled per VM
// (vm create --cap NAME) and each outcome (ok, failed with a reason,
// skipped) is kept in the VM row and shown by vm show. A failing hook
// never fails the start: the VM is up, and the failure is reported.
//
// Hooks must be idempotent: they run at every start and on demand.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/guest"
)

// Capability names.
const (
	CapWorkDisk = "work-disk"
	CapAuthSync = "auth-sync"
)

// capabilityOrder is the declared run order. The work-disk check comes
// first: auth sync writes into the home directory on the work disk.
var capabilityOrder = []string{CapWorkDisk, CapAuthSync}

// Capability outcomes.
const (
	CapabilityOK      = "ok"
	CapabilityFailed  = "failed"
	CapabilitySkipped = "skipped"
	// CapabilityPending is shown for an enabled hook that has not run yet.
	CapabilityPending = "pending"
)

// ErrSkipped, wrapped in a hook's error, records the hook as skipped with
// the error's text as the reason.
var ErrSkipped = errors.New("skipped")

// Guest is a running VM reachable over the pooled SSH connection.
type Guest struct {
	ID, Name string
	User     string // the guest user the connection logs in as
	Target   guest.Target
}

// AuthMaterial is what auth sync places in a guest, kept per VM. None of
// it is secret (public keys, a name, an email); declared auth files are
// read from the host at sync time and never stored.
type AuthMaterial struct {
	AuthorizedKeys []string `json:"authorized_keys,omitempty"`
	GitName        string   `json:"git_name,omitempty"`
	GitEmail       string   `json:"git_email,omitempty"`
}

// Empty reports whether there is nothing to sync.
func (m AuthMaterial) Empty() bool {
	return len(m.AuthorizedKeys) == 0 && m.GitName == "" && m.GitEmail == ""
}

// CapabilityHook is one registered hook.
type CapabilityHook struct {
	Name        string
	Description string
	Timeout     time.Duration
	Run         func(ctx context.Context, g Guest, auth AuthMaterial) error
}

// capabilityRegistry holds the hooks of one Service.
type capabilityRegistry struct {
	mu    sync.Mutex
	hooks map[string]CapabilityHook
}

// capabilityState is the JSON kept in the VM row's capabilities column.
type capabilityState struct {
	Enabled []string               `json:"enabled,omitempty"`
	Auth    AuthMaterial           `json:"auth,omitzero"`
	Results []api.CapabilityStatus `json:"results,omitempty"`
}

func decodeCapabilities(b []byte) capabilityState {
	var st capabilityState
	if len(b) > 0 {
		_ = json.Unmarshal(b, &st) // a corrupt column reads as "nothing enabled"
	}
	return st
}

func (st capabilityState) encode() []byte {
	b, _ := json.Marshal(st)
	return b
}

// RegisterCapability adds (or replaces) a hook. Its name must be one of
// the declared names, so the run order stays declared in one place.
func (s *Service) RegisterCapability(h CapabilityHook) {
	if !slices.Contains(capabilityOrder, h.Name) || h.Run == nil {
		panic(fmt.Sprintf("vm: capability %q is not declared in capabilityOrder", h.Name))
	}
	if h.Timeout <= 0 {
		h.Timeout = 30 * time.Second
	}
	s.caps.mu.Lock()
	defer s.caps.mu.Unlock()
	if s.caps.hooks == nil {
		s.caps.hooks = map[string]CapabilityHook{}
	}
	s.caps.hooks[h.Name] = h
}

// hook returns the hook called name: a registered one, or a built-in.
func (s *Service) hook(name string) (CapabilityHook, bool) {
	s.caps.mu.Lock()
	h, ok := s.caps.hooks[name]
	s.caps.mu.Unlock()
	if ok {
		return h, true
	}
	if name == CapWorkDisk {
		return CapabilityHook{Name: CapWorkDisk, Description: "check the work disk is mounted as the guest user's home and writable",
			Timeout: workDiskWait + 20*time.Second, Run: s.checkWorkDisk}, true
	}
	return CapabilityHook{}, false
}

// Capabilities lists the known hooks in run order, for help texts.
func (s *Service) Capabilities() []CapabilityHook {
	var out []CapabilityHook
	for _, name := range capabilityOrder {
		if h, ok := s.hook(name); ok {
			out = append(out, h)
		}
	}
	return out
}

// initialCapabilities validates the capabilities a create asks for and
// returns the column value. Auth sync is enabled whenever the create
// carries auth material.
func (s *Service) initialCapabilities(p api.VMCreateParams) ([]byte, error) {
	st := capabilityState{Auth: AuthMaterial{AuthorizedKeys: p.AuthorizedKeys, GitName: p.GitName, GitEmail: p.GitEmail}}
	want := slices.Clone(p.Capabilities)
	if !st.Auth.Empty() {
		want = append(want, CapAuthSync)
	}
	for _, name := range want {
		if !slices.Contains(capabilityOrder, name) {
			return nil, api.Errorf(api.KindInvalidInput, "unknown capability %q (known: %s)", name, strings.Join(capabilityOrder, ", "))
		}
	}
	for _, name := range capabilityOrder { // keep the declared order, no duplicates
		if slices.Contains(want, name) {
			st.Enabled = append(st.Enabled, name)
		}
	}
	for _, k := range st.Auth.AuthorizedKeys {
		if _, err := guest.ParsePublic([]byte(k)); err != nil {
			return nil, api.Errorf(api.KindInvalidInput, "authorized key %.40q...: %v", k, err)
		}
	}
	return st.encode(), nil
}

// capabilityStatuses is the wire view: the last outcome of each enabled
// hook, or pending when it has not run since it was enabled.
func capabilityStatuses(b []byte) []api.CapabilityStatus {
	st := decodeCapabilities(b)
	var out []api.CapabilityStatus
	for _, name := range st.Enabled {
		status := api.CapabilityStatus{Name: name, Status: CapabilityPending}
		for _, r := range st.Results {
			if r.Name == name {
				status = r
			}
		}
		out = append(out, status)
	}
	return out
}

// runCapabilities runs the VM's enabled hooks in order and records each
// outcome. It never returns an error: a failing hook is reported, not
// fatal. Called from boot once the guest answers SSH.
func (s *Service) runCapabilities(ctx context.Context, id string, logf func(string, ...any)) {
	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return
	}
	st := decodeCapabilities(v.Capabilities)
	if len(st.Enabled) == 0 {
		return
	}
	r, err := load(v)
	if err != nil {
		return
	}
	t, err := s.target(r)
	g := Guest{ID: r.ID, Name: r.Name, User: s.Defaults.GuestUser, Target: t}
	st.Results = nil
	for _, name := range capabilityOrder {
		if !slices.Contains(st.Enabled, name) {
			continue
		}
		res := api.CapabilityStatus{Name: name, At: time.Now().UTC()}
		h, ok := s.hook(name)
		switch {
		case !ok:
			res.Status, res.Reason = CapabilitySkipped, "no hook registered in this daemon"
		case err != nil:
			res.Status, res.Reason = CapabilityFailed, err.Error()
		default:
			res.Status, res.Reason = runHook(ctx, h, g, st.Auth)
		}
		logf("capability %s: %s %s", name, res.Status, res.Reason)
		st.Results = append(st.Results, res)
	}
	s.saveCapabilities(ctx, id, func(cur *capabilityState) { cur.Results = st.Results })
}

// runHook runs one hook under its timeout and classifies the outcome.
func runHook(ctx context.Context, h CapabilityHook, g Guest, auth AuthMaterial) (status, reason string) {
	hctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	err := h.Run(hctx, g, auth)
	switch {
	case err == nil:
		return CapabilityOK, ""
	case errors.Is(err, ErrSkipped):
		return CapabilitySkipped, strings.TrimSuffix(strings.TrimSuffix(err.Error(), ErrSkipped.Error()), ": ")
	case hctx.Err() == context.DeadlineExceeded && ctx.Err() == nil:
		return CapabilityFailed, fmt.Sprintf("timed out after %s: %v", h.Timeout, err)
	default:
		return CapabilityFailed, err.Error()
	}
}

// saveCapabilities updates the capabilities column of VM id.
func (s *Service) saveCapabilities(ctx context.Context, id string, update func(*capabilityState)) error {
	v, err := s.Store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	st := decodeCapabilities(v.Capabilities)
	update(&st)
	v.Capabilities = st.encode()
	return s.Store.UpdateVM(ctx, &v)
}

// RunningGuest resolves ref to a running VM reachable over SSH, for
// services that work inside guests (sessions, workspaces).
func (s *Service) RunningGuest(ctx context.Context, ref string) (Guest, error) {
	r, t, err := s.running(ctx, ref)
	if err != nil {
		return Guest{}, err
	}
	return Guest{ID: r.ID, Name: r.Name, User: s.Defaults.GuestUser, Target: t}, nil
}

// UpdateAuth merges the non-empty fields of m into VM ref's stored auth
// material, enables auth sync for its next starts, and returns the
// running guest with the merged material. Used by vm sync-auth.
func (s *Service) UpdateAuth(ctx context.Context, ref string, m AuthMaterial) (Guest, AuthMaterial, error) {
	g, err := s.RunningGuest(ctx, ref)
	if err != nil {
		return Guest{}, AuthMaterial{}, err
	}
	for _, k := range m.AuthorizedKeys {
		if _, err := guest.ParsePublic([]byte(k)); err != nil {
			return Guest{}, AuthMaterial{}, api.Errorf(api.KindInvalidInput, "authorized key %.40q...: %v", k, err)
		}
	}
	var merged AuthMaterial
	err = s.saveCapabilities(ctx, g.ID, func(st *capabilityState) {
		if len(m.AuthorizedKeys) > 0 {
			st.Auth.AuthorizedKeys = m.AuthorizedKeys
		}
		if m.GitName != "" {
			st.Auth.GitName = m.GitName
		}
		if m.GitEmail != "" {
			st.Auth.GitEmail = m.GitEmail
		}
		if !slices.Contains(st.Enabled, CapAuthSync) {
			st.Enabled = append(st.Enabled, CapAuthSync)
			slices.SortFunc(st.Enabled, func(a, b string) int {
				return slices.Index(capabilityOrder, a) - slices.Index(capabilityOrder, b)
			})
		}
		merged = st.Auth
	})
	return g, merged, err
}

// RecordCapability stores the outcome of a hook run on demand (vm
// sync-auth), so vm show reflects the latest run.
func (s *Service) RecordCapability(ctx context.Context, id string, res api.CapabilityStatus) error {
	return s.saveCapabilities(ctx, id, func(st *capabilityState) {
		st.Results = slices.DeleteFunc(st.Results, func(r api.CapabilityStatus) bool { return r.Name == res.Name })
		st.Results = append(st.Results, res)
	})
}

// workDiskCheck is run as the guest user with the home directory as $1
// and a wait in seconds as $2. SSH can answer before systemd has mounted
// the work disk (its fstab entry is nofail), so the check waits for the
// mount first; hooks after it (auth sync) then write to the work disk,
// not to the directory it will cover. The home must be a mount point
// backed by the disk labelled banger-work, and writable. Constant text:
// the data are its arguments.
const workDiskCheck = `home=$1
i=0
until mountpoint -q "$home"; do
	i=$((i + 1))
	[ "$i" -le "$2" ] || { echo "$home is not a mount point (waited $2 s for the work disk)"; exit 1; }
	sleep 1
done
src=$(findmnt -n -o SOURCE --mountpoint "$home")
want=$(readlink -f /dev/disk/by-label/banger-work 2>/dev/null)
if [ -n "$want" ] && [ "$(readlink -f "$src")" != "$want" ]; then echo "$home is $src, not the work disk $want"; exit 1; fi
probe="$home/.banger-write-check.$$"
: >"$probe" 2>/dev/null || { echo "$home is not writable"; exit 1; }
rm -f "$probe"`

// workDiskWait is how long the check waits for the work disk mount.
const workDiskWait = 30 * time.Second

func (s *Service) checkWorkDisk(ctx context.Context, g Guest, _ AuthMaterial) error {
	home := "/home/" + g.User
	out, errOut, code, err := s.Guests.ExecOutput(ctx, g.Target, []string{"sh", "-c", workDiskCheck, "sh", home,
		strconv.Itoa(int(workDiskWait.Seconds()))}, nil)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s", strings.TrimSpace(out+" "+errOut))
	}
	return nil
}
