package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultDepth is how many commits of history a copy carries by default.
const DefaultDepth = 1

// Archive is a prepared copy of a repository, packed for the guest.
type Archive struct {
	Dir  string // private temp dir holding everything below; Remove deletes it
	Path string // the tar archive
	// Size is the sum of the archived files' sizes: what the guest needs
	// on disk, before filesystem overhead.
	Size int64
	// Warnings lists what was left out (nested repositories, special
	// files, submodule contents).
	Warnings []string
}

// Remove deletes the archive and its temp dir.
func (a *Archive) Remove() error {
	if a == nil || a.Dir == "" {
		return nil
	}
	return os.RemoveAll(a.Dir)
}

// Prepare makes a copy of r: the last depth commits up to HEAD (all of
// history when depth <= 0), HEAD's branch, the index as staged on the
// host, and the working tree as the host has it for every staged,
// unstaged and untracked-but-not-ignored path. Ignored files are left
// out; symlinks are copied as links and never followed. The copy is
// packed as a tar in a new private temp dir under tmpDir ("" for the
// default). The host repository is only read.
func Prepare(ctx context.Context, r Repo, depth int, tmpDir string) (*Archive, error) {
	dir, err := os.MkdirTemp(tmpDir, "banger-workspace-")
	if err != nil {
		return nil, fmt.Errorf("create a temp dir for the workspace copy: %w", err)
	}
	a := &Archive{Dir: dir, Path: filepath.Join(dir, "workspace.tar")}
	ok := false
	defer func() {
		if !ok {
			a.Remove()
		}
	}()
	copyRoot := filepath.Join(dir, "repo")
	if err := makeCopy(ctx, r, depth, copyRoot, a); err != nil {
		return nil, err
	}
	size, err := writeTar(ctx, copyRoot, a.Path)
	if err != nil {
		return nil, err
	}
	a.Size = size
	// The tar is all the guest needs; drop the checkout to halve the space.
	if err := os.RemoveAll(copyRoot); err != nil {
		return nil, err
	}
	ok = true
	return a, nil
}

func makeCopy(ctx context.Context, r Repo, depth int, copyRoot string, a *Archive) error {
	// --template= keeps sample hooks out of the copy.
	if _, err := git(ctx, filepath.Dir(copyRoot), "init", "-q", "--template=", copyRoot); err != nil {
		return err
	}
	fetch := []string{"fetch", "-q", "--no-tags", "--no-write-fetch-head"}
	if depth > 0 {
		fetch = append(fetch, fmt.Sprintf("--depth=%d", depth))
	}
	fetch = append(fetch, r.Root, r.Head+":refs/banger/base")
	if _, err := git(ctx, copyRoot, fetch...); err != nil {
		return fmt.Errorf("copy history of %s: %w", r.Root, err)
	}
	if _, err := git(ctx, copyRoot, "update-ref", "-d", "refs/banger/base"); err != nil {
		return err
	}
	if r.Branch != "" {
		if _, err := git(ctx, copyRoot, "update-ref", "refs/heads/"+r.Branch, r.Head); err != nil {
			return err
		}
		if _, err := git(ctx, copyRoot, "symbolic-ref", "HEAD", "refs/heads/"+r.Branch); err != nil {
			return err
		}
	} else if _, err := git(ctx, copyRoot, "update-ref", "--no-deref", "HEAD", r.Head); err != nil {
		return err
	}
	if _, err := git(ctx, copyRoot, "reset", "-q", "--hard", "HEAD"); err != nil {
		return err
	}

	// The index: the host's staged changes, as a binary patch applied to
	// the copy's index only. Plumbing diff ignores diff.* UI settings.
	staged, err := gitBytes(ctx, r.Root, nil, "diff-index", "--cached", "-p", "--binary", "--no-renames", "--no-color", "HEAD", "--")
	if err != nil {
		return fmt.Errorf("read staged changes of %s: %w", r.Root, err)
	}
	if len(staged) > 0 {
		cmd := []string{"apply", "--cached", "--whitespace=nowarn", "-"}
		if err := gitStdin(ctx, copyRoot, staged, cmd...); err != nil {
			return fmt.Errorf("apply staged changes to the copy: %w", err)
		}
	}

	// The working tree: every path git reports as changed or untracked is
	// made identical to the host's; every other path equals HEAD already.
	skip := map[string]bool{}
	for _, s := range r.Submodules {
		skip[s] = true
		a.Warnings = append(a.Warnings, "submodule "+s+": only its commit is recorded, its files are not copied")
	}
	seen := map[string]bool{}
	for _, list := range [][]string{r.Staged, r.Unstaged, r.Untracked} {
		for _, rel := range list {
			if seen[rel] || skip[rel] {
				continue
			}
			seen[rel] = true
			if err := ctx.Err(); err != nil {
				return err
			}
			warn, err := syncPath(r.Root, copyRoot, rel)
			if err != nil {
				return err
			}
			if warn != "" {
				a.Warnings = append(a.Warnings, warn)
			}
		}
	}
	return nil
}

func gitStdin(ctx context.Context, dir string, stdin []byte, args ...string) error {
	cmd := execGit(ctx, dir, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return &gitError{args: args, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return nil
}

// safeRel rejects paths that could leave the root.
func safeRel(rel string) error {
	if rel == "" || filepath.IsAbs(rel) || !filepath.IsLocal(rel) || strings.HasPrefix(rel, ".git/") || rel == ".git" {
		return fmt.Errorf("refusing unexpected path %q from git", rel)
	}
	return nil
}

// syncPath makes copyRoot/rel what hostRoot/rel is: a regular file with
// the same bytes and mode, a symlink with the same target, or nothing.
// It never follows a symlink, on either side.
func syncPath(hostRoot, copyRoot, rel string) (warning string, err error) {
	rel = filepath.FromSlash(strings.TrimSuffix(rel, "/"))
	if err := safeRel(rel); err != nil {
		return "", err
	}
	// A path below a host symlink is not the repository's (git never
	// reports one; a race could).
	if under, err := belowSymlink(hostRoot, rel); err != nil {
		return "", err
	} else if under {
		return "skipped " + rel + ": a parent directory is a symlink", nil
	}
	hp, cp := filepath.Join(hostRoot, rel), filepath.Join(copyRoot, rel)
	fi, err := os.Lstat(hp)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.RemoveAll(cp); err != nil {
			return "", err
		}
		return "", nil
	}
	if err != nil {
		return "", err
	}
	switch {
	case fi.Mode().IsRegular(), fi.Mode()&fs.ModeSymlink != 0:
	case fi.IsDir():
		// ls-files --others lists a nested repository as "dir/".
		return "skipped " + rel + "/: a nested git repository", nil
	default:
		return "skipped " + rel + ": not a regular file or symlink", nil
	}
	if err := ensureDirs(copyRoot, filepath.Dir(rel)); err != nil {
		return "", err
	}
	if err := os.RemoveAll(cp); err != nil {
		return "", err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(hp)
		if err != nil {
			return "", err
		}
		return "", os.Symlink(target, cp)
	}
	return "", copyFile(hp, cp, fi.Mode().Perm())
}

func belowSymlink(root, rel string) (bool, error) {
	dir := filepath.Dir(rel)
	if dir == "." {
		return false, nil
	}
	cur := root
	for _, part := range strings.Split(dir, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !fi.IsDir() {
			return true, nil
		}
	}
	return false, nil
}

// ensureDirs makes every component of dir below root a real directory,
// replacing a file or symlink the copy had there.
func ensureDirs(root, dir string) error {
	if dir == "." {
		return nil
	}
	cur := root
	for _, part := range strings.Split(dir, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			if err := os.Remove(cur); err != nil {
				return err
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Mkdir(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.OpenFile(src, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, perm) // the umask must not change the mode
}

// writeTar packs root into a tar at path, entries relative to root.
// Symlinks are stored as links. It returns the total size of the files.
func writeTar(ctx context.Context, root, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, in)
		in.Close()
		total += n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pack the workspace copy: %w", err)
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	return total, f.Close()
}
