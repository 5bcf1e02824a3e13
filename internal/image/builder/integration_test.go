package builder

import (
	"context"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"testing"
	"time"
)

// integrationCache returns the image cache for the gated integration tests
// (BANGER_INTEGRATION=1): $BANGER_IMAGE_CACHE, default
// /var/cache/banger-test/images, outside the repository so reruns reuse it.
func integrationCache(t *testing.T) string {
	t.Helper()
	if os.Getenv("BANGER_INTEGRATION") != "1" {
		t.Skip("integration test: set BANGER_INTEGRATION=1 (needs root, debootstrap and a Debian mirror; builds a real image)")
	}
	testenv.Require(t, os.Geteuid() == 0, "building an image needs root")
	for _, tool := range []string{"debootstrap", "apt-get", "dpkg-deb", "mkfs.ext4"} {
		_, err := lookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
	if dir := os.Getenv("BANGER_IMAGE_CACHE"); dir != "" {
		return dir
	}
	return "/var/cache/banger-test/images"
}

// buildDefault builds (or reuses) the default image for integration tests.
func buildDefault(t *testing.T) Artifacts {
	t.Helper()
	cache := integrationCache(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	last := ""
	lastFraction := 0.0
	a, err := Build(ctx, DefaultRecipe(), cache, func(stage string, fraction float64, line string) {
		if fraction < lastFraction {
			t.Errorf("progress went backwards: %.3f after %.3f", fraction, lastFraction)
		}
		lastFraction = fraction
		if stage != last {
			t.Logf("%6.1fs %3.0f%% stage %s", time.Since(start).Seconds(), fraction*100, stage)
			last = stage
		}
	})
	if err != nil {
		t.Fatalf("build default image: %v", err)
	}
	t.Logf("image %s in %s (%.0fs)", a.Key, a.Dir, time.Since(start).Seconds())
	return a
}

func TestBuildDefault(t *testing.T) {
	a := buildDefault(t)
	got, ok := Cached(DefaultRecipe(), a.Dir[:len(a.Dir)-len(a.Key)-1])
	if !ok || got != a {
		t.Fatalf("Cached after Build = %+v, %v; want %+v", got, ok, a)
	}
	for _, f := range []string{a.Kernel, a.KernelRaw, a.Initrd, a.RootFS, a.WorkSeed} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-60s %5d MiB", f, st.Size()>>20)
	}
	raw, err := os.ReadFile(a.KernelRaw)
	if err != nil || !isELF(raw) {
		t.Fatalf("vmlinux is not ELF: %v", err)
	}
}
