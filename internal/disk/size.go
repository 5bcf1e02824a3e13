package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/banger-dev/banger/internal/api"
)

var sizePattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)$`)

// sizeUnits are 1024-based, as in qemu-img and truncate: K and KiB mean
// the same. Decimal KB/MB/GB are refused as ambiguous.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tib": 1 << 40,
}

// ParseSize parses a positive size such as "512M", "10G", "1.5GiB" or
// "1048576" (bytes). Units are 1024-based and case-insensitive.
func ParseSize(s string) (int64, error) {
	m := sizePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		if strings.HasPrefix(strings.TrimSpace(s), "-") {
			return 0, api.Errorf(api.KindInvalidInput, "size %q is negative: give a positive size like 512M or 10G", s)
		}
		return 0, api.Errorf(api.KindInvalidInput, "size %q is not a size: give a number with an optional unit, like 512M, 10G or 1.5GiB", s)
	}
	unit := strings.ToLower(m[2])
	mult, ok := sizeUnits[unit]
	if !ok {
		switch unit {
		case "kb", "mb", "gb", "tb":
			return 0, api.Errorf(api.KindInvalidInput,
				"size %q: unit %q is ambiguous; use %s or %siB (1024-based)", s, m[2], strings.ToUpper(unit[:1]), strings.ToUpper(unit[:1]))
		}
		return 0, api.Errorf(api.KindInvalidInput, "size %q: unknown unit %q; use B, K, M, G, T (or KiB, MiB, GiB, TiB)", s, m[2])
	}
	num, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, api.Errorf(api.KindInvalidInput, "size %q is not a number", s)
	}
	num.Mul(num, new(big.Rat).SetInt64(mult))
	if !num.IsInt() {
		return 0, api.Errorf(api.KindInvalidInput, "size %q is not a whole number of bytes", s)
	}
	n := num.Num()
	if !n.IsInt64() {
		return 0, api.Errorf(api.KindInvalidInput, "size %q is too large", s)
	}
	if n.Sign() == 0 {
		return 0, api.Errorf(api.KindInvalidInput, "size %q is zero: give a positive size", s)
	}
	return n.Int64(), nil
}

// formatBytes renders n for messages: exact binary units when they fit.
func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fMiB (%d bytes)", float64(n)/(1<<20), n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Usage returns the bytes actually allocated on the host (st_blocks * 512)
// by the given files, and by every file under the given directories; a
// sparse disk counts only what was written. Missing paths count as zero,
// and a file reachable twice (hard links, overlapping paths) counts once.
func Usage(paths ...string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	add := func(info fs.FileInfo) {
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return
		}
		key := inode{uint64(st.Dev), st.Ino}
		if seen[key] {
			return
		}
		seen[key] = true
		total += st.Blocks * 512
	}
	for _, p := range paths {
		info, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("disk usage of %s: %w", p, err)
		}
		if !info.IsDir() {
			add(info)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil // removed while we walked
				}
				return err
			}
			info, err := d.Info()
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			add(info)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("disk usage of %s: %w", p, err)
		}
	}
	return total, nil
}
