package workspace

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestInspectMessyRepo(t *testing.T) {
	requireGit(t)
	root := messyRepo(t)
	r, err := Inspect(bg, filepath.Join(root, "dir"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Root != root || r.Name != "messy repo" || r.Branch != "main" || len(r.Head) != 40 || r.GitDir != filepath.Join(root, ".git") {
		t.Fatalf("Inspect = %+v", r)
	}
	want := func(name string, got, want []string) {
		t.Helper()
		slices.Sort(got)
		slices.Sort(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	want("staged", r.Staged, []string{"bin.dat", "both.txt", "run.sh", "staged-gone.txt", "tracked.txt"})
	want("unstaged", r.Unstaged, []string{"both.txt", "dir/nested.txt", "gone.txt"})
	want("untracked", r.Untracked, []string{"dir/link-up", "link-out", "new dir/untracked.txt", "tool"})
	if !r.Dirty() {
		t.Error("Dirty() = false")
	}
	if name, email := Identity(bg, root); name != "Host User" || email != "host@example.com" {
		t.Errorf("Identity = %q %q", name, email)
	}
}

func TestInspectUpstreamAndSubmodule(t *testing.T) {
	requireGit(t)
	up := filepath.Join(t.TempDir(), "up")
	gitT(t, t.TempDir(), "init", "-q", "-b", "main", up)
	write(t, filepath.Join(up, "f"), "x\n", 0o644)
	gitT(t, up, "add", "f")
	gitT(t, up, "commit", "-q", "-m", "one")
	clone := filepath.Join(t.TempDir(), "clone")
	gitT(t, t.TempDir(), "clone", "-q", up, clone)
	gitT(t, clone, "-c", "protocol.file.allow=always", "submodule", "add", "-q", up, "sub")
	r, err := Inspect(bg, clone)
	if err != nil {
		t.Fatal(err)
	}
	if r.Upstream != "origin/main" || !reflect.DeepEqual(r.Submodules, []string{"sub"}) {
		t.Fatalf("Inspect = %+v", r)
	}
	a, err := Prepare(bg, r, 1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	if len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], "submodule sub") {
		t.Fatalf("warnings = %q", a.Warnings)
	}
}

func TestInspectRefusals(t *testing.T) {
	requireGit(t)
	kindOf := func(err error) api.ErrorKind {
		if ae, ok := err.(*api.Error); ok {
			return ae.Kind()
		}
		return ""
	}
	notRepo := t.TempDir()
	if _, err := Inspect(bg, notRepo); kindOf(err) != api.KindInvalidInput || !strings.Contains(err.Error(), "not a git repository") {
		t.Errorf("plain dir: %v", err)
	}
	if _, err := Inspect(bg, filepath.Join(notRepo, "missing")); kindOf(err) != api.KindInvalidInput {
		t.Errorf("missing dir: %v", err)
	}
	bare := filepath.Join(t.TempDir(), "bare.git")
	gitT(t, t.TempDir(), "init", "-q", "--bare", bare)
	if _, err := Inspect(bg, bare); kindOf(err) != api.KindInvalidInput || !strings.Contains(err.Error(), "bare") {
		t.Errorf("bare: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	gitT(t, t.TempDir(), "init", "-q", empty)
	if _, err := Inspect(bg, empty); kindOf(err) != api.KindInvalidInput || !strings.Contains(err.Error(), "no commit") {
		t.Errorf("unborn: %v", err)
	}
	if _, err := Inspect(bg, filepath.Join(empty, ".git")); kindOf(err) != api.KindInvalidInput {
		t.Errorf(".git dir: %v", err)
	}

	// A merge stopped on a conflict.
	m := filepath.Join(t.TempDir(), "merge")
	gitT(t, t.TempDir(), "init", "-q", "-b", "main", m)
	write(t, filepath.Join(m, "f"), "base\n", 0o644)
	gitT(t, m, "add", "f")
	gitT(t, m, "commit", "-q", "-m", "base")
	gitT(t, m, "checkout", "-q", "-b", "other")
	write(t, filepath.Join(m, "f"), "other\n", 0o644)
	gitT(t, m, "commit", "-q", "-am", "other")
	gitT(t, m, "checkout", "-q", "main")
	write(t, filepath.Join(m, "f"), "main\n", 0o644)
	gitT(t, m, "commit", "-q", "-am", "main")
	cmdErr := func() error {
		_, err := git(bg, m, "-c", "user.name=x", "-c", "user.email=x@x", "merge", "other")
		return err
	}()
	if cmdErr == nil {
		t.Fatal("the merge did not conflict")
	}
	if _, err := Inspect(bg, m); kindOf(err) != api.KindConflict || !strings.Contains(err.Error(), "middle of a merge") {
		t.Errorf("mid-merge: %v", err)
	}
}

func TestPrepareCopiesWhatGitSees(t *testing.T) {
	requireGit(t)
	root := messyRepo(t)
	before := snapshot(t, root)
	r, err := Inspect(bg, root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Prepare(bg, r, 2, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	if entries, _ := os.ReadDir(a.Dir); len(entries) != 1 {
		t.Errorf("temp dir holds %d entries, want just the archive", len(entries))
	}
	out := filepath.Join(t.TempDir(), "guest")
	untar(t, a.Path, out)

	if got, want := treeState(t, out), treeState(t, root); got != want {
		t.Fatalf("the copy differs from the host as git sees it\n--- copy\n%s\n--- host\n%s", got, want)
	}
	if got := strings.TrimSpace(gitT(t, out, "rev-parse", "HEAD")); got != r.Head {
		t.Errorf("copy HEAD = %s, want %s", got, r.Head)
	}
	if got := strings.TrimSpace(gitT(t, out, "symbolic-ref", "--short", "HEAD")); got != "main" {
		t.Errorf("copy branch = %s", got)
	}
	if got := strings.TrimSpace(gitT(t, out, "rev-list", "--count", "HEAD")); got != "2" {
		t.Errorf("depth 2 copy has %s commits", got)
	}
	for _, ignored := range []string{"debug.log", "build"} {
		if _, err := os.Lstat(filepath.Join(out, ignored)); err == nil {
			t.Errorf("ignored %s was copied", ignored)
		}
	}
	// Links are links; the one pointing out of the repository was not followed.
	if target, err := os.Readlink(filepath.Join(out, "link-out")); err != nil || target != "/etc/passwd" {
		t.Errorf("link-out = %q, %v", target, err)
	}
	if remotes := strings.TrimSpace(gitT(t, out, "remote")); remotes != "" {
		t.Errorf("copy has remotes %q", remotes)
	}
	if snapshot(t, root) != before {
		t.Fatal("Prepare changed the host repository")
	}
	if a.Size <= 0 {
		t.Errorf("archive size %d", a.Size)
	}
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Dir); !os.IsNotExist(err) {
		t.Errorf("Remove left %s", a.Dir)
	}
}

func TestPrepareShallowStaysSmall(t *testing.T) {
	requireGit(t)
	root := filepath.Join(t.TempDir(), "long")
	gitT(t, t.TempDir(), "init", "-q", root)
	// 100 commits, each replacing 32 KiB of incompressible data.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		data := make([]byte, 32<<10)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(root, "blob"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		gitT(t, root, "add", "blob")
		gitT(t, root, "commit", "-q", "-m", "c")
	}
	r, err := Inspect(bg, root)
	if err != nil {
		t.Fatal(err)
	}
	size := func(depth int) int64 {
		a, err := Prepare(bg, r, depth, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer a.Remove()
		fi, err := os.Stat(a.Path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	shallow, full := size(1), size(0)
	t.Logf("archive: depth 1 %d KiB, full history %d KiB", shallow>>10, full>>10)
	if shallow > 256<<10 || full < 10*shallow {
		t.Fatalf("depth 1 archive %d bytes, full %d: the shallow copy is not small", shallow, full)
	}
}

func TestPrepareDetachedHead(t *testing.T) {
	requireGit(t)
	root := messyRepo(t)
	gitT(t, root, "stash", "-q", "-u")
	gitT(t, root, "clean", "-q", "-f", "-d", "-x")
	gitT(t, root, "checkout", "-q", "--detach", "HEAD~1")
	r, err := Inspect(bg, root)
	if err != nil || r.Branch != "" || r.Dirty() {
		t.Fatalf("Inspect = %+v, %v", r, err)
	}
	a, err := Prepare(bg, r, 1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	out := filepath.Join(t.TempDir(), "g")
	untar(t, a.Path, out)
	if got := strings.TrimSpace(gitT(t, out, "rev-parse", "HEAD")); got != r.Head {
		t.Fatalf("HEAD = %s want %s", got, r.Head)
	}
	if got := gitT(t, out, "status", "--porcelain"); got != "" {
		t.Fatalf("clean detached copy has status %q", got)
	}
}
