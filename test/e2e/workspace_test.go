package e2e

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// wsTreeScript prints what git sees in the working tree at $1: status,
// staged and unstaged diffs, and every non-ignored file's mode and content
// hash (or link target). It runs unchanged on the host and in the guest,
// so the two outputs compare byte for byte.
const wsTreeScript = `set -eu
export LC_ALL=C
cd "$1"
git status --porcelain=v1 -z
echo
echo STAGED
git diff --cached --binary --no-renames
echo UNSTAGED
git diff --binary --no-renames
echo FILES
git ls-files -co --exclude-standard | sort | while IFS= read -r f; do
	if [ -L "$f" ]; then
		echo "$f link $(readlink "$f")"
	elif [ -e "$f" ]; then
		echo "$f $(stat -c %a "$f") $(sha256sum < "$f" | cut -c1-64)"
	else
		echo "$f missing"
	fi
done
`

// wsSnapshotScript captures everything an export must not change in the
// host repository at $1: every file (hash, mode, link target) outside
// .git, plus .git/HEAD, .git/index and git status.
const wsSnapshotScript = `set -eu
export LC_ALL=C
cd "$1"
find . -path ./.git -prune -o -print | sort | while IFS= read -r f; do
	if [ -L "$f" ]; then echo "$f link $(readlink "$f")"
	elif [ -f "$f" ]; then echo "$f $(stat -c %a "$f") $(sha256sum < "$f" | cut -c1-64)"
	else echo "$f $(stat -c %F "$f")"; fi
done
sha256sum .git/HEAD .git/index
git status --porcelain=v1 -z --branch
`

func wsHostSh(t *testing.T, script string, args ...string) string {
	t.Helper()
	out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	return string(out)
}

func wsGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Host", "GIT_AUTHOR_EMAIL=host@example.com",
		"GIT_COMMITTER_NAME=Host", "GIT_COMMITTER_EMAIL=host@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func wsWriteFile(t *testing.T, path, data string, mode os.FileMode) {
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

// messyRepo has history plus staged, unstaged, untracked, ignored,
// executable, symlinked and binary files.
func wsMessyRepo(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "messy")
	wsGit(t, filepath.Dir(root), "init", "-q", "-b", "main", root)
	wsGit(t, root, "config", "user.name", "Host User")
	wsGit(t, root, "config", "user.email", "host@example.com")
	wsWriteFile(t, filepath.Join(root, ".gitignore"), "*.log\nbuild/\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "tracked.txt"), "original\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "both.txt"), "v1\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "gone.txt"), "bye\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "dir/nested.txt"), "nested\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "run.sh"), "#!/bin/sh\necho hi\n", 0o644)
	if err := os.Symlink("tracked.txt", filepath.Join(root, "link-in")); err != nil {
		t.Fatal(err)
	}
	wsGit(t, root, "add", "-A")
	wsGit(t, root, "commit", "-q", "-m", "base")
	wsWriteFile(t, filepath.Join(root, "tracked.txt"), "staged change\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "bin.dat"), string([]byte{0, 1, 2, 255, 254, 0, 10, 13, 0}), 0o644)
	if err := os.Chmod(filepath.Join(root, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	wsGit(t, root, "add", "tracked.txt", "bin.dat", "run.sh")
	wsWriteFile(t, filepath.Join(root, "both.txt"), "v2 staged\n", 0o644)
	wsGit(t, root, "add", "both.txt")
	wsWriteFile(t, filepath.Join(root, "both.txt"), "v3 unstaged\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "dir/nested.txt"), "nested, unstaged\n", 0o644)
	if err := os.Remove(filepath.Join(root, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	wsWriteFile(t, filepath.Join(root, "new dir/untracked.txt"), "untracked\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "tool"), "#!/bin/sh\n", 0o750)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "link-out")); err != nil {
		t.Fatal(err)
	}
	wsWriteFile(t, filepath.Join(root, "debug.log"), "ignored\n", 0o644)
	wsWriteFile(t, filepath.Join(root, "build/out.o"), "ignored\n", 0o644)
	return root
}

// guestSh runs a constant script in the VM with data as arguments.
func wsGuestSh(t *testing.T, vm, script string, args ...string) string {
	t.Helper()
	r := must(t, append([]string{"exec", vm, "--", "sh", "-c", script, "sh"}, args...)...)
	return r.stdout
}

func wsStatus(t *testing.T, vm string) api.WorkspaceStatus {
	t.Helper()
	var st api.WorkspaceStatus
	if err := json.Unmarshal([]byte(must(t, "workspace", "status", vm, "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func wsExpectExit(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	r := run(t, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Fatalf("banger %s: exit %d (want %d), stderr %q (want %q)", strings.Join(args, " "), r.code, code, r.stderr, want)
	}
}

// TestWorkspaces: a host repository into two guests and the work back as
// branches. Boots two VMs (one of them through vm create --workspace).
func TestWorkspaces(t *testing.T) {
	requireE2E(t)
	repo := wsMessyRepo(t)
	head := wsGit(t, repo, "rev-parse", "HEAD")
	hostBefore := wsHostSh(t, wsSnapshotScript, repo)
	hostTree := wsHostSh(t, wsTreeScript, repo)

	names := []string{"wsa", "wsb"}
	t.Cleanup(func() {
		for _, n := range names {
			run(t, "vm", "rm", "--force", n)
		}
	})
	// One boot at a time: parallel TCG boots on a busy 2-core host starve
	// each other's udev and miss systemd's device timeouts.
	start := time.Now()
	must(t, "vm", "create", "wsa", "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "256", "--workspace", repo)
	t.Logf("wsa created with its workspace in %s", time.Since(start).Round(time.Second))
	must(t, "vm", "create", "wsb", "--vmm", env.vmm, "--cpus", "1", "--memory", "512", "--disk-size", "256")

	pushStart := time.Now()
	must(t, "workspace", "push", "wsb", repo)
	t.Logf("push of the small repository: %s", time.Since(pushStart).Round(10*time.Millisecond))

	var guestPath string
	t.Run("ArrivesAsGitSeesIt", func(t *testing.T) {
		for _, vm := range names {
			st := wsStatus(t, vm)
			if st.BaseCommit != head || st.GuestPath != "/home/banger/work/messy" || st.HostRepo != repo || st.Branch != "main" {
				t.Fatalf("%s status = %+v", vm, st)
			}
			guestPath = st.GuestPath
			if got := wsGuestSh(t, vm, wsTreeScript, st.GuestPath); got != hostTree {
				t.Fatalf("%s: the guest's copy differs from the host\n--- guest\n%s\n--- host\n%s", vm, got, hostTree)
			}
			out := wsGuestSh(t, vm, `cd "$1"; for f in debug.log build; do [ -e "$f" ] && echo "$f present"; done; git config user.email; git rev-parse HEAD; id -un; stat -c %U .`, st.GuestPath)
			if out != "host@example.com\n"+head+"\nbanger\nbanger\n" {
				t.Fatalf("%s: ignored files, identity, HEAD or ownership wrong:\n%s", vm, out)
			}
		}
		if wsHostSh(t, wsSnapshotScript, repo) != hostBefore {
			t.Fatal("push changed the host repository")
		}
	})
	if t.Failed() {
		return
	}

	// The agents work: a commit and uncommitted changes in each guest,
	// different in each.
	const wsAgentScript = `set -e; cd "$1"
printf '%s\n' "$2" > "agent-$2.txt"
git add "agent-$2.txt"
git commit -q -m "agent commit in $2"
printf 'edit from %s\n' "$2" >> tracked.txt
printf 'new untracked\n' > "untracked-$2.txt"
rm -f gone-in-guest.txt run.sh`
	for _, vm := range names {
		wsGuestSh(t, vm, wsAgentScript, guestPath, vm)
	}
	// The host moves on meanwhile.
	wsWriteFile(t, filepath.Join(repo, "later.txt"), "host moved on\n", 0o644)
	wsGit(t, repo, "add", "later.txt")
	wsGit(t, repo, "commit", "-q", "-m", "host later", "--", "later.txt")
	hostBefore = wsHostSh(t, wsSnapshotScript, repo)

	t.Run("ExportsTwoBranches", func(t *testing.T) {
		for _, vm := range names {
			st := wsStatus(t, vm)
			if st.Commits != 1 || len(st.Changed) == 0 {
				t.Fatalf("%s status before export = %+v", vm, st)
			}
			exportStart := time.Now()
			var out struct {
				api.WorkspaceExportResult
				Branch string `json:"branch"`
			}
			if err := json.Unmarshal([]byte(must(t, "workspace", "export", vm, "--message", "finalize "+vm, "--json").stdout), &out); err != nil {
				t.Fatal(err)
			}
			t.Logf("export of %s: %s", vm, time.Since(exportStart).Round(10*time.Millisecond))
			branch := "banger/" + vm
			if out.Branch != branch || out.Commits != 2 || out.BaseCommit != head {
				t.Fatalf("%s export = %+v", vm, out)
			}
			if got := wsGit(t, repo, "rev-parse", branch); got != out.HeadCommit {
				t.Fatalf("%s: branch at %s, guest HEAD %s", vm, got, out.HeadCommit)
			}
			// The branch's change against the base is exactly the guest's.
			guestDiff := wsGuestSh(t, vm, `cd "$1" && git diff --binary "$2" HEAD`, guestPath, head)
			if hostDiff := wsGit(t, repo, "diff", "--binary", head, branch) + "\n"; hostDiff != guestDiff {
				t.Fatalf("%s: branch diff differs from the guest's\n--- host\n%s\n--- guest\n%s", vm, hostDiff, guestDiff)
			}
			if msg := wsGit(t, repo, "log", "-1", "--format=%s", branch); msg != "finalize "+vm {
				t.Fatalf("%s: finalize commit message %q", vm, msg)
			}
			if st := wsStatus(t, vm); st.LastExport.IsZero() || st.ExportedTo != branch {
				t.Fatalf("%s status after export = %+v", vm, st)
			}
		}
		if a, b := wsGit(t, repo, "rev-parse", "banger/wsa"), wsGit(t, repo, "rev-parse", "banger/wsb"); a == b {
			t.Fatal("two VMs exported the same commit")
		}
		if wsHostSh(t, wsSnapshotScript, repo) != hostBefore {
			t.Fatal("export changed the host's working tree, index, HEAD or status")
		}
	})

	t.Run("ExistingBranchAndPatch", func(t *testing.T) {
		wsaHead := wsGit(t, repo, "rev-parse", "banger/wsa")
		wsExpectExit(t, 4, "already exists", "workspace", "export", "wsa")
		if wsGit(t, repo, "rev-parse", "banger/wsa") != wsaHead {
			t.Fatal("a refused export moved the branch")
		}
		wsGuestSh(t, "wsa", `cd "$1" && echo more > more.txt`, guestPath)
		must(t, "workspace", "export", "wsa", "--force")
		if wsGit(t, repo, "rev-parse", "banger/wsa") == wsaHead {
			t.Fatal("--force did not move the branch")
		}
		patch := filepath.Join(t.TempDir(), "wsb.patch")
		must(t, "workspace", "export", "wsb", "--patch", patch)
		b, err := os.ReadFile(patch)
		if err != nil || strings.Count(string(b), "\nSubject: [PATCH ") != 2 {
			t.Fatalf("patch series: %v\n%s", err, b)
		}
		if wsHostSh(t, wsSnapshotScript, repo) != hostBefore {
			t.Fatal("export changed the host repository")
		}
	})

	t.Run("ShallowPushStaysSmall", func(t *testing.T) {
		long := filepath.Join(t.TempDir(), "long")
		wsGit(t, filepath.Dir(long), "init", "-q", long)
		for i := range 150 {
			data := make([]byte, 32<<10)
			rand.Read(data)
			if err := os.WriteFile(filepath.Join(long, "blob"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			wsGit(t, long, "add", "blob")
			wsGit(t, long, "commit", "-q", "-m", "c"+strconv.Itoa(i))
		}
		hostKiB, _ := strconv.Atoi(strings.Fields(wsHostSh(t, `du -sk "$1/.git"`, long))[0])
		start := time.Now()
		must(t, "workspace", "push", "wsb", long, "--guest-path", "long")
		took := time.Since(start)
		out := strings.Fields(wsGuestSh(t, "wsb", `cd ~/long && git rev-list --count HEAD && du -sk .git | cut -f1`))
		commits, _ := strconv.Atoi(out[0])
		guestKiB, _ := strconv.Atoi(out[1])
		t.Logf("long history: host .git %d KiB; guest .git %d KiB after a depth-1 push in %s", hostKiB, guestKiB, took.Round(10*time.Millisecond))
		if commits != 1 || guestKiB > 512 || guestKiB*8 > hostKiB {
			t.Fatalf("shallow push: %d commits, %d KiB in the guest (host %d KiB)", commits, guestKiB, hostKiB)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		guestWork := wsGuestSh(t, "wsb", `ls -A ~/work`)
		notRepo := t.TempDir()
		wsExpectExit(t, 2, "not a git repository", "workspace", "push", "wsb", notRepo)
		bare := filepath.Join(t.TempDir(), "bare.git")
		wsGit(t, filepath.Dir(bare), "init", "-q", "--bare", bare)
		wsExpectExit(t, 2, "bare git repository", "workspace", "push", "wsb", bare)

		merge := filepath.Join(t.TempDir(), "merge")
		wsGit(t, filepath.Dir(merge), "init", "-q", "-b", "main", merge)
		wsWriteFile(t, filepath.Join(merge, "f"), "base\n", 0o644)
		wsGit(t, merge, "add", "f")
		wsGit(t, merge, "commit", "-q", "-m", "base")
		wsGit(t, merge, "checkout", "-q", "-b", "other")
		wsWriteFile(t, filepath.Join(merge, "f"), "other\n", 0o644)
		wsGit(t, merge, "commit", "-q", "-am", "other")
		wsGit(t, merge, "checkout", "-q", "main")
		wsWriteFile(t, filepath.Join(merge, "f"), "main\n", 0o644)
		wsGit(t, merge, "commit", "-q", "-am", "main")
		if err := exec.Command("git", "-C", merge, "-c", "user.name=x", "-c", "user.email=x@x", "merge", "-q", "other").Run(); err == nil {
			t.Fatal("the merge did not conflict")
		}
		mergeBefore := wsHostSh(t, wsSnapshotScript, merge)
		wsExpectExit(t, 4, "middle of a merge", "workspace", "push", "wsb", merge)
		if wsHostSh(t, wsSnapshotScript, merge) != mergeBefore {
			t.Fatal("a refused push changed the repository")
		}
		if got := wsGuestSh(t, "wsb", `ls -A ~/work`); got != guestWork {
			t.Fatalf("refused pushes changed the guest's ~/work: %q -> %q", guestWork, got)
		}
		// Pushing onto an existing workspace is refused.
		wsExpectExit(t, 4, "already exists", "workspace", "push", "wsb", repo)

		// The guest loses the workspace.
		wsGuestSh(t, "wsa", `rm -rf "$1"`, guestPath)
		wsExpectExit(t, 3, "lost its workspace", "workspace", "export", "wsa", "--branch", "lost")
		if err := exec.Command("git", "-C", repo, "rev-parse", "--verify", "-q", "refs/heads/lost").Run(); err == nil {
			t.Fatal("a failed export created a branch")
		}
		if st := wsStatus(t, "wsa"); !strings.Contains(st.GuestError, "lost its workspace") {
			t.Fatalf("status of a lost workspace = %+v", st)
		}
		if wsHostSh(t, wsSnapshotScript, repo) != hostBefore {
			t.Fatal("bad input changed the host repository")
		}
	})
}
