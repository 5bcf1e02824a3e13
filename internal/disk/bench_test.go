package disk

import (
	"context"
	"fmt"
	"github.com/banger-dev/banger/internal/testenv"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCreateOverlay times CreateOverlay per strategy on a sparse base
// holding some data. BANGER_BENCH_BASE_SIZE sets the base size (default
// 10G); the data scales with it (64 MiB per 10 GiB, in 1 MiB pieces spread
// evenly), so an O(data) strategy slows down with size and an O(1) one does
// not. BANGER_BENCH_REFLINK_DIR names a reflink-capable directory (bench/
// overlay.sh mounts one); otherwise reflink runs only if the temp dir can.
func BenchmarkCreateOverlay(b *testing.B) {
	size := int64(10 << 30)
	if s := os.Getenv("BANGER_BENCH_BASE_SIZE"); s != "" {
		var err error
		if size, err = ParseSize(s); err != nil {
			b.Fatal(err)
		}
	}
	host := ProbeHost(b.TempDir())
	for _, s := range Strategies {
		b.Run(string(s), func(b *testing.B) {
			dir := b.TempDir()
			switch s {
			case StrategyDMSnapshot:
				testenv.Require(b, host.HasDeviceMapper, host.NoDeviceMapper)
			case StrategyQcow2:
				testenv.Require(b, host.HasQemuImg, host.NoQemuImg)
			case StrategyReflink:
				if d := os.Getenv("BANGER_BENCH_REFLINK_DIR"); d != "" {
					var err error
					if dir, err = os.MkdirTemp(d, "bench-"); err != nil {
						b.Fatal(err)
					}
					defer os.RemoveAll(dir)
				}
				err := ReflinkSupported(dir)
				testenv.Require(b, err == nil, fmt.Sprint("reflink-capable directory: ", err))
			}
			base := filepath.Join(dir, "base.ext4")
			writeBenchBase(b, base, size)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				vmDir := filepath.Join(dir, fmt.Sprintf("vm%d", i))
				if err := os.Mkdir(vmDir, 0o700); err != nil {
					b.Fatal(err)
				}
				o, err := CreateOverlay(ctx, s, base, vmDir, fmt.Sprintf("bench%d", i))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := o.Remove(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(size)/(1<<30), "base-GiB")
		})
	}
}

// writeBenchBase makes a sparse file of size with size/160 bytes of data
// written in 1 MiB pieces at evenly spread offsets.
func writeBenchBase(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const piece = 1 << 20
	pieces := max(size/160/piece, 1)
	buf := pattern(piece, 7)
	for i := int64(0); i < pieces; i++ {
		off := i * (size / pieces) / piece * piece
		buf[0] = byte(i) // distinct pieces
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}
