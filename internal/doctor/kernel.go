package doctor

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strings"
)

// kernelConfig is the running kernel's build configuration, when the host
// exposes it. A nil map means "unknown".
type kernelConfig struct {
	values map[string]string // "CONFIG_BRIDGE" -> "y", "m", or "n" for "is not set"
	source string
}

// maxKernelConfig bounds the decompressed size of /proc/config.gz; real
// configs are a few hundred KiB.
const maxKernelConfig = 8 << 20

// readKernelConfig tries /proc/config.gz, then /boot/config-<release>.
func readKernelConfig(h Host) kernelConfig {
	if data, err := h.ReadFile("/proc/config.gz"); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			plain, err := io.ReadAll(io.LimitReader(zr, maxKernelConfig))
			if err == nil {
				return kernelConfig{values: parseKernelConfig(plain), source: "/proc/config.gz"}
			}
		}
	}
	release, err := h.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return kernelConfig{}
	}
	path := "/boot/config-" + strings.TrimSpace(string(release))
	data, err := h.ReadFile(path)
	if err != nil {
		return kernelConfig{}
	}
	return kernelConfig{values: parseKernelConfig(data), source: path}
}

func parseKernelConfig(data []byte) map[string]string {
	values := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			if key, ok := strings.CutSuffix(rest, " is not set"); ok && strings.HasPrefix(key, "CONFIG_") {
				values[key] = "n"
			}
			continue
		}
		if key, val, ok := strings.Cut(line, "="); ok && strings.HasPrefix(key, "CONFIG_") {
			values[key] = strings.Trim(val, `"`)
		}
	}
	return values
}

// support is what is known about one kernel feature.
type support int

const (
	supportUnknown support = iota
	supportPresent
	supportAbsent
)

// feature answers whether the kernel has a feature that is either a
// loadable module or built in: loaded modules show up in /sys/module (and
// /proc/modules); built-in code only in the kernel config.
func (e *env) feature(module, configKey string) (support, string) {
	if _, err := e.host.Stat("/sys/module/" + module); err == nil {
		return supportPresent, fmt.Sprintf("loaded (/sys/module/%s)", module)
	}
	if data, err := e.host.ReadFile("/proc/modules"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, _, _ := strings.Cut(line, " "); name == module {
				return supportPresent, fmt.Sprintf("module %s loaded", module)
			}
		}
	}
	cfg := e.kernelConfig()
	if cfg.values == nil {
		return supportUnknown, "neither loaded nor listed in a readable kernel config (/proc/config.gz, /boot/config-*)"
	}
	switch cfg.values[configKey] {
	case "y":
		return supportPresent, fmt.Sprintf("built into the kernel (%s=y in %s)", configKey, cfg.source)
	case "m":
		return supportPresent, fmt.Sprintf("available as a module, loaded on first use (%s=m in %s)", configKey, cfg.source)
	default:
		return supportAbsent, fmt.Sprintf("not in this kernel (%s is not set in %s)", configKey, cfg.source)
	}
}
