package builder

import (
	"context"
	"errors"
	"github.com/banger-dev/banger/internal/testenv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
)

// A build killed mid-debootstrap leaves /proc and /sys mounted in its
// root; removing the build directory must unmount them first and never
// recurse into them.
func TestRemoveBuildDirUnmountsFirst(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "mounting a tmpfs needs root")
	dir := t.TempDir()
	build := filepath.Join(dir, ".tmp-key-1")
	inner := filepath.Join(build, "root", "proc")
	must(t, os.MkdirAll(inner, 0o755))
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		testenv.Require(t, false, "cannot mount tmpfs here: "+err.Error())
	}
	defer unix.Unmount(inner, unix.MNT_DETACH) // only if the code under test failed
	sentinel := filepath.Join(inner, "must-not-be-deleted-through-the-mount")
	must(t, os.WriteFile(sentinel, []byte("x"), 0o644))
	mounts, err := mountsUnder(build)
	must(t, err)
	if len(mounts) != 1 || mounts[0] != inner {
		t.Fatalf("mountsUnder = %v, want [%s]", mounts, inner)
	}
	must(t, removeBuildDir(build))
	if _, err := os.Stat(build); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("build directory still exists: %v", err)
	}
}

func TestBuildRejectsBadRecipe(t *testing.T) {
	r := DefaultRecipe()
	r.User = "Bad User"
	_, err := Build(context.Background(), r, t.TempDir(), nil)
	if !api.IsKind(err, api.KindInvalidInput) {
		t.Fatalf("got %v, want invalid_input", err)
	}
}

// TestBuildCancelCleansUp cancels a real build during debootstrap (gated by
// BANGER_INTEGRATION=1: it starts a real debootstrap) and checks that no
// child process, mount or temporary directory survives.
func TestBuildCancelCleansUp(t *testing.T) {
	integrationCache(t)
	cache := t.TempDir()
	r := DefaultRecipe()
	r.Name = "cancel-test"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 1)
	go func() {
		<-started
		time.Sleep(3 * time.Second) // long enough for debootstrap to fork and mount
		cancel()
	}()
	_, err := Build(ctx, r, cache, func(stage string, _ float64, line string) {
		if stage == string(StageDebootstrap) && line != "" {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	})
	if !api.IsKind(err, api.KindCancelled) {
		t.Fatalf("got %v, want a cancelled error", err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		t.Errorf("left behind in the cache: %s", e.Name())
	}
	if mounts, _ := mountsUnder(cache); len(mounts) > 0 {
		t.Errorf("left mounted: %v", mounts)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if strings.Contains(string(cmdline), cache) {
			t.Errorf("process still running: %s", strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}
