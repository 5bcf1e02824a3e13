package vmm

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// HostTSCkHz returns the host's TSC frequency in kHz. Under QEMU's TCG the
// guest TSC ticks at the host's rate, and passing it as tsc_early_khz=
// lets the guest kernel skip the PIT calibration that sometimes hangs
// under emulation (HOST-NOTES).
//
// It reads "cpu MHz" of cpu0 from /proc/cpuinfo: on hosts with
// constant_tsc that is the TSC rate the kernel detected at boot.
func HostTSCkHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("read host TSC frequency: %w", err)
	}
	defer f.Close()
	return parseCPUInfoTSCkHz(f)
}

// parseCPUInfoTSCkHz returns "cpu MHz" of the first processor block in
// kHz.
func parseCPUInfoTSCkHz(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	seenProcessor := false
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "processor":
			if seenProcessor {
				// The first block had no "cpu MHz": do not take cpu1's.
				return 0, fmt.Errorf("no \"cpu MHz\" for cpu0 in /proc/cpuinfo")
			}
			seenProcessor = true
		case "cpu MHz":
			return mhzToKHz(strings.TrimSpace(value))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/cpuinfo: %w", err)
	}
	return 0, fmt.Errorf("no \"cpu MHz\" line in /proc/cpuinfo")
}

// ParseDmesgTSCkHz finds the kernel's "tsc: Detected N MHz processor" or
// "tsc: Refined TSC clocksource calibration: N MHz" line in dmesg output;
// the refined value wins when both are present.
func ParseDmesgTSCkHz(dmesg string) (int, error) {
	var detected, refined string
	for _, line := range strings.Split(dmesg, "\n") {
		if _, after, ok := strings.Cut(line, "tsc: Detected "); ok {
			detected, _, _ = strings.Cut(after, " MHz")
		}
		if _, after, ok := strings.Cut(line, "tsc: Refined TSC clocksource calibration: "); ok {
			refined, _, _ = strings.Cut(after, " MHz")
		}
	}
	switch {
	case refined != "":
		return mhzToKHz(refined)
	case detected != "":
		return mhzToKHz(detected)
	}
	return 0, fmt.Errorf("no \"tsc: Detected\" line in dmesg")
}

func mhzToKHz(s string) (int, error) {
	mhz, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || mhz <= 0 || math.IsInf(mhz, 0) || math.IsNaN(mhz) {
		return 0, fmt.Errorf("bad TSC frequency %q MHz", s)
	}
	return int(math.Round(mhz * 1000)), nil
}
