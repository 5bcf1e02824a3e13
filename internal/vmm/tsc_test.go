package vmm

import (
	"fmt"
	"strings"
	"testing"
)

const sampleCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU
cpu MHz		: 2299.998
cache size	: 36608 KB

processor	: 1
vendor_id	: GenuineIntel
cpu MHz		: 1200.000
`

func TestParseCPUInfoTSCkHz(t *testing.T) {
	got, err := parseCPUInfoTSCkHz(strings.NewReader(sampleCPUInfo))
	if err != nil || got != 2299998 {
		t.Fatalf("got %d, %v; want 2299998", got, err)
	}
	// cpu0 without "cpu MHz" must not borrow cpu1's value.
	noCPU0 := "processor\t: 0\nflags\t: tsc\n\nprocessor\t: 1\ncpu MHz\t\t: 1200.000\n"
	if got, err := parseCPUInfoTSCkHz(strings.NewReader(noCPU0)); err == nil {
		t.Fatalf("got %d without cpu0 MHz, want an error", got)
	}
	if _, err := parseCPUInfoTSCkHz(strings.NewReader("cpu MHz : fast\n")); err == nil {
		t.Fatal("non-numeric MHz accepted")
	}
	if _, err := parseCPUInfoTSCkHz(strings.NewReader("")); err == nil {
		t.Fatal("empty cpuinfo accepted")
	}
}

func TestParseDmesgTSCkHz(t *testing.T) {
	detected := "[    0.000064] tsc: Detected 2299.998 MHz processor\n[    0.1] other\n"
	if got, err := ParseDmesgTSCkHz(detected); err != nil || got != 2299998 {
		t.Fatalf("detected: got %d, %v", got, err)
	}
	refined := detected + "[    1.5] tsc: Refined TSC clocksource calibration: 2300.012 MHz\n"
	if got, err := ParseDmesgTSCkHz(refined); err != nil || got != 2300012 {
		t.Fatalf("refined: got %d, %v", got, err)
	}
	if _, err := ParseDmesgTSCkHz("[0.0] Linux version 6.1\n"); err == nil {
		t.Fatal("dmesg without tsc line accepted")
	}
}

func TestHostTSCkHzOnThisHost(t *testing.T) {
	khz, err := HostTSCkHz()
	requireOrSkipVMM(t, err == nil, fmt.Sprintf("a \"cpu MHz\" line in this host's /proc/cpuinfo (%v)", err))
	// Any real x86 TSC runs between 100 MHz and 10 GHz.
	if khz < 100_000 || khz > 10_000_000 {
		t.Fatalf("HostTSCkHz = %d kHz, implausible", khz)
	}
}
