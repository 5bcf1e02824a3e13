package vmm

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostTSCkHz returns the host's TSC frequency in kHz. Under TCG a guest
// reads the host's TSC, so passing this as tsc_early_khz= lets the guest
// kernel skip PIT calibration, which sometimes hangs under emulation.
//
// Sources, most exact first: sysfs tsc_freq_khz (some kernels), the kernel
// log's "Refined TSC clocksource calibration" or "tsc: Detected ... MHz"
// lines, and finally /proc/cpuinfo's "cpu MHz" — the last only when the
// CPU has a constant TSC, because otherwise it is the current, scaled
// frequency rather than the TSC's.
func HostTSCkHz() (int, error) {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
		if khz, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && khz > 0 {
			return khz, nil
		}
	}
	if khz, ok := tscFromKernelLog(readKernelLog()); ok {
		return khz, nil
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if khz, ok := tscFromCPUInfo(b); ok {
			return khz, nil
		}
	}
	return 0, errors.New("host TSC frequency unknown: no tsc_freq_khz in sysfs, no TSC line in the kernel log, and /proc/cpuinfo shows no constant_tsc")
}

func readKernelLog() []byte {
	size, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || size <= 0 {
		return nil
	}
	buf := make([]byte, size)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

var (
	refinedTSC  = regexp.MustCompile(`Refined TSC clocksource calibration: ([0-9]+(?:\.[0-9]+)?) MHz`)
	detectedTSC = regexp.MustCompile(`tsc: Detected ([0-9]+(?:\.[0-9]+)?) MHz`)
)

func tscFromKernelLog(log []byte) (int, bool) {
	for _, re := range []*regexp.Regexp{refinedTSC, detectedTSC} {
		if m := re.FindSubmatch(log); m != nil {
			return mhzToKHz(string(m[1]))
		}
	}
	return 0, false
}

func tscFromCPUInfo(cpuinfo []byte) (int, bool) {
	var mhz string
	constant := false
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" && mhz != "" {
			break // the first processor's block is enough
		}
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			if mhz == "" {
				mhz = strings.TrimSpace(v)
			}
		case "flags":
			for _, f := range strings.Fields(v) {
				if f == "constant_tsc" {
					constant = true
				}
			}
		}
	}
	return finishCPUInfo(mhz, constant)
}

func finishCPUInfo(mhz string, constant bool) (int, bool) {
	if mhz == "" || !constant {
		return 0, false
	}
	return mhzToKHz(mhz)
}

// mhzToKHz converts "2299.998" to 2299998 without float rounding.
func mhzToKHz(s string) (int, bool) {
	whole, frac, _ := strings.Cut(s, ".")
	frac = (frac + "000")[:3]
	w, err1 := strconv.Atoi(whole)
	f, err2 := strconv.Atoi(frac)
	if err1 != nil || err2 != nil || w <= 0 {
		return 0, false
	}
	return w*1000 + f, true
}
