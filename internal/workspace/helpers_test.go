package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"github.com/banger-dev/banger/internal/testenv"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func requireGit(t *testing.T) {
	_, err := exec.LookPath("git")
	testenv.Require(t, err == nil, "git in PATH")
}

// gitT runs git in dir with a fixed identity and fails the test on error.
func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func write(t *testing.T, path string, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// messyRepo makes a repository with history and every kind of
// uncommitted state git distinguishes.
func messyRepo(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "messy repo")
	gitT(t, t.TempDir(), "init", "-q", "-b", "main", root)
	gitT(t, root, "config", "user.name", "Host User")
	gitT(t, root, "config", "user.email", "host@example.com")
	for i := range 5 {
		write(t, filepath.Join(root, "history.txt"), strings.Repeat("line\n", i+1), 0o644)
		gitT(t, root, "add", "history.txt")
		gitT(t, root, "commit", "-q", "-m", "history")
	}
	write(t, filepath.Join(root, ".gitignore"), "*.log\nbuild/\n", 0o644)
	write(t, filepath.Join(root, "tracked.txt"), "original\n", 0o644)
	write(t, filepath.Join(root, "both.txt"), "v1\n", 0o644)
	write(t, filepath.Join(root, "gone.txt"), "to be deleted\n", 0o644)
	write(t, filepath.Join(root, "staged-gone.txt"), "to be git rm'd\n", 0o644)
	write(t, filepath.Join(root, "dir/nested.txt"), "nested\n", 0o644)
	write(t, filepath.Join(root, "run.sh"), "#!/bin/sh\necho hi\n", 0o644)
	if err := os.Symlink("tracked.txt", filepath.Join(root, "link-in")); err != nil {
		t.Fatal(err)
	}
	gitT(t, root, "add", "-A")
	gitT(t, root, "commit", "-q", "-m", "base")

	// Staged: a modification, a new binary file, a deletion, a mode change.
	write(t, filepath.Join(root, "tracked.txt"), "staged change\n", 0o644)
	write(t, filepath.Join(root, "bin.dat"), string([]byte{0, 1, 2, 255, 254, 0, 10, 13, 0}), 0o644)
	gitT(t, root, "rm", "-q", "staged-gone.txt")
	if err := os.Chmod(filepath.Join(root, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	gitT(t, root, "add", "tracked.txt", "bin.dat", "run.sh")
	// Staged and then changed again: index and worktree differ.
	write(t, filepath.Join(root, "both.txt"), "v2 staged\n", 0o644)
	gitT(t, root, "add", "both.txt")
	write(t, filepath.Join(root, "both.txt"), "v3 unstaged\n", 0o644)
	// Unstaged: modification and deletion.
	write(t, filepath.Join(root, "dir/nested.txt"), "nested, unstaged\n", 0o644)
	if err := os.Remove(filepath.Join(root, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	// Untracked: a file, an executable, symlinks in and out of the repo.
	write(t, filepath.Join(root, "new dir/untracked.txt"), "untracked\n", 0o644)
	write(t, filepath.Join(root, "tool"), "#!/bin/sh\n", 0o750)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../outside", filepath.Join(root, "dir/link-up")); err != nil {
		t.Fatal(err)
	}
	// Ignored.
	write(t, filepath.Join(root, "debug.log"), "ignored\n", 0o644)
	write(t, filepath.Join(root, "build/out.o"), "ignored\n", 0o644)
	return root
}

// snapshot captures everything export must not change: every file's
// bytes, mode and link target (the .git dir's index and HEAD included),
// plus git status.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, ".git"+string(filepath.Separator)) {
			base := filepath.Base(rel)
			if d.IsDir() || (base != "index" && base != "HEAD") || filepath.Dir(rel) != ".git" {
				return nil
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := rel + " " + fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\nSTATUS\n" + gitT(t, root, "status", "--porcelain=v1", "-z", "--branch")
}

// treeState describes what git sees in a working tree: status, the
// staged diff, and every non-ignored file's type, mode and content.
func treeState(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(gitT(t, root, "status", "--porcelain=v1", "-z"))
	b.WriteString("\nSTAGED\n" + gitT(t, root, "diff", "--cached", "--binary", "--no-renames"))
	b.WriteString("\nUNSTAGED\n" + gitT(t, root, "diff", "--binary", "--no-renames"))
	b.WriteString("\nFILES\n")
	files := strings.Split(gitT(t, root, "ls-files", "-co", "--exclude-standard", "-z"), "\x00")
	sort.Strings(files)
	for _, f := range files {
		if f == "" {
			continue
		}
		p := filepath.Join(root, f)
		fi, err := os.Lstat(p)
		if err != nil {
			b.WriteString(f + " missing\n")
			continue
		}
		b.WriteString(f + " " + fi.Mode().String())
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			b.WriteString(" -> " + target)
		} else {
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			b.WriteString(" " + hex.EncodeToString(sum[:]))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "-x", "-p", "-f", archive, "-C", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("untar: %v: %s", err, out)
	}
}

var bg = context.Background()
