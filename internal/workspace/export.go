package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/api"
)

// DefaultBranch is the branch an export goes to unless another is given.
func DefaultBranch(vmName string) string { return "banger/" + vmName }

// CheckBranch validates name as a new branch of the repository at root.
// An existing branch is refused unless force is set; the branch checked
// out in any worktree is refused always, as moving it would change that
// worktree's HEAD.
func CheckBranch(ctx context.Context, root, name string, force bool) error {
	if _, err := git(ctx, root, "check-ref-format", "refs/heads/"+name); err != nil || strings.HasPrefix(name, "-") {
		return api.Errorf(api.KindInvalidInput, "%q is not a valid branch name", name)
	}
	if _, err := git(ctx, root, "rev-parse", "--verify", "-q", "refs/heads/"+name); err != nil {
		return nil // does not exist
	}
	if !force {
		return api.Errorf(api.KindConflict, "branch %s already exists in %s", name, root).
			WithHint("pass --force to overwrite it, or choose another name with --branch")
	}
	out, err := git(ctx, root, "worktree", "list", "--porcelain")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if l == "branch refs/heads/"+name {
			return api.Errorf(api.KindConflict, "branch %s is checked out in a worktree of %s; refusing to move it", name, root).
				WithHint("choose another name with --branch")
		}
	}
	return nil
}

// requireCommit fails clearly when the host repository lacks the base.
func requireCommit(ctx context.Context, root, commit string) error {
	if _, err := git(ctx, root, "cat-file", "-e", commit+"^{commit}"); err != nil {
		return api.Errorf(api.KindConflict, "%s no longer has the workspace's base commit %.12s", root, commit).
			WithHint("was it garbage-collected after a history rewrite? fetch it back (or push the workspace again)")
	}
	return nil
}

// FetchBundle brings the bundle's commits into refs/heads/<branch> of the
// repository at root. It never touches the working tree, the index or
// HEAD. Call CheckBranch first; force allows moving an existing branch.
func FetchBundle(ctx context.Context, root, bundle, base, branch string, force bool) error {
	if err := requireCommit(ctx, root, base); err != nil {
		return err
	}
	spec := "HEAD:refs/heads/" + branch
	if force {
		spec = "+" + spec
	}
	if _, err := git(ctx, root, "fetch", "-q", "--no-tags", "--no-write-fetch-head", bundle, spec); err != nil {
		return fmt.Errorf("fetch the guest's commits into %s: %w", branch, err)
	}
	return nil
}

// WritePatches writes the bundle's commits since base as a patch series
// (git format-patch --stdout) to out. The commits' objects are added to
// the repository's object store, but no ref, index or file changes.
// An existing out is refused unless force is set.
func WritePatches(ctx context.Context, root, bundle, base, head, out string, force bool) error {
	if _, err := os.Lstat(out); err == nil && !force {
		return api.Errorf(api.KindConflict, "%s already exists", out).WithHint("pass --force to overwrite it")
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := requireCommit(ctx, root, base); err != nil {
		return err
	}
	if _, err := git(ctx, root, "fetch", "-q", "--no-tags", "--no-write-fetch-head", bundle, "HEAD"); err != nil {
		return fmt.Errorf("read the guest's commits: %w", err)
	}
	patch, err := gitBytes(ctx, root, nil, "format-patch", "--stdout", "--no-color", "--binary", base+".."+head)
	if err != nil {
		return err
	}
	// Write next to out and rename, so a failure never leaves half a file.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".banger-patch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(patch); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
