package disk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"4096", 4096},
		{"100B", 100},
		{"512M", 512 << 20},
		{"512m", 512 << 20},
		{"512MiB", 512 << 20},
		{"10G", 10 << 30},
		{"10g", 10 << 30},
		{"1.5GiB", 3 << 29},
		{"1.5G", 3 << 29},
		{"0.5K", 512},
		{".5M", 512 << 10},
		{"2T", 2 << 40},
		{"64KiB", 64 << 10},
		{" 8 G ", 8 << 30},
		{"7TiB", 7 << 40},
	}
	for _, tt := range good {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	bad := []struct{ in, msg string }{
		{"", "not a size"},
		{"G", "not a size"},
		{"abc", "not a size"},
		{"-1G", "negative"},
		{"-5", "negative"},
		{"0", "zero"},
		{"0G", "zero"},
		{"0.0M", "zero"},
		{"10GB", "ambiguous"},
		{"10mb", "ambiguous"},
		{"3X", "unknown unit"},
		{"3 PiB", "unknown unit"},
		{"1.5", "whole number of bytes"},
		{"1.1K", "whole number of bytes"},
		{"1e3", "not a size"},
		{"1,5G", "not a size"},
		{"10G10", "not a size"},
		{"0x10", "not a size"},
		{"9999999T", "too large"},
		{"9223372036854775808", "too large"},
	}
	for _, tt := range bad {
		got, err := ParseSize(tt.in)
		if !api.IsKind(err, api.KindInvalidInput) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseSize(%q) = %d, %v; want invalid_input error containing %q", tt.in, got, err, tt.msg)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{
		10 << 30: "10GiB", 512 << 20: "512MiB", 3 << 29: "1536MiB", 4096: "4KiB",
		100: "100 bytes", 1<<20 + 1: "1.0MiB (1048577 bytes)",
	} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	sparse := filepath.Join(dir, "sparse.img")
	sparseFile(t, sparse, 1<<30, map[int64][]byte{0: pattern(64<<10, 1), 512 << 20: pattern(64<<10, 2)})
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	dense := filepath.Join(sub, "dense")
	writeAt(t, dense, 0, pattern(1<<20, 3))
	if err := os.Link(dense, filepath.Join(sub, "hardlink")); err != nil {
		t.Fatal(err)
	}

	got, err := Usage(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if want := allocatedBytes(t, sparse); got != want || got < 128<<10 || got >= 1<<20 {
		t.Errorf("Usage(sparse) = %d, want st_blocks*512 = %d (between 128KiB and 1MiB)", got, want)
	}

	// A directory counts its files once, even when named twice or linked.
	got, err = Usage(dir, sparse, dense, filepath.Join(dir, "missing"))
	if err != nil {
		t.Fatal(err)
	}
	want := allocatedBytes(t, sparse) + allocatedBytes(t, dense) + allocatedBytes(t, dir) + allocatedBytes(t, sub)
	if got != want {
		t.Errorf("Usage(dir...) = %d, want %d", got, want)
	}

	if got, err := Usage(filepath.Join(dir, "missing")); err != nil || got != 0 {
		t.Errorf("Usage(missing) = %d, %v; want 0", got, err)
	}
}
