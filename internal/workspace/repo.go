// Package workspace copies a host git repository into a guest and brings
// the work done there back as a branch.
//
// It has two halves. The host half (repo.go, copy.go, export.go) runs in
// the CLI process as the invoking user: it inspects the repository, makes
// a shallow copy of HEAD with the uncommitted work applied, packs it as a
// tar archive, and later fetches the guest's bundle into a branch (or
// writes a patch series) without touching the working tree, the index or
// HEAD. The daemon half (service.go) only moves data between those host
// files and the guest over the pooled SSH connection, and keeps the
// workspace record in the store.
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/banger-dev/banger/internal/api"
)

// Repo is what Inspect learned about a host repository.
type Repo struct {
	Root     string // top of the working tree
	GitDir   string // absolute
	Name     string // base name of Root
	Head     string // commit id of HEAD
	Branch   string // short branch name; empty when HEAD is detached
	Upstream string // e.g. origin/main; empty when none
	// Paths relative to Root, as git prints them.
	Staged     []string // index differs from HEAD
	Unstaged   []string // working tree differs from the index (tracked files)
	Untracked  []string // untracked and not ignored
	Submodules []string // gitlink paths; their contents are not copied
}

// Dirty reports whether the repository has uncommitted work.
func (r Repo) Dirty() bool {
	return len(r.Staged)+len(r.Unstaged)+len(r.Untracked) > 0
}

// git runs git in dir and returns its stdout. Failures carry git's stderr.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := gitBytes(ctx, dir, nil, args...)
	return string(out), err
}

func gitBytes(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := execGit(ctx, dir, args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return stdout.Bytes(), &gitError{args: args, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.Bytes(), nil
}

// execGit prepares git in dir: never prompting, no pager, stable output.
func execGit(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_PAGER=cat", "LC_ALL=C")
	return cmd
}

// noFollow makes open fail on a symlink instead of following it.
const noFollow = syscall.O_NOFOLLOW

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	if e.stderr != "" {
		return fmt.Sprintf("git %s: %s", strings.Join(e.args, " "), e.stderr)
	}
	return fmt.Sprintf("git %s: %v", strings.Join(e.args, " "), e.err)
}

// exitCode returns git's exit status, or -1 when it did not run.
func exitCode(err error) int {
	var ge *gitError
	var ee *exec.ExitError
	if errors.As(err, &ge) && errors.As(ge.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// splitZ splits NUL-terminated output.
func splitZ(s string) []string {
	var out []string
	for _, p := range strings.Split(s, "\x00") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// inProgress maps git-dir entries to the operation they reveal.
var inProgress = []struct{ path, what string }{
	{"MERGE_HEAD", "a merge"},
	{"rebase-merge", "a rebase"},
	{"rebase-apply", "a rebase or git am"},
	{"CHERRY_PICK_HEAD", "a cherry-pick"},
	{"REVERT_HEAD", "a revert"},
	{"BISECT_LOG", "a bisect"},
}

// Inspect examines the repository containing path. It fails with a clear
// *api.Error when path is not in a git working tree, the repository is
// bare, has no commit yet, or is in the middle of a merge, rebase,
// cherry-pick, revert or bisect.
func Inspect(ctx context.Context, path string) (Repo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Repo{}, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s is not a directory", abs).
			WithHint("give the path of a git working tree")
	}
	bare, err := git(ctx, abs, "rev-parse", "--is-bare-repository")
	if err != nil {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s is not a git repository", abs).
			WithHint("run it inside a git working tree, or create one with: git init")
	}
	if strings.TrimSpace(bare) == "true" {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s is a bare git repository: it has no working tree to copy", abs).
			WithHint("clone it first (git clone " + abs + " DIR) and push the clone")
	}
	out, err := git(ctx, abs, "rev-parse", "--is-inside-work-tree", "--show-toplevel", "--absolute-git-dir")
	if err != nil {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s is not a git working tree: %v", abs, err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "true" {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s is not inside a git working tree (is it the .git directory?)", abs)
	}
	r := Repo{Root: lines[1], GitDir: lines[2], Name: filepath.Base(lines[1])}
	for _, p := range inProgress {
		if _, err := os.Lstat(filepath.Join(r.GitDir, p.path)); err == nil {
			return Repo{}, api.Errorf(api.KindConflict, "%s is in the middle of %s", r.Root, p.what).
				WithHint("finish or abort it (for example git merge --abort / git rebase --abort), then push")
		}
	}
	head, err := git(ctx, r.Root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
	if err != nil {
		return Repo{}, api.Errorf(api.KindInvalidInput, "%s has no commit yet", r.Root).
			WithHint("commit something first: a workspace starts from HEAD")
	}
	r.Head = strings.TrimSpace(head)
	if b, err := git(ctx, r.Root, "symbolic-ref", "--short", "-q", "HEAD"); err == nil {
		r.Branch = strings.TrimSpace(b)
	}
	if u, err := git(ctx, r.Root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"); err == nil {
		r.Upstream = strings.TrimSpace(u)
	}
	// --no-renames: a rename is a deletion plus an addition, both of which
	// the copy must reproduce.
	if out, err = git(ctx, r.Root, "diff", "--cached", "--no-renames", "--name-only", "-z", "HEAD"); err != nil {
		return Repo{}, err
	}
	r.Staged = splitZ(out)
	if out, err = git(ctx, r.Root, "diff", "--no-renames", "--name-only", "-z"); err != nil {
		return Repo{}, err
	}
	r.Unstaged = splitZ(out)
	if out, err = git(ctx, r.Root, "ls-files", "--others", "--exclude-standard", "-z"); err != nil {
		return Repo{}, err
	}
	r.Untracked = splitZ(out)
	if out, err = git(ctx, r.Root, "ls-files", "--stage", "-z"); err != nil {
		return Repo{}, err
	}
	for _, e := range splitZ(out) {
		// "<mode> <object> <stage>\t<path>"
		if strings.HasPrefix(e, "160000 ") {
			if i := strings.IndexByte(e, '\t'); i >= 0 {
				r.Submodules = append(r.Submodules, e[i+1:])
			}
		}
	}
	return r, nil
}

// Identity returns the git user.name and user.email configured for the
// repository (empty when unset).
func Identity(ctx context.Context, root string) (name, email string) {
	n, _ := git(ctx, root, "config", "user.name")
	e, _ := git(ctx, root, "config", "user.email")
	return strings.TrimSpace(n), strings.TrimSpace(e)
}
