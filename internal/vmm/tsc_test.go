package vmm

import (
	"fmt"
	"github.com/banger-dev/banger/internal/testenv"
	"testing"
)

func TestHostTSCParsing(t *testing.T) {
	if khz, ok := tscFromKernelLog([]byte("[0.000064] tsc: Detected 2299.998 MHz processor\n")); !ok || khz != 2299998 {
		t.Errorf("detected line: %d %v", khz, ok)
	}
	log := "tsc: Detected 2300.000 MHz processor\n[1.5] tsc: Refined TSC clocksource calibration: 2299.91 MHz\n"
	if khz, ok := tscFromKernelLog([]byte(log)); !ok || khz != 2299910 {
		t.Errorf("refined line should win: %d %v", khz, ok)
	}
	cpuinfo := "processor\t: 0\ncpu MHz\t\t: 2299.998\nflags\t\t: fpu tsc constant_tsc\n\nprocessor\t: 1\ncpu MHz\t\t: 1200.000\n"
	if khz, ok := tscFromCPUInfo([]byte(cpuinfo)); !ok || khz != 2299998 {
		t.Errorf("cpuinfo: %d %v", khz, ok)
	}
	if _, ok := tscFromCPUInfo([]byte("cpu MHz\t: 800.000\nflags\t: fpu tsc\n")); ok {
		t.Error("cpuinfo without constant_tsc must not be trusted")
	}
	if khz, err := HostTSCkHz(); err == nil && (khz < 100_000 || khz > 10_000_000) {
		t.Errorf("HostTSCkHz() = %d kHz, not a plausible CPU clock", khz)
	}
}

func TestHostTSCkHzOnThisHost(t *testing.T) {
	khz, err := HostTSCkHz()
	testenv.Require(t, err == nil, fmt.Sprintf("a TSC frequency from sysfs, the kernel log or /proc/cpuinfo (%v)", err))
	// Any real x86 TSC runs between 100 MHz and 10 GHz.
	if khz < 100_000 || khz > 10_000_000 {
		t.Fatalf("HostTSCkHz = %d kHz, implausible", khz)
	}
}
