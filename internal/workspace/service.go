package workspace

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vm"
)

var (
	//go:embed guestscripts/push.sh
	pushScript string
	//go:embed guestscripts/export.sh
	exportScript string
	//go:embed guestscripts/status.sh
	statusScript string
)

// Exit statuses of the guest scripts.
const (
	exitExists   = 17
	exitNoSpace  = 28
	exitNoRepo   = 20
	exitNoBase   = 21
	exitDiverged = 22
)

// Runner runs argv in a guest (guest.Pool satisfies it).
type Runner interface {
	Exec(ctx context.Context, t guest.Target, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
}

// Guest is a running VM that can be reached over SSH.
type Guest struct {
	ID, Name string
	Target   guest.Target
}

// Resolver finds the running VM a reference names.
type Resolver func(ctx context.Context, ref string) (Guest, error)

// Service is the daemon side of workspaces: it satisfies
// daemon.WorkspaceService.
type Service struct {
	store   *store.Store
	resolve Resolver
	guests  Runner
	log     *slog.Logger
	now     func() time.Time

	mu   sync.Mutex
	busy map[string]bool // VM id -> a push or export runs
}

// NewService builds the daemon-side workspace service.
func NewService(st *store.Store, resolve Resolver, guests Runner, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: st, resolve: resolve, guests: guests, log: log, now: time.Now, busy: map[string]bool{}}
}

// VMResolver resolves running guests through the VM lifecycle service,
// which owns the "running and reachable" rule and the pinned host keys.
func VMResolver(vms interface {
	RunningGuest(ctx context.Context, ref string) (vm.Guest, error)
}) Resolver {
	return func(ctx context.Context, ref string) (Guest, error) {
		g, err := vms.RunningGuest(ctx, ref)
		if err != nil {
			return Guest{}, err
		}
		return Guest{ID: g.ID, Name: g.Name, Target: g.Target}, nil
	}
}

// lock marks the VM busy with a workspace operation.
func (s *Service) lock(g Guest) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[g.ID] {
		return nil, api.Errorf(api.KindBusy, "a workspace push or export is already running for VM %s", g.Name).
			WithHint("wait for it to finish")
	}
	s.busy[g.ID] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, g.ID)
		s.mu.Unlock()
	}, nil
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// checkGuestPath rejects paths the guest scripts should never see.
func checkGuestPath(p string) error {
	if strings.ContainsAny(p, "\x00\n") || strings.HasPrefix(p, "-") {
		return api.Errorf(api.KindInvalidInput, "guest path %q contains a newline, NUL or starts with '-'", p)
	}
	return nil
}

// openHostFile opens a file the CLI wrote, refusing symlinks and anything
// but a regular file.
func openHostFile(p, what string) (*os.File, os.FileInfo, error) {
	if !filepath.IsAbs(p) {
		return nil, nil, api.Errorf(api.KindInvalidInput, "%s %q must be an absolute path", what, p)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, api.Errorf(api.KindInvalidInput, "open %s: %v", what, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, api.Errorf(api.KindInvalidInput, "%s %s is not a regular file", what, p)
	}
	return f, fi, nil
}

// run runs argv in g and returns its exit status and output.
func (s *Service) run(ctx context.Context, g Guest, argv []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	var stderr bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code, err := s.guests.Exec(ctx, g.Target, argv, stdin, stdout, &stderr)
	if err != nil {
		if ctx.Err() != nil {
			return -1, "", api.Errorf(api.KindCancelled, "workspace operation on %s cancelled", g.Name)
		}
		return -1, "", api.Errorf(api.KindGuest, "run %s in VM %s: %v", argv[0], g.Name, err)
	}
	return code, strings.TrimSpace(stderr.String()), nil
}

// script runs one of the embedded scripts with args.
func (s *Service) script(ctx context.Context, g Guest, text string, args []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	argv := append([]string{"sh", "-c", text, "banger-workspace"}, args...)
	return s.run(ctx, g, argv, stdin, stdout)
}

func (s *Service) guestHome(ctx context.Context, g Guest) (string, error) {
	var out bytes.Buffer
	code, stderr, err := s.run(ctx, g, []string{"sh", "-c", `printf %s "$HOME"`}, nil, &out)
	if err != nil {
		return "", err
	}
	if code != 0 || !path.IsAbs(out.String()) {
		return "", api.Errorf(api.KindGuest, "find the home directory in VM %s: exit %d: %s", g.Name, code, stderr)
	}
	return out.String(), nil
}

// spaceNeeded is what the guest must have free for an archive of size
// bytes: the files, rounded up per block, plus slack for the directories
// and the filesystem's own bookkeeping.
func spaceNeeded(size int64) int64 {
	return size + size/10 + 16<<20
}

// Push unpacks the archive the CLI prepared into the guest and records
// the workspace.
func (s *Service) Push(ctx context.Context, p api.WorkspacePushParams) (api.WorkspaceStatus, error) {
	if !commitRE.MatchString(p.BaseCommit) {
		return api.WorkspaceStatus{}, api.Errorf(api.KindInvalidInput, "base commit %q is not a full commit id", p.BaseCommit)
	}
	if p.RepoName == "" || p.RepoName == "." || p.RepoName == ".." || strings.ContainsAny(p.RepoName, "/\x00\n") {
		return api.WorkspaceStatus{}, api.Errorf(api.KindInvalidInput, "repository name %q is not a usable directory name", p.RepoName)
	}
	if err := checkGuestPath(p.GuestPath); err != nil {
		return api.WorkspaceStatus{}, err
	}
	f, fi, err := openHostFile(p.ArchivePath, "workspace archive")
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	defer f.Close()
	g, err := s.resolve(ctx, p.VM)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	unlock, err := s.lock(g)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	defer unlock()

	home, err := s.guestHome(ctx, g)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	dest := p.GuestPath
	switch {
	case dest == "":
		dest = path.Join(home, "work", p.RepoName)
	case dest == "~":
		dest = home
	case strings.HasPrefix(dest, "~/"):
		dest = path.Join(home, dest[2:])
	case !path.IsAbs(dest):
		dest = path.Join(home, dest)
	}
	dest = path.Clean(dest)
	if dest == "/" || dest == home {
		return api.WorkspaceStatus{}, api.Errorf(api.KindInvalidInput, "guest path %s would replace a whole directory tree; pick a subdirectory", dest)
	}
	size := max(p.SizeBytes, fi.Size())
	needKiB := spaceNeeded(size) >> 10
	start := time.Now()
	code, stderr, err := s.script(ctx, g, pushScript,
		[]string{dest, strconv.FormatInt(needKiB, 10), p.BaseCommit, p.GitName, p.GitEmail}, f, io.Discard)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	switch {
	case code == exitExists:
		return api.WorkspaceStatus{}, api.Errorf(api.KindConflict, "%s already exists in VM %s and is not empty", dest, g.Name).
			WithHint("push to another --guest-path, or remove it first: banger exec " + g.Name + " -- rm -rf " + guest.ShellQuote(dest))
	case code == exitNoSpace || strings.Contains(stderr, "No space left on device"):
		return api.WorkspaceStatus{}, api.Errorf(api.KindUnavailable, "VM %s lacks disk space for the workspace (%d MiB needed): %s",
			g.Name, needKiB>>10, stderr).
			WithHint("grow its work disk: banger vm set " + g.Name + " --disk-size SIZE (applies at next start), or push with a smaller --depth")
	case code != 0:
		return api.WorkspaceStatus{}, api.Errorf(api.KindGuest, "unpack the workspace in VM %s: exit %d: %s", g.Name, code, stderr)
	}
	w := store.Workspace{VMID: g.ID, GuestPath: dest, HostRepo: p.HostRepo, RepoName: p.RepoName,
		BaseCommit: p.BaseCommit, Branch: p.Branch, PushedAt: s.now().UTC()}
	if err := s.store.PutWorkspace(ctx, &w); err != nil {
		return api.WorkspaceStatus{}, err
	}
	s.log.Info("workspace pushed", "vm", g.Name, "guest_path", dest, "bytes", fi.Size(),
		"seconds", time.Since(start).Seconds())
	return wire(g.Name, w), nil
}

func wire(name string, w store.Workspace) api.WorkspaceStatus {
	return api.WorkspaceStatus{VM: name, GuestPath: w.GuestPath, HostRepo: w.HostRepo, BaseCommit: w.BaseCommit,
		Branch: w.Branch, PushedAt: w.PushedAt, LastExport: w.LastExport, ExportedTo: w.ExportedTo, Changed: []string{}}
}

// record returns the VM's workspace record with a clear error when it has
// none.
func (s *Service) record(ctx context.Context, g Guest) (store.Workspace, error) {
	w, err := s.store.GetWorkspace(ctx, g.ID)
	if errors.Is(err, store.ErrNotFound) {
		return w, api.Errorf(api.KindNotFound, "VM %s has no workspace", g.Name).
			WithHint("push one with: banger workspace push " + g.Name + " [PATH]")
	}
	return w, err
}

// lostError explains a guest script's refusal about the workspace itself.
func lostError(g Guest, w store.Workspace, code int, stderr string) error {
	switch code {
	case exitNoRepo:
		return api.Errorf(api.KindNotFound, "VM %s lost its workspace: no git repository at %s", g.Name, w.GuestPath).
			WithHint("push it again: banger workspace push " + g.Name + " " + w.HostRepo)
	case exitNoBase:
		return api.Errorf(api.KindConflict, "the workspace in VM %s no longer has its base commit %.12s", g.Name, w.BaseCommit).
			WithHint("push it again: banger workspace push " + g.Name + " " + w.HostRepo)
	case exitDiverged:
		return api.Errorf(api.KindConflict, "the workspace in VM %s was rewound: HEAD no longer descends from the base commit %.12s", g.Name, w.BaseCommit).
			WithHint("rebase the guest's work onto " + w.BaseCommit + " in the VM, then export again")
	}
	return api.Errorf(api.KindGuest, "workspace in VM %s: exit %d: %s", g.Name, code, stderr)
}

// parseReport reads "HEAD\nCOUNT\nfile\0file\0..." from a guest script.
func parseReport(out string) (head string, commits int, files []string, err error) {
	parts := strings.SplitN(out, "\n", 3)
	if len(parts) < 2 {
		return "", 0, nil, fmt.Errorf("unexpected guest output %q", out)
	}
	head = parts[0]
	if commits, err = strconv.Atoi(parts[1]); err != nil {
		return "", 0, nil, fmt.Errorf("unexpected commit count %q", parts[1])
	}
	files = []string{}
	if len(parts) == 3 {
		files = splitZ(parts[2])
	}
	return head, commits, files, nil
}

// Export finalizes the guest workspace and writes a bundle of the commits
// since the base to the host path the CLI gave.
func (s *Service) Export(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	if !filepath.IsAbs(p.BundlePath) {
		return api.WorkspaceExportResult{}, api.Errorf(api.KindInvalidInput, "bundle path %q must be absolute", p.BundlePath)
	}
	dirInfo, err := os.Stat(filepath.Dir(p.BundlePath))
	if err != nil || !dirInfo.IsDir() {
		return api.WorkspaceExportResult{}, api.Errorf(api.KindInvalidInput, "the directory of bundle path %s does not exist", p.BundlePath)
	}
	g, err := s.resolve(ctx, p.VM)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	unlock, err := s.lock(g)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	defer unlock()
	w, err := s.record(ctx, g)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	msg := p.Message
	if msg == "" {
		msg = "banger: work from VM " + g.Name
	}
	var out bytes.Buffer
	code, stderr, err := s.script(ctx, g, exportScript, []string{w.GuestPath, w.BaseCommit, msg}, nil, &out)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	if code != 0 {
		return api.WorkspaceExportResult{}, lostError(g, w, code, stderr)
	}
	head, commits, files, err := parseReport(out.String())
	if err != nil {
		return api.WorkspaceExportResult{}, api.Errorf(api.KindGuest, "finalize the workspace in VM %s: %v", g.Name, err)
	}
	res := api.WorkspaceExportResult{BaseCommit: w.BaseCommit, HeadCommit: head, Commits: commits, Files: files}
	if commits == 0 {
		return res, nil // nothing to bring back; no bundle
	}
	if err := s.writeBundle(ctx, g, w, p.BundlePath, dirInfo); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	res.BundlePath = p.BundlePath
	if err := s.store.RecordWorkspaceExport(ctx, g.ID, p.Target, head, s.now().UTC()); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	return res, nil
}

// writeBundle streams `git bundle create - BASE..HEAD` from the guest
// into a new file at dst, owned like its directory so the invoking user
// can read and remove it.
func (s *Service) writeBundle(ctx context.Context, g Guest, w store.Workspace, dst string, dirInfo os.FileInfo) (err error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return api.Errorf(api.KindInvalidInput, "create bundle file: %v", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if st, ok := dirInfo.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
	code, stderr, err := s.run(ctx, g, []string{"git", "-C", w.GuestPath, "bundle", "create", "-q", "-", w.BaseCommit + "..HEAD"}, nil, f)
	if err != nil {
		return err
	}
	if code != 0 {
		return api.Errorf(api.KindGuest, "make a git bundle in VM %s: exit %d: %s", g.Name, code, stderr)
	}
	return nil
}

// Status reports the workspace record and, when the guest answers, what
// changed there since the base.
func (s *Service) Status(ctx context.Context, p api.VMRef) (api.WorkspaceStatus, error) {
	v, err := s.store.FindVM(ctx, p.VM)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	w, err := s.record(ctx, Guest{ID: v.ID, Name: v.Name})
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	st := wire(v.Name, w)
	g, err := s.resolve(ctx, p.VM)
	if err != nil {
		st.GuestError = err.Error()
		return st, nil
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, stderr, err := s.script(sctx, g, statusScript, []string{w.GuestPath, w.BaseCommit}, nil, &out)
	switch {
	case err != nil:
		st.GuestError = err.Error()
	case code != 0:
		st.GuestError = lostError(g, w, code, stderr).Error()
	default:
		head, commits, files, perr := parseReport(out.String())
		if perr != nil {
			st.GuestError = perr.Error()
			break
		}
		st.GuestHead, st.Commits, st.Changed = head, commits, files
	}
	return st, nil
}
