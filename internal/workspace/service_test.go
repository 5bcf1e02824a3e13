package workspace

import (
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/store"
)

// localGuest runs the guest side on this host, as if the guest's home were
// home: the same scripts, the same argv, no SSH.
type localGuest struct{ home string }

func (l localGuest) Exec(ctx context.Context, _ guest.Target, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+l.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

type fixture struct {
	svc  *Service
	home string
	vm   store.VM
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	requireGit(t)
	_, err := exec.LookPath("tar")
	testenv.Require(t, err == nil, "tar in PATH")
	st, err := store.Open(bg, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v := store.VM{Name: "dev", State: "running", IP: "10.0.0.2"}
	if err := st.CreateVM(bg, &v); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	resolve := func(ctx context.Context, ref string) (Guest, error) {
		got, err := st.FindVM(ctx, ref)
		if err != nil {
			return Guest{}, err
		}
		return Guest{ID: got.ID, Name: got.Name}, nil
	}
	return fixture{svc: NewService(st, resolve, localGuest{home: home}, nil), home: home, vm: v}
}

func kind(err error) api.ErrorKind {
	if ae, ok := err.(*api.Error); ok {
		return ae.Kind()
	}
	return ""
}

// push does what the CLI does: inspect, prepare, hand the archive over.
func (f fixture) push(t *testing.T, root string, p api.WorkspacePushParams) (api.WorkspaceStatus, error) {
	t.Helper()
	r, err := Inspect(bg, root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Prepare(bg, r, 1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	name, email := Identity(bg, r.Root)
	p.VM, p.ArchivePath, p.RepoName, p.HostRepo, p.BaseCommit, p.Branch = "dev", a.Path, r.Name, r.Root, r.Head, r.Branch
	p.GitName, p.GitEmail = name, email
	if p.SizeBytes == 0 {
		p.SizeBytes = a.Size
	}
	return f.svc.Push(bg, p)
}

func TestServicePushExportRoundTrip(t *testing.T) {
	f := newFixture(t)
	root := messyRepo(t)
	st, err := f.push(t, root, api.WorkspacePushParams{})
	if err != nil {
		t.Fatal(err)
	}
	guestRepo := filepath.Join(f.home, "work", "messy repo")
	if st.GuestPath != guestRepo || st.VM != "dev" || len(st.BaseCommit) != 40 {
		t.Fatalf("push status = %+v", st)
	}
	if got, want := treeState(t, guestRepo), treeState(t, root); got != want {
		t.Fatalf("guest copy differs from the host\n--- guest\n%s\n--- host\n%s", got, want)
	}
	if got := strings.TrimSpace(gitT(t, guestRepo, "config", "user.email")); got != "host@example.com" {
		t.Errorf("guest git identity = %q", got)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.home, "work")); len(entries) != 1 {
		t.Errorf("push left %d entries in ~/work, want only the repo", len(entries))
	}
	// A second push to the same place is refused and changes nothing.
	if _, err := f.push(t, root, api.WorkspacePushParams{}); kind(err) != api.KindConflict {
		t.Fatalf("second push: %v", err)
	}

	// The agent works: one commit, plus uncommitted and untracked changes.
	write(t, filepath.Join(guestRepo, "agent.txt"), "from the agent\n", 0o644)
	gitT(t, guestRepo, "add", "agent.txt")
	gitT(t, guestRepo, "commit", "-q", "-m", "agent commit")
	write(t, filepath.Join(guestRepo, "history.txt"), "rewritten by the agent\n", 0o644)
	write(t, filepath.Join(guestRepo, "agent-untracked.sh"), "#!/bin/sh\n", 0o755)

	st, err = f.svc.Status(bg, api.VMRef{VM: "dev"})
	if err != nil || st.GuestError != "" || st.Commits != 1 || !contains(st.Changed, "agent-untracked.sh") || !contains(st.Changed, "agent.txt") {
		t.Fatalf("status = %+v, %v", st, err)
	}

	// The host moves on meanwhile.
	write(t, filepath.Join(root, "host-later.txt"), "later\n", 0o644)
	gitT(t, root, "add", "host-later.txt")
	gitT(t, root, "commit", "-q", "-m", "host moved on")
	before := snapshot(t, root)

	dir := t.TempDir()
	bundle := filepath.Join(dir, "export.bundle")
	res, err := f.svc.Export(bg, api.WorkspaceExportParams{VM: "dev", BundlePath: bundle, Message: "finalize", Target: "banger/dev"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commits != 2 || res.BundlePath != bundle || res.BaseCommit != st.BaseCommit {
		t.Fatalf("export = %+v", res)
	}
	if got := strings.TrimSpace(gitT(t, guestRepo, "status", "--porcelain")); got != "" {
		t.Fatalf("guest not clean after finalize: %q", got)
	}
	if msg := strings.TrimSpace(gitT(t, guestRepo, "log", "-1", "--format=%s")); msg != "finalize" {
		t.Errorf("finalize commit message = %q", msg)
	}
	branch := DefaultBranch("dev")
	if err := CheckBranch(bg, root, branch, false); err != nil {
		t.Fatal(err)
	}
	if err := FetchBundle(bg, root, bundle, res.BaseCommit, branch, false); err != nil {
		t.Fatal(err)
	}
	// The branch is exactly the guest's HEAD: same commit, so the same tree
	// and the same diff against the base.
	if got := strings.TrimSpace(gitT(t, root, "rev-parse", branch)); got != res.HeadCommit {
		t.Fatalf("branch at %s, guest HEAD %s", got, res.HeadCommit)
	}
	if a, b := gitT(t, root, "diff", "--binary", res.BaseCommit, branch), gitT(t, guestRepo, "diff", "--binary", res.BaseCommit, "HEAD"); a != b {
		t.Fatalf("host branch diff differs from the guest's change")
	}
	if snapshot(t, root) != before {
		t.Fatal("export changed the host's working tree, index, HEAD or status")
	}
	// The branch now exists: refused without force, allowed with it.
	if err := CheckBranch(bg, root, branch, false); kind(err) != api.KindConflict {
		t.Fatalf("existing branch: %v", err)
	}
	if err := CheckBranch(bg, root, "main", true); kind(err) != api.KindConflict {
		t.Fatalf("forcing the checked-out branch: %v", err)
	}
	if err := CheckBranch(bg, root, "bad..name", false); kind(err) != api.KindInvalidInput {
		t.Fatalf("bad name: %v", err)
	}
	// A patch series of the same commits.
	patch := filepath.Join(t.TempDir(), "work.patch")
	if err := WritePatches(bg, root, bundle, res.BaseCommit, res.HeadCommit, patch, false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(patch)
	if n := strings.Count(string(b), "\nSubject: [PATCH "); n != 2 {
		t.Fatalf("patch has %d patches:\n%s", n, b)
	}
	if err := WritePatches(bg, root, bundle, res.BaseCommit, res.HeadCommit, patch, false); kind(err) != api.KindConflict {
		t.Fatalf("overwriting a patch file: %v", err)
	}
	if snapshot(t, root) != before {
		t.Fatal("writing patches changed the host repository")
	}
	st, _ = f.svc.Status(bg, api.VMRef{VM: "dev"})
	if st.LastExport.IsZero() || st.ExportedTo != "banger/dev" || st.Commits != 2 || len(st.Changed) == 0 {
		t.Fatalf("status after export = %+v", st)
	}

	// Nothing new: an export succeeds without a bundle.
	res, err = f.svc.Export(bg, api.WorkspaceExportParams{VM: "dev", BundlePath: filepath.Join(dir, "again.bundle")})
	if err != nil || res.Commits != 2 {
		t.Fatalf("re-export = %+v, %v", res, err)
	}

	// The guest loses the workspace: a clear error, nothing written.
	if err := os.RemoveAll(guestRepo); err != nil {
		t.Fatal(err)
	}
	lost := filepath.Join(dir, "lost.bundle")
	_, err = f.svc.Export(bg, api.WorkspaceExportParams{VM: "dev", BundlePath: lost})
	if kind(err) != api.KindNotFound || !strings.Contains(err.Error(), "lost its workspace") {
		t.Fatalf("export of a lost workspace: %v", err)
	}
	if _, err := os.Lstat(lost); !os.IsNotExist(err) {
		t.Fatal("a failed export left a bundle file")
	}
	if st, err := f.svc.Status(bg, api.VMRef{VM: "dev"}); err != nil || !strings.Contains(st.GuestError, "lost its workspace") {
		t.Fatalf("status of a lost workspace = %+v, %v", st, err)
	}
}

func TestServicePushRefusals(t *testing.T) {
	f := newFixture(t)
	root := messyRepo(t)
	// Not enough space in the guest: refused before anything is unpacked.
	_, err := f.push(t, root, api.WorkspacePushParams{SizeBytes: 1 << 55})
	if kind(err) != api.KindUnavailable || !strings.Contains(err.Error(), "disk space") {
		t.Fatalf("push without space: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.home, "work")); len(entries) != 0 {
		t.Fatalf("a refused push left %d entries", len(entries))
	}
	if _, err := f.svc.Status(bg, api.VMRef{VM: "dev"}); kind(err) != api.KindNotFound {
		t.Fatalf("status without a workspace: %v", err)
	}
	if _, err := f.svc.Export(bg, api.WorkspaceExportParams{VM: "dev", BundlePath: filepath.Join(t.TempDir(), "b")}); kind(err) != api.KindNotFound {
		t.Fatalf("export without a workspace: %v", err)
	}
	for _, p := range []api.WorkspacePushParams{
		{VM: "dev", ArchivePath: "relative.tar", RepoName: "r", BaseCommit: strings.Repeat("a", 40)},
		{VM: "dev", ArchivePath: "/nonexistent.tar", RepoName: "r", BaseCommit: "HEAD"},
		{VM: "dev", ArchivePath: "/nonexistent.tar", RepoName: "../x", BaseCommit: strings.Repeat("a", 40)},
		{VM: "dev", ArchivePath: "/nonexistent.tar", RepoName: "r", BaseCommit: strings.Repeat("a", 40), GuestPath: "-rf"},
	} {
		if _, err := f.svc.Push(bg, p); kind(err) != api.KindInvalidInput {
			t.Errorf("push %+v: %v", p, err)
		}
	}
	// A custom relative guest path lands under the home directory.
	st, err := f.push(t, root, api.WorkspacePushParams{GuestPath: "src/app"})
	if err != nil || st.GuestPath != filepath.Join(f.home, "src/app") {
		t.Fatalf("push to src/app = %+v, %v", st, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
